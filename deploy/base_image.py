"""Make the base image the generated Dockerfile names (python:3.11-slim) available locally.

With a registry, it is pulled as usual. Without one, a stand-in is built from Debian packages
with debootstrap and imported under the exact name the Dockerfile expects, and every build
says so loudly. When the host trusts extra CA certificates (a TLS-inspecting proxy), a small
layer adds them to the base, so pip and uv inside the build can reach PyPI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from container_engine import WORK_DIR, ContainerError, Engine, say, shout

STANDIN_LABEL = "kitchenware.standin-base"  # value: why the stand-in was built
CA_LABEL = "kitchenware.extra-ca-sha256"  # value: digest of the CA files baked in
SOURCE_PREFIX = "localhost/kitchenware-base-source"  # base as pulled/built, before CA layer
STANDIN_FOR = "docker.io/library/python:3.11-slim"  # what debootstrap bookworm reproduces
STANDIN_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
EXTRA_CA_ENV = "KITCHENWARE_EXTRA_CA_CERTS"  # a PEM file or a folder of .crt files
HOST_CA_DIRS = (Path("/usr/local/share/ca-certificates"), Path("/etc/pki/ca-trust/source/anchors"))
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PULL_TIMEOUT_S = 120.0


def debian_mirror() -> str:
    """The Debian mirror apt uses on this host (deb822 or one-line sources), else deb.debian.org."""
    if os.environ.get("KITCHENWARE_DEBIAN_MIRROR"):
        return os.environ["KITCHENWARE_DEBIAN_MIRROR"]
    sources = [
        *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
        Path("/etc/apt/sources.list"),
    ]
    for path in sources:
        if path.is_file():
            for word in path.read_text().split():
                if "://" in word and word.rstrip("/").endswith("/debian"):
                    return word.rstrip("/")
    return "http://deb.debian.org/debian"


def extra_ca_files() -> list[Path]:
    """CA certificates the host trusts beyond the distribution's bundle."""
    named = os.environ.get(EXTRA_CA_ENV, "").strip()
    roots = [Path(named)] if named else list(HOST_CA_DIRS)
    found: list[Path] = []
    for root in roots:
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found.extend(p for p in sorted(root.rglob("*")) if p.suffix in {".crt", ".pem"})
        elif named:
            raise ContainerError(f"{EXTRA_CA_ENV}={named} is neither a file nor a folder.")
    return found


def ca_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def source_tag(base: str) -> str:
    return f"{SOURCE_PREFIX}:{base.rsplit('/', 1)[-1].replace(':', '-')}"


def unmount_below(root: Path) -> None:
    """Unmount whatever an interrupted debootstrap left mounted inside `root`, deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    inside = [m for m in mounts if m == str(root) or m.startswith(f"{root}/")]
    for mount_point in sorted(inside, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], check=False)


def build_standin(engine: Engine, base: str, reason: str) -> None:
    """debootstrap Debian bookworm with Python 3.11 and import it as `base`."""
    if shutil.which("debootstrap") is None:
        raise ContainerError(f"{reason}, and debootstrap is not installed to build a stand-in.")
    mirror = debian_mirror()
    say(f"building a stand-in for {base} with debootstrap from {mirror} (about 1-2 min)")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR, prefix="standin-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={STANDIN_PACKAGES}",
                 "bookworm", str(rootfs), mirror],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            unmount_below(rootfs)  # never let the scratch cleanup walk into /proc or /dev
        # Match python:3.11-slim: pip may install system-wide, `python` exists, caches empty.
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        (rootfs / "usr/bin/python").symlink_to("python3")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
            (rootfs / cache / "partial").mkdir(parents=True)
        (rootfs / "etc/apt/sources.list").write_text(f"deb {mirror} bookworm main\n")
        # The engine keeps backslashes of escaped quotes literally: swap quotes out first.
        label_value = json.dumps(reason[:400].replace('"', "'"))
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
            f"LABEL {STANDIN_LABEL}={label_value}",
        ]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        change_args = [arg for change in changes for arg in ("--change", change)]
        engine.run("import", *change_args, "-", source_tag(base), stdin=tar.stdout)
        if tar.wait() != 0:
            raise ContainerError(f"tar of the stand-in rootfs {rootfs} failed.")


def add_ca_layer(engine: Engine, source: str, base: str, files: list[Path], digest: str) -> None:
    """Build `base` as `source` plus the host's extra CA certificates, trusted system-wide."""
    say(f"adding {len(files)} extra CA certificate(s) trusted by this host to {base}")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK_DIR, prefix="ca-layer-") as scratch:
        context = Path(scratch)
        (context / "certs").mkdir()
        for index, path in enumerate(files):
            shutil.copyfile(path, context / "certs" / f"host-{index:02d}-{path.stem}.crt")
        (context / "Containerfile").write_text(
            f"FROM {source}\n"
            "USER root\n"
            "COPY certs/ /usr/local/share/ca-certificates/kitchenware-host/\n"
            "RUN update-ca-certificates\n"
            # pip (certifi), uv (webpki roots) and requests ignore the system store by default.
            f"ENV SSL_CERT_FILE={CA_BUNDLE} PIP_CERT={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE}"
            " UV_NATIVE_TLS=true\n"
            f"LABEL {CA_LABEL}={digest}\n"
        )
        engine.build(context, base)


def ensure_base_image(engine: Engine, base: str) -> bool:
    """Make `base` available to the build; returns True when it is a local stand-in."""
    ca_files = extra_ca_files()
    wanted_ca = ca_digest(ca_files) if ca_files else ""
    source = source_tag(base)  # the base before any CA layer, kept to re-layer from
    refreshed = False
    if not engine.image_exists(source):
        if engine.image_exists(base) and CA_LABEL not in engine.image_labels(base):
            engine.tag(base, source)  # a pristine base the user already has: no pull
        else:
            reason = engine.pull(base, PULL_TIMEOUT_S)
            if reason is None:
                engine.tag(base, source)
            elif base != STANDIN_FOR:
                raise ContainerError(f"{reason}; the offline stand-in only replaces {STANDIN_FOR}.")
            else:
                build_standin(engine, base, reason)
        refreshed = True
    current_ca = engine.image_labels(base).get(CA_LABEL, "") if engine.image_exists(base) else None
    if refreshed or current_ca != wanted_ca:
        if ca_files:
            add_ca_layer(engine, source, base, ca_files, wanted_ca)
        else:
            engine.tag(source, base)
    standin_reason = engine.image_labels(base).get(STANDIN_LABEL)
    if standin_reason:
        shout([
            f"STAND-IN BASE IMAGE: {base} was NOT pulled from a registry.",
            f"Why: {standin_reason.rstrip('.')}.",
            "It is Debian bookworm + python3.11 built locally with debootstrap; the image",
            "works the same, but it is not the official python image. With a registry,",
            f"run `{engine.name} rmi {base} {source}` and build again to use the real one.",
        ])  # fmt: skip
        return True
    return False

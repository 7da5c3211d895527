"""Smoke-test the built image the way Kubernetes runs it, then export it as an OCI archive.

The container runs with a read-only root filesystem and a tmpfs at /tmp (the Deployment's
readOnlyRootFilesystem + emptyDir), no volume from the host, published on 127.0.0.1 only.
Any failed step prints the container's logs before the error.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import yaml

from container_engine import DEPLOY_DIR, WORK_DIR, ContainerError, Engine, say

READY_TIMEOUT_S = 300.0
LOAD_REQUESTS = 96
LOAD_CONCURRENCY = 32  # the service's max_batch_size: the batcher's fullest batch
TMPFS = "/tmp:rw,nosuid,nodev,size=512m"  # matches the Deployment's /tmp emptyDir sizeLimit
DEPLOYMENT = DEPLOY_DIR / "kubernetes" / "deployment.yaml"
MEBIBYTE = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample_images(directory: Path) -> tuple[Path, Path]:
    """A synthetic cup photo (JPEG) and the same file cut in half (a corrupt upload)."""
    from kitchenware.demo_data import render_image

    buffer = io.BytesIO()
    render_image("cup", np.random.default_rng(0)).save(buffer, format="JPEG", quality=90)
    photo, corrupt = directory / "cup.jpg", directory / "corrupt.jpg"
    photo.write_bytes(buffer.getvalue())
    corrupt.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return photo, corrupt


def curl_classify(port: int, image: Path) -> tuple[int, dict[str, object]]:
    """The README's request: curl -F image=@FILE http://127.0.0.1:PORT/classify."""
    url = f"http://127.0.0.1:{port}/classify"
    done = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-F", f"image=@{image}", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ContainerError(f"curl to {url} failed: {done.stderr.strip()}")
    body, _, status = done.stdout.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except json.JSONDecodeError as exc:
        raise ContainerError(f"{url} answered {status} with a non-JSON body: {body[:300]}") from exc


def memory_limit_mib() -> int:
    """The Deployment's container memory limit, in MiB."""
    for document in yaml.safe_load_all(DEPLOYMENT.read_text()):
        if document and document.get("kind") == "Deployment":
            limit = document["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            value = str(limit["memory"])
            units = {"Mi": 1, "Gi": 1024}
            return int(float(value[:-2]) * units[value[-2:]])
    raise ContainerError(f"No Deployment with a memory limit in {DEPLOYMENT}.")


class RunningContainer:
    """One detached container of the image, removed by `remove()` whatever happened."""

    def __init__(self, engine: Engine, image: str) -> None:
        self.engine, self.image = engine, image
        self.name = f"kitchenware-smoke-{uuid.uuid4().hex[:8]}"
        self.port = free_port()

    def start(self) -> None:
        self.engine.run(
            "run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:3000",
            "--read-only", "--tmpfs", TMPFS, self.image,
        )  # fmt: skip

    def running(self) -> bool:
        shown = self.engine.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return shown.stdout.strip() == "true"

    def exec(self, *command: str) -> str:
        return self.engine.run("exec", self.name, *command).stdout

    def print_logs(self) -> None:
        logs = self.engine.run("logs", self.name, check=False)
        print(f"----- logs of container {self.name} -----\n{logs.stdout}{logs.stderr}-----")

    def remove(self) -> None:
        self.engine.run("stop", "-t", "10", self.name, check=False, timeout=60)
        self.engine.run("rm", "-f", self.name, check=False, timeout=60)


def wait_ready(container: RunningContainer, started: float) -> float:
    """Seconds from `run` until /readyz answers 200; fails if the container exits first."""
    url = f"http://127.0.0.1:{container.port}/readyz"
    while time.monotonic() - started < READY_TIMEOUT_S:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if not container.running():
            raise ContainerError(f"The container exited before {url} answered 200.")
        time.sleep(0.5)
    raise ContainerError(f"{url} did not answer 200 within {READY_TIMEOUT_S:.0f} s.")


def process_table(container: RunningContainer) -> list[dict[str, str]]:
    """Name, Uid, VmRSS and VmHWM (peak RSS) of every process in the container."""
    raw = container.exec("sh", "-c", "for f in /proc/[0-9]*/status; do cat $f; echo; done")
    table = []
    for block in raw.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        if "Uid" in fields:
            table.append({key: value.strip() for key, value in fields.items()})
    return table


def apply_load(port: int, photo: Path) -> float:
    """LOAD_REQUESTS /classify calls, LOAD_CONCURRENCY at a time; returns requests/s."""
    data = photo.read_bytes()
    url = f"http://127.0.0.1:{port}/classify"

    def one(_: int) -> int:
        files = {"image": ("cup.jpg", data, "image/jpeg")}
        return httpx.post(url, files=files, timeout=300).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(LOAD_CONCURRENCY) as pool:
        statuses = list(pool.map(one, range(LOAD_REQUESTS)))
    elapsed = time.monotonic() - started
    failed = [status for status in statuses if status != 200]
    if failed:
        raise ContainerError(f"{len(failed)} of {LOAD_REQUESTS} requests under load failed.")
    return LOAD_REQUESTS / elapsed


def export_archive(engine: Engine, image: str) -> Path:
    """skopeo copy the image into deploy/.containers/ as an OCI archive (previous one replaced)."""
    if shutil.which("skopeo") is None:
        raise ContainerError("skopeo is not installed; it exports the image as an OCI archive.")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    tags = json.loads(engine.run("image", "inspect", "--format", "{{json .RepoTags}}", image).stdout)
    version = next((t.rsplit(":", 1)[1] for t in tags if not t.endswith(":latest")), "latest")
    for old in WORK_DIR.glob("kitchenware-classifier-*.oci.tar"):
        old.unlink()
    archive = WORK_DIR / f"kitchenware-classifier-{version}.oci.tar"
    transport = "containers-storage" if engine.name == "podman" else "docker-daemon"
    source = f"{transport}:{image if '/' in image or engine.name != 'podman' else 'localhost/' + image}"
    subprocess.run(
        ["skopeo", "copy", "--quiet", source, f"oci-archive:{archive}:kitchenware-classifier:{version}"],
        check=True, env=engine.full_env(),
    )  # fmt: skip
    return archive


def smoke_test(engine: Engine, image: str, export: bool = True) -> None:
    if not engine.image_exists(image):
        raise ContainerError(f"No image {image}: run `make container` first.")
    container = RunningContainer(engine, image)
    steps: list[tuple[str, Callable[[], str]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        photo, corrupt = sample_images(Path(scratch))
        started = time.monotonic()

        def classify() -> str:
            status, body = curl_classify(container.port, photo)
            probabilities = body.get("probabilities")
            if status != 200 or not isinstance(probabilities, dict) or body.get("label") not in probabilities:
                raise ContainerError(f"/classify answered {status} {body}, expected a label.")
            return f"/classify -> {body['label']} ({float(body['confidence']):.2f}) from {body['model']}"

        def reject_corrupt() -> str:
            status, body = curl_classify(container.port, corrupt)
            if status != 400:
                raise ContainerError(f"A truncated JPEG got {status} {body}, expected 400.")
            return f"truncated JPEG -> 400 {json.dumps(body)[:120]}"

        def non_root() -> str:
            uids = {p["Name"]: p["Uid"].split()[0] for p in process_table(container)}
            root = sorted(name for name, uid in uids.items() if uid == "0")
            if root:
                raise ContainerError(f"Processes running as root in the container: {root}.")
            return f"every process runs as uid {sorted(set(uids.values()))} (non-root)"

        def model_inside() -> str:
            mounts = json.loads(container.engine.run("inspect", "--format", "{{json .Mounts}}",
                                                     container.name).stdout or "[]") or []
            if mounts:
                raise ContainerError(f"The container has mounts {mounts}; the model must be in the image.")
            found = container.exec("sh", "-c", "find \"$BENTO_PATH/models\" -name model.keras")
            if not found.strip():
                raise ContainerError("No model.keras under $BENTO_PATH/models inside the image.")
            return f"model inside the image, no host mounts: {found.split()[0]}"

        def memory_under_load() -> str:
            rate = apply_load(container.port, photo)
            table = process_table(container)
            peak = sum(int(p.get("VmHWM", "0 kB").split()[0]) for p in table) // 1024
            now = sum(int(p.get("VmRSS", "0 kB").split()[0]) for p in table) // 1024
            limit = memory_limit_mib()
            if peak > limit:
                raise ContainerError(f"Peak RSS {peak} MiB is over the Deployment's {limit} MiB limit.")
            return (f"{LOAD_REQUESTS} requests x{LOAD_CONCURRENCY}: {rate:.1f} req/s, RSS now {now} MiB,"
                    f" peak {peak} MiB (sum over processes; Deployment limit {limit} MiB)")

        steps = [("classify", classify), ("corrupt", reject_corrupt), ("user", non_root),
                 ("model", model_inside), ("memory", memory_under_load)]
        try:
            say(f"starting {image} read-only on 127.0.0.1:{container.port}")
            container.start()
            say(f"ok  cold start to /readyz: {wait_ready(container, started):.1f} s")
            for _, step in steps:
                say(f"ok  {step()}")
        except Exception:
            container.print_logs()
            raise
        finally:
            container.remove()
    if export:
        exported = time.monotonic()
        archive = export_archive(engine, image)
        say(f"ok  OCI archive {archive} ({archive.stat().st_size / 1e6:.0f} MB, "
            f"{time.monotonic() - exported:.0f} s)")
    say("container smoke test passed")

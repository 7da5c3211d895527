"""Build, smoke-test and export the service's OCI image. Usage: deploy/container.sh COMMAND.

  build   bento (build_bento_from_saved.py) -> `bentoml containerize` ->
          kitchenware-classifier:<bento version> and :latest
  test    run the image read-only on 127.0.0.1:<free port>, check /readyz, /classify, a
          corrupt upload, the user, the model inside, memory under load; export an OCI archive
  env     print the exports that point podman/skopeo at this project's image storage

Backend: KITCHENWARE_CONTAINER_BACKEND=docker|podman, else docker if its daemon answers,
else podman (with deploy/containers.conf and deploy/storage.conf).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from base_image import ensure_base_image
from container_engine import PROJECT_DIR, ContainerError, Engine, podman_env, say

IMAGE_NAME = "kitchenware-classifier"
TAG_PATTERN = re.compile(r"^[a-z0-9_.-]+:[a-z0-9_.-]+$")


def build_bento() -> str:
    """Run build_bento_from_saved.py (model store import + bentoml build); returns the tag."""
    script = PROJECT_DIR / "build_bento_from_saved.py"
    if not script.is_file():
        raise ContainerError(f"{script} is missing: it builds the bento the image is made from.")
    say(f"building the bento with {script.name}")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True
    )
    print(result.stdout, end="", flush=True)
    tags = [line.strip() for line in result.stdout.splitlines() if TAG_PATTERN.match(line.strip())]
    if result.returncode != 0 or not tags:
        raise ContainerError(f"{script.name} exited {result.returncode} without printing a tag.")
    return tags[-1]


def dockerfile_base(bento_tag: str) -> str:
    """The FROM image of the Dockerfile `bentoml containerize` generates for this bento."""
    import bentoml

    # chdir: see build(); the bento's dockerfile_template is read from a temp dir.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(tempfile.gettempdir()):
        dockerfile = Path(scratch) / "Dockerfile"
        bentoml.container.get_containerfile(
            bento_tag, output_path=str(dockerfile), enable_buildkit=False
        )
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if words[:1] == ["FROM"] and len(words) > 1:
                name = words[1]
                # Docker Hub short names: podman and docker both store them under docker.io.
                if "/" not in name:
                    name = f"docker.io/library/{name}"
                elif "." not in name.split("/")[0] and ":" not in name.split("/")[0]:
                    name = f"docker.io/{name}"
                return name
    raise ContainerError(f"The Dockerfile generated for {bento_tag} has no FROM line.")


def build(bento_tag: str | None) -> None:
    started = time.monotonic()
    engine = Engine.detect()
    say(f"backend: {engine.name}")
    tag = bento_tag or build_bento()
    version = tag.split(":", 1)[1]
    bento_done = time.monotonic()
    base = dockerfile_base(tag)
    standin = ensure_base_image(engine, base)
    base_done = time.monotonic()
    images = [f"{IMAGE_NAME}:{version}", f"{IMAGE_NAME}:latest"]
    say(f"bentoml containerize {tag} --backend {engine.name} -> {', '.join(images)}")
    tag_args = [arg for image in images for arg in ("-t", image)]
    containerize = [sys.executable, "-m", "bentoml", "containerize", tag, "--backend", engine.name]
    # cwd: BentoML (>= 1.4.32) refuses a dockerfile_template outside the working directory,
    # and containerize unpacks the bento into a temp dir; run it from the temp root.
    code = subprocess.run(
        [*containerize, *tag_args], env=engine.full_env(), cwd=tempfile.gettempdir()
    ).returncode
    if code != 0:
        raise ContainerError(f"bentoml containerize exited {code}; the build log is above.")
    finished = time.monotonic()
    size_mb = engine.image_size_bytes(images[0]) / 1e6
    say(
        f"built {images[0]} ({size_mb:.0f} MB) in {finished - started:.0f} s: bento "
        f"{bento_done - started:.0f} s, base image {base_done - bento_done:.0f} s, "
        f"containerize {finished - base_done:.0f} s"
        + (" [STAND-IN BASE, see the banner above]" if standin else "")
    )


def print_env() -> None:
    for key, value in podman_env().items():
        print(f"export {key}={value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deploy/container.sh", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="bento -> OCI image")
    build_parser.add_argument("--bento", help="containerize this bento tag instead of building one")
    test_parser = commands.add_parser("test", help="run and smoke-test the image")
    test_parser.add_argument("--image", default=f"{IMAGE_NAME}:latest")
    test_parser.add_argument("--no-export", action="store_true", help="skip the OCI archive")
    commands.add_parser("env", help="print exports for podman/skopeo storage")
    args = parser.parse_args(argv)
    os.chdir(PROJECT_DIR)
    try:
        if args.command == "build":
            build(args.bento)
        elif args.command == "test":
            from container_smoke import smoke_test

            smoke_test(Engine.detect(), args.image, export=not args.no_export)
        else:
            print_env()
    except (ContainerError, subprocess.CalledProcessError) as exc:
        print(f"[container] FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

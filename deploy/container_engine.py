"""The container engine the deploy scripts drive: docker when a daemon answers, else podman.

Podman and docker share the CLI verbs used here (image inspect, pull, import, build, tag,
run, exec, logs, rm), so one small class covers both. Podman always runs with the
project-owned containers.conf and storage.conf, so nothing under /etc/containers changes
and images live under /var/tmp/kitchenware-containers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEPLOY_DIR = Path(__file__).resolve().parent
PROJECT_DIR = DEPLOY_DIR.parent
WORK_DIR = DEPLOY_DIR / ".containers"  # gitignored: OCI archives, build scratch
BACKEND_ENV = "KITCHENWARE_CONTAINER_BACKEND"  # "docker" or "podman" overrides detection
BACKENDS = ("docker", "podman")


class ContainerError(RuntimeError):
    """A step of the container build or test failed; the message says which and why."""


def podman_env() -> dict[str, str]:
    """Environment variables that point podman, buildah and skopeo at the project's configs."""
    return {
        "CONTAINERS_CONF": str(DEPLOY_DIR / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(DEPLOY_DIR / "storage.conf"),
    }


def docker_daemon_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def podman_works() -> bool:
    """`podman info` succeeds with the project's configs (installed is not enough)."""
    if shutil.which("podman") is None:
        return False
    try:
        probe = subprocess.run(
            ["podman", "info"],
            env={**os.environ, **podman_env()},
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def no_engine_reason() -> str | None:
    """Why no container can be built here, or None when docker or podman works."""
    if docker_daemon_answers() or podman_works():
        return None
    docker = "no docker daemon answers" if shutil.which("docker") else "docker is not installed"
    podman = "podman info fails" if shutil.which("podman") else "podman is not installed"
    return f"no container engine works: {docker}, {podman} (deploy/system-packages.sh)"


def choose_backend() -> str:
    """The backend named in KITCHENWARE_CONTAINER_BACKEND, else docker if it answers, or podman."""
    named = os.environ.get(BACKEND_ENV, "").strip().lower()
    if named:
        if named not in BACKENDS:
            raise ContainerError(f"{BACKEND_ENV}={named!r} is not one of {', '.join(BACKENDS)}.")
        chosen = named
    else:
        chosen = "docker" if docker_daemon_answers() else "podman"
    if shutil.which(chosen) is None:
        raise ContainerError(f"The {chosen} command is not installed (backend {chosen!r}).")
    return chosen


@dataclass
class Engine:
    """One container CLI (docker or podman) plus the environment it must run with."""

    name: str
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def detect(cls) -> Engine:
        name = choose_backend()
        engine = cls(name, podman_env() if name == "podman" else {})
        if name == "podman":
            os.environ.update(engine.env)  # bentoml containerize and skopeo inherit these
        return engine

    def full_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(
        self,
        *args: str,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = None,
        stdin: Any = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `<engine> args...`; with check, a failure raises ContainerError with stderr."""
        command = [self.name, *args]
        result = subprocess.run(
            command,
            env=self.full_env(),
            capture_output=capture,
            text=True,
            timeout=timeout,
            stdin=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip()[-2000:] if capture else ""
            raise ContainerError(f"`{' '.join(command)}` exited {result.returncode}. {detail}")
        return result

    def image_exists(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0

    def image_labels(self, image: str) -> dict[str, str]:
        shown = self.run("image", "inspect", "--format", "{{json .Config.Labels}}", image)
        return json.loads(shown.stdout.strip() or "null") or {}

    def image_size_bytes(self, image: str) -> int:
        shown = self.run("image", "inspect", "--format", "{{.Size}}", image)
        return int(shown.stdout.strip())

    def tag(self, source: str, *targets: str) -> None:
        for target in targets:
            self.run("tag", source, target)

    def build(self, context: Path, tag: str, *extra: str) -> None:
        """Build context/Containerfile, streaming the build output."""
        self.run(
            "build",
            "-t",
            tag,
            "-f",
            str(context / "Containerfile"),
            *extra,
            str(context),
            capture=False,
        )

    def pull(self, image: str, timeout: float) -> str | None:
        """Pull `image`; returns None on success, else the reason it could not be pulled."""
        try:
            result = self.run("pull", image, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"pulling {image} did not finish within {timeout:.0f} s"
        if result.returncode == 0:
            return None
        last_line = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        return f"pulling {image} failed: {last_line}"


def say(message: str) -> None:
    print(f"[container] {message}", flush=True)


def shout(lines: list[str]) -> None:
    """A banner the user cannot miss in a long build log."""
    bar = "!" * 78
    print(bar, *(f"!! {line}" for line in lines), bar, sep="\n", file=sys.stderr, flush=True)

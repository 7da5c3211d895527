"""The Kubernetes Deployment, run for real with `podman kube play` from the built image.

deploy/kubernetes/deployment.yaml is played as written except for what a laptop needs:
a hostPort on 127.0.0.1 (podman 4.3 has no `kube play --publish`) and the local image
name. Then the README's curl answers, the probes pass, the security context holds
inside the container (uid, read-only root, no capabilities, no new privileges), and
`podman kube down` removes it. What podman does not honour is in deploy/kubernetes/README.md.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))
from container_engine import Engine, no_engine_reason  # noqa: E402

from kitchenware.localserver import free_port  # noqa: E402

DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
IMAGE = "kitchenware-classifier:latest"
READY_TIMEOUT_S = 300
pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]


def engine_or_skip() -> Engine:
    reason = no_engine_reason()
    if reason is None and Engine.detect().name != "podman":
        reason = "`kube play` needs podman"
    if reason:
        pytest.skip(reason)
    engine = Engine.detect()
    if not engine.image_exists(IMAGE):
        built = subprocess.run(
            [str(ROOT / "deploy" / "container.sh"), "build"], cwd=ROOT, timeout=2400, check=False
        )
        assert built.returncode == 0, "deploy/container.sh build failed"
    return engine


def for_podman(deployment: dict[str, Any], port: int) -> dict[str, Any]:
    """The Deployment with a loopback hostPort and the locally built image.

    podman 4.3 runs an httpGet probe as `curl -f URL` inside the container, and BentoML's
    slim image has no curl (measured: "unhealthy" every time). The liveness probe is
    played as the same GET with the image's own Python. podman 4.3 also joins an exec
    probe's arguments into one shell line (measured), hence one argument, shell-quoted.
    """
    played = copy.deepcopy(deployment)
    container = played["spec"]["template"]["spec"]["containers"][0]
    container["image"] = f"localhost/{IMAGE}"
    container["ports"][0].update(hostPort=port, hostIP="127.0.0.1")
    probe = container["livenessProbe"]
    path, target = probe.pop("httpGet")["path"], 3000
    url = f"http://127.0.0.1:{target}{path}"
    code = f"__import__('urllib.request').request.urlopen('{url}',timeout=4)"
    probe["exec"] = {"command": ["python", "-c", f'"{code}"']}
    return played


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, str, str]]:
    engine = engine_or_skip()
    port = free_port()
    manifest = tmp_path_factory.mktemp("kube") / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(for_podman(yaml.safe_load(DEPLOYMENT.read_text()), port)))
    started = engine.run("kube", "play", str(manifest), check=False, timeout=600)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        pods = engine.run("pod", "ps", "--format", "{{.Name}}").stdout.split()
        pod = next(name for name in pods if name.startswith("kitchenware-classifier"))
        container = f"{pod}-classifier"
        yield engine, f"http://127.0.0.1:{port}", container
    finally:
        down = engine.run("kube", "down", str(manifest), check=False, timeout=300)
        print("kube down:", down.returncode, down.stdout, down.stderr)
        leftover = engine.run("pod", "ps", "--format", "{{.Name}}", check=False).stdout
        assert "kitchenware-classifier" not in leftover, "podman kube down left the pod"


def wait_ready(url: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"/readyz not 200 within {READY_TIMEOUT_S} s")


def test_deployment_answers_the_readme_curl_and_passes_its_probes(
    played: tuple[Engine, str, str],
) -> None:
    engine, url, container = played
    print(f"ready after {wait_ready(url):.1f} s")
    curl = subprocess.run(
        ["curl", "-sS", "-F", f"image=@{ROOT / 'examples' / 'cup.jpg'}", f"{url}/classify"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert curl.returncode == 0 and '"label"' in curl.stdout, curl.stdout + curl.stderr
    assert httpx.get(f"{url}/livez", timeout=5).status_code == 200
    health = engine.run("healthcheck", "run", container, check=False, timeout=60)
    print("healthcheck:", health.returncode, health.stdout, health.stderr)
    assert health.returncode == 0, "podman's healthcheck from the livenessProbe failed"


def test_the_security_context_holds_inside_the_container(
    played: tuple[Engine, str, str],
) -> None:
    engine, url, container = played
    wait_ready(url)

    def inside(*command: str) -> subprocess.CompletedProcess[str]:
        return engine.run("exec", container, *command, check=False, timeout=60)

    assert inside("id", "-u").stdout.strip() == "1034"
    assert inside("touch", "/etc/kitchenware-probe").returncode != 0  # read-only root
    assert inside("touch", "/tmp/kitchenware-probe").returncode == 0  # the emptyDir
    status = inside("cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"].strip(), 16) == 0, fields["CapEff"]  # capabilities dropped
    assert fields["NoNewPrivs"].strip() == "1"  # allowPrivilegeEscalation: false

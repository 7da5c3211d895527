"""The container suite: `deploy/container.sh build` and `test`, exactly what `make container`
and `make container-test` run. It builds a real OCI image (podman here, docker where a
daemon answers), runs it read-only and smoke-tests it over HTTP.

Skip it locally with KITCHENWARE_SKIP_CONTAINER=1 (or -m "not container"); with CI=true it
always runs, and a missing container engine fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_SH = ROOT / "deploy" / "container.sh"
sys.path.insert(0, str(ROOT / "deploy"))

from container_engine import WORK_DIR, Engine, no_engine_reason  # noqa: E402


def skip_reason() -> str | None:
    if os.environ.get("CI", "").lower() == "true":
        return None  # the container is the main use case: CI always proves it
    if os.environ.get("KITCHENWARE_SKIP_CONTAINER") == "1":
        return "KITCHENWARE_SKIP_CONTAINER=1"
    return no_engine_reason()  # e.g. a docker client with no daemon and no podman


def container_sh(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(CONTAINER_SH), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(done.stdout, done.stderr, sep="\n")  # pytest shows it when a test fails
    return done


def test_an_unknown_backend_is_refused_in_one_sentence() -> None:
    done = subprocess.run(
        [str(CONTAINER_SH), "build"],
        env={**os.environ, "KITCHENWARE_CONTAINER_BACKEND": "lxc"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "KITCHENWARE_CONTAINER_BACKEND='lxc' is not one of docker, podman." in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.container
@pytest.mark.slow
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
@pytest.mark.timeout(3600)
class TestImage:
    """One build for the class, then the smoke test on it."""

    @pytest.fixture(scope="class")
    def build_output(self) -> str:
        """`deploy/container.sh build` into this test session's BentoML home."""
        done = container_sh("build", timeout=2400)
        assert done.returncode == 0, f"deploy/container.sh build failed:\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    def test_build_tags_the_image_with_the_bento_version_and_latest(
        self, build_output: str
    ) -> None:
        built = re.search(r"built (kitchenware-classifier):(\S+) \((\d+) MB\)", build_output)
        assert built, "the build did not report the image it built"
        engine = Engine.detect()
        versioned, latest = f"{built[1]}:{built[2]}", f"{built[1]}:latest"
        image_ids = {
            engine.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
            for image in (versioned, latest)
        }
        assert len(image_ids) == 1, "the version tag and :latest name different images"

    def test_a_stand_in_base_is_announced(self, build_output: str) -> None:
        engine = Engine.detect()
        labels = engine.image_labels("docker.io/library/python:3.11-slim")
        if "kitchenware.standin-base" not in labels:
            pytest.skip("the real python:3.11-slim was pulled; no stand-in to announce")
        assert "STAND-IN BASE IMAGE: docker.io/library/python:3.11-slim" in build_output

    def test_smoke_test_passes_and_exports_an_oci_archive(self, build_output: str) -> None:
        done = container_sh("test", timeout=1200)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"deploy/container.sh test failed:\n{output[-4000:]}"
        for expected in (
            "ok  cold start to /readyz",
            "ok  curl /classify -> ",
            "ok  truncated JPEG -> 400",
            "processes run as uid 1034",
            "the model is in the image",
            "peak <= ",
            "container smoke test passed",
        ):
            assert expected in output
        archives = list(WORK_DIR.glob("kitchenware-classifier-*.oci.tar"))
        assert len(archives) == 1 and archives[0].stat().st_size > 100_000_000

    def test_a_missing_image_fails_in_one_sentence(self) -> None:
        done = container_sh("test", "--image", "kitchenware-classifier:no-such-version")
        assert done.returncode == 1
        assert "No image kitchenware-classifier:no-such-version" in done.stderr
        assert "Traceback" not in done.stderr

    def test_a_new_host_ca_is_layered_in_and_removing_it_restores_the_base(
        self, build_output: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        from base_image import CA_LABEL, STANDIN_FOR, ensure_base_image, extra_ca_files

        engine = Engine.detect()

        def base_state() -> tuple[str, str]:
            image_id = engine.run("image", "inspect", "--format", "{{.Id}}", STANDIN_FOR)
            return image_id.stdout.strip(), engine.image_labels(STANDIN_FOR).get(CA_LABEL, "")

        before = base_state()
        extra = tmp_path / "extra"
        extra.mkdir()
        for path in extra_ca_files():
            shutil.copyfile(path, extra / path.name)
        shutil.copyfile(
            Path("/usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt"), extra / "new.crt"
        )
        monkeypatch.setenv("KITCHENWARE_EXTRA_CA_CERTS", str(extra))
        ensure_base_image(engine, STANDIN_FOR)
        with_new_ca = base_state()
        monkeypatch.delenv("KITCHENWARE_EXTRA_CA_CERTS")
        ensure_base_image(engine, STANDIN_FOR)
        assert with_new_ca[1] not in ("", before[1]), "the new CA did not reach the base image"
        # Same image id again: the build cache still holds every layer of the service image.
        assert base_state() == before
        engine.run("rmi", with_new_ca[0], check=False)  # the variant is dangling now

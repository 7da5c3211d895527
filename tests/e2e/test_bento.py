"""bentofile.yaml and build_bento_from_saved.py: import a saved model, build, serve the bento."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from service_support import REPO, build_colour_model, image_bytes, serve, store_env

TRAINING_ONLY = {"matplotlib", "tqdm"}  # pyproject runtime deps the service never imports


def run_script(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "build_bento_from_saved.py"), *args],
        env=store_env(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def package_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_bentofile_packages_match_pyproject_runtime_dependencies() -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {package_name(r): r.replace(" ", "") for r in project["dependencies"]}
    packed = {package_name(r): r.replace(" ", "") for r in bentofile["python"]["packages"]}
    assert packed == {name: spec for name, spec in runtime.items() if name not in TRAINING_ONLY}
    assert bentofile["docker"]["python_version"] == "3.11"
    assert bentofile["service"] == "service:Kitchenware"


def test_bentofile_includes_only_the_service_code() -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert "kitchenware/*.py" not in bentofile["include"]


def test_missing_model_folder_is_one_sentence(tmp_path: Path) -> None:
    result = run_script("--model-dir", str(tmp_path / "nowhere"), "--import-only", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: No model.keras in")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_import_twice_is_one_model_then_build_and_serve_the_bento(tmp_path: Path) -> None:
    home = tmp_path / "bentoml_home"
    model_dir = build_colour_model(tmp_path / "model")

    first = run_script("--model-dir", str(model_dir), "--import-only", home=home)
    again = run_script("--model-dir", str(model_dir), "--import-only", home=home)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "imported into" in first.stdout and "already in" in again.stdout
    model_tag = first.stdout.split()[1]
    assert model_tag == again.stdout.split()[1]
    assert len(list((home / "models" / "kitchenware").glob("*/model.keras"))) == 1

    built = run_script("--model-dir", str(model_dir), home=home)
    assert built.returncode == 0, built.stderr
    bento_tag = built.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"kitchenware:[a-z0-9]+", bento_tag)
    assert f"bentoml serve {bento_tag}" in built.stdout
    bento_yaml = yaml.safe_load(
        (home / "bentos" / "kitchenware" / bento_tag.split(":")[1] / "bento.yaml").read_text()
    )
    packed = [m["tag"] for s in bento_yaml["services"] for m in s["models"]]
    assert packed == [model_tag]
    bento_src = home / "bentos" / "kitchenware" / bento_tag.split(":")[1] / "src"
    assert not (bento_src / "tests").exists() and not (bento_src / "saved_model").exists()

    # Serve from an unrelated directory: the bento must carry everything it needs.
    with serve(bento_tag, store_env(home), cwd=tmp_path) as server:
        response = httpx.post(
            f"{server.url}/classify", files={"image": ("mug.png", image_bytes((230, 20, 20)))}
        )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "cup"
    assert response.json()["model"] == model_tag

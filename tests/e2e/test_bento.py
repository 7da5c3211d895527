"""bentofile.yaml and build_bento_from_saved.py: import a saved model, build, serve the bento."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from support.images import image_bytes
from support.service import BENTOML, REPO, build_colour_model, serve, store_env

BENTO_CODE = ("kitchenware/runtime/", "kitchenware/serving/")  # what the bento may ship
BENTO_FILES = {"service.py", "kitchenware/__init__.py", "bentofile.yaml"}  # bentoml adds the last


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


# The default bento serves the OpenVINO IR and carries no TensorFlow (issue 10): pyproject's
# base dependencies plus the postgres extra. The TensorFlow bento swaps OpenVINO for the
# tensorflow extra. Neither carries the training extra (NNCF, matplotlib).
BENTO_EXTRAS = {
    "bentofile.yaml": (("postgres",), set()),
    "bentofile-tensorflow.yaml": (("tensorflow", "postgres"), {"openvino"}),
}


@pytest.mark.parametrize("bentofile_name", sorted(BENTO_EXTRAS))
def test_bentofile_packages_match_pyproject_runtime_dependencies(bentofile_name: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras, left_out = BENTO_EXTRAS[bentofile_name]
    wanted = [
        *project["dependencies"],
        *(r for e in extras for r in project["optional-dependencies"][e]),
    ]
    runtime = {package_name(r): r.replace(" ", "") for r in wanted}
    listed = serving_lock(bentofile_name).with_suffix(".in").read_text().splitlines()
    requirements = [line.split("#")[0].strip() for line in listed]
    packed = {package_name(r): r.replace(" ", "") for r in requirements if r}
    assert packed == {name: spec for name, spec in runtime.items() if name not in left_out}


def serving_lock(bentofile_name: str) -> Path:
    bentofile = yaml.safe_load((REPO / bentofile_name).read_text())
    assert bentofile["python"]["lock_packages"] is False  # BentoML would re-resolve otherwise
    return REPO / bentofile["python"]["requirements_txt"]


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version \\` line of a hashed lock file."""
    found = re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+) \\$", lock.read_text(), re.M)
    return {name.lower(): version for name, version in found}


@pytest.mark.parametrize("bentofile_name", sorted(BENTO_EXTRAS))
def test_the_bento_installs_the_tested_versions_hash_checked(bentofile_name: str) -> None:
    """Every pin of the bento's lock is the pin make install used, and each carries a hash."""
    lock = serving_lock(bentofile_name)
    served, tested = pins(lock), pins(REPO / "requirements.lock")
    assert served and {name: tested.get(name) for name in served} == served
    listed = (
        line.split("#")[0].strip() for line in lock.with_suffix(".in").read_text().splitlines()
    )
    unpinned = {package_name(r) for r in listed if r} - set(served)
    assert not unpinned, f"{sorted(unpinned)} in the .in but not in {lock.name}: run `make lock`"
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 1)[1])
    requirements = [e for e in entries if "==" in e and not e.lstrip().startswith("#")]
    assert all("--hash=sha256:" in e for e in requirements), "a pin without its hash"


def test_missing_model_folder_is_one_sentence(tmp_path: Path) -> None:
    result = run_script("--model-dir", str(tmp_path / "nowhere"), "--import-only", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: No model.keras in")
    assert "Traceback" not in result.stderr


@dataclass(frozen=True)
class Imported:
    home: Path
    model_dir: Path
    model_tag: str
    outputs: tuple[str, str]  # stdout of the first and the second import


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    """The colour model imported twice into a fresh store with the script."""
    base = tmp_path_factory.mktemp("bento")
    home, model_dir = base / "bentoml_home", build_colour_model(base / "model")
    first = run_script("--model-dir", str(model_dir), "--import-only", home=home)
    again = run_script("--model-dir", str(model_dir), "--import-only", home=home)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    return Imported(home, model_dir, imported_tag(first.stdout), (first.stdout, again.stdout))


def imported_tag(stdout: str) -> str:
    """The tag in the script's `model TAG imported into|already in ...` line."""
    found = re.search(r"^model (\S+) (?:imported into|already in) ", stdout, re.M)
    assert found, stdout
    return found[1]


@pytest.mark.slow
def test_importing_twice_is_one_model(imported: Imported) -> None:
    first, again = imported.outputs
    assert "imported into" in first and "already in" in again
    assert imported_tag(again) == imported.model_tag
    assert len(list((imported.home / "models" / "kitchenware").glob("*/model.keras"))) == 1


def bento_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "bentos" / name / version


@pytest.mark.slow
def test_a_built_bento_ships_runtime_and_serving_only(imported: Imported) -> None:
    """`bentoml build`, as the README's deploy section runs it, then look inside."""
    env = {**store_env(imported.home), "KITCHENWARE_MODEL_TAG": imported.model_tag}
    built = subprocess.run(
        [BENTOML, "build", "--output", "tag"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento = bento_dir(imported.home, tag)
    src = bento / "src"
    shipped = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    assert "service.py" in shipped and "kitchenware/serving/http/uploads.py" in shipped
    assert "kitchenware/runtime/preprocessing.py" in shipped
    strays = [f for f in shipped if f not in BENTO_FILES and not f.startswith(BENTO_CODE)]
    assert strays == [], "the bento ships more than the service's code"
    assert not [f for f in shipped if "modelbuild" in f], "model-building code in the bento"
    unwanted = [
        f
        for f in shipped
        if "training" in f
        or f.startswith(("tests/", "data/", "saved_model/", "runs/", "bench/", "notebook"))
        or f.endswith((".ipynb", ".keras", ".csv"))
    ]
    assert unwanted == [], "training code, tests, notebooks or data in the bento"

    # The shipped code alone imports the service: nothing of kitchenware.training or
    # kitchenware.modelbuild loads, and neither TensorFlow, Keras nor NNCF (the default bento
    # has none of them installed).
    probe = (
        "import json, sys, service, kitchenware; "
        "print(json.dumps([kitchenware.__file__, sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('kitchenware', 'tensorflow', 'keras', 'nncf'))]))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=src, env=env, capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    package_file, modules = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert Path(package_file).is_relative_to(src), "imported the checkout, not the bento"
    assert "kitchenware.serving.http.uploads" in modules
    building = ("kitchenware.training", "kitchenware.modelbuild", "tensorflow", "keras", "nncf")
    assert [m for m in modules if m.startswith(building)] == []

    packed = yaml.safe_load((bento / "bento.yaml").read_text())
    assert [m["tag"] for s in packed["services"] for m in s["models"]] == [imported.model_tag]


@pytest.mark.slow
def test_the_script_builds_a_bento_that_serves_from_anywhere(
    imported: Imported, tmp_path: Path
) -> None:
    built = run_script("--model-dir", str(imported.model_dir), home=imported.home)
    assert built.returncode == 0, built.stderr
    bento_tag = built.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"kitchenware:[a-z0-9]+", bento_tag)
    assert f"bentoml serve {bento_tag}" in built.stdout

    # Serve from an unrelated directory: the bento must carry everything it needs.
    with serve(bento_tag, store_env(imported.home), cwd=tmp_path) as server:
        response = httpx.post(
            f"{server.url}/classify", files={"image": ("mug.png", image_bytes((230, 20, 20)))}
        )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "cup"
    assert response.json()["model"] == imported.model_tag

"""An unusable model stops the server before it starts: one sentence naming the file, exit 2.

The direct tests break a real exported model in each way; the served ones run
`bentoml serve` on a broken store entry and check it exits, quickly and without a
traceback loop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.service import BENTOML, REPO, build_colour_model, import_into_store, store_env

from kitchenware.runtime.metadata import METADATA_FILENAME, MODEL_FILENAME
from kitchenware.serving.inference.preflight import ModelUnusable, check_model_dir


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("preflight") / "model")


@pytest.fixture
def model(good_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good_model, tmp_path / "model"))


def edit_metadata(model: Path, **changes: object) -> None:
    path = model / METADATA_FILENAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_sound_model_passes(model: Path) -> None:
    assert check_model_dir(model).image_size == 64


def flip_byte_in_the_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


BREAKAGES = {
    "no model file": (lambda m: (m / MODEL_FILENAME).unlink(), "model.keras is missing"),
    "truncated": (
        lambda m: (m / MODEL_FILENAME).write_bytes((m / MODEL_FILENAME).read_bytes()[:5000]),
        "not a readable .keras archive",
    ),
    "flipped byte": (lambda m: flip_byte_in_the_middle(m / MODEL_FILENAME), "model.keras is"),
    "no metadata": (lambda m: (m / METADATA_FILENAME).unlink(), "No model metadata at"),
    "metadata not json": (
        lambda m: (m / METADATA_FILENAME).write_text("{not json"),
        "metadata.json is invalid",
    ),
    "metadata missing classes": (
        lambda m: edit_metadata(m, class_names=None),
        "metadata.json is invalid",
    ),
    "other preprocessing": (
        lambda m: edit_metadata(m, preprocessing="imagenet-caffe/v0"),
        "names preprocessing 'imagenet-caffe/v0'",
    ),
    "wrong input size": (
        lambda m: edit_metadata(m, image_size=224),
        "takes 64 px inputs but its metadata.json says image_size 224",
    ),
    "runtime manifest garbage": (
        lambda m: (m / "runtimes.json").write_text("[]"),
        "runtimes.json is invalid",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_breakage_is_one_sentence_naming_the_file(model: Path, breakage: str) -> None:
    breaks, words = BREAKAGES[breakage]
    breaks(model)
    with pytest.raises(ModelUnusable) as caught:
        check_model_dir(model, "kitchenware:test")
    message = str(caught.value)
    assert words in message, message
    assert str(model) in message and message.endswith(".")
    assert "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize("breakage", ["flipped byte", "wrong input size", "not in store"])
def test_bentoml_serve_refuses_to_start_in_one_line(
    good_model: Path, tmp_path: Path, breakage: str
) -> None:
    home = tmp_path / "bentoml_home"
    model = Path(shutil.copytree(good_model, tmp_path / "model"))
    tag = "kitchenware:missing" if breakage == "not in store" else import_into_store(model, home)
    if breakage != "not in store":
        stored = home / "models" / tag.replace(":", "/")
        BREAKAGES[breakage][0](stored)
    started = time.monotonic()
    done = subprocess.run(
        [BENTOML, "serve", "service:Kitchenware", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        env=store_env(home, model_tag=tag),
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout + done.stderr
    refusals = [line for line in output.splitlines() if "refusing to start" in line]
    assert done.returncode == 2, output[-3000:]
    assert len(refusals) == 1 and tag.split(":")[0] in refusals[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    print(f"{breakage}: exit {done.returncode} after {time.monotonic() - started:.1f} s")

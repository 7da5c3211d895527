"""The README's commands, run as written against served models (the checks that need no
server are in tests/repository/test_docs.py)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest
from support.docs import README_PATH, code_blocks, section
from support.real_model import real_model_home, shared_real_server
from support.service import REPO, ServedService, shared_server

from kitchenware.modelbuild.pretrained import RealPhotos

README = README_PATH.read_text()
README_URL = "http://localhost:3000"
REAL_PHOTOS = "data/real-photos/"  # where `make serve` extracts the published model's photos


def curl_commands() -> list[str]:
    return [
        line
        for block in code_blocks(README, "bash")
        for line in block.splitlines()
        if line.startswith("curl ")
    ]


@pytest.mark.slow
def test_curl_answers_shown_for_real_photos_are_the_default_models_answers(
    tmp_path_factory: pytest.TempPathFactory, real_photos: RealPhotos
) -> None:
    """The first curl example is a real photo; the answers shown are the real model's."""
    from kitchenware.runtime.preprocessing import preprocess_bytes
    from kitchenware.runtime.tensorflow_backend import Classifier

    text = section(README, "Classify with curl").split("### The demo model")[0]
    assert curl_commands()[0].startswith(f"curl -F image=@{REAL_PHOTOS}")
    assert "Answers of the default model, the published Xception" in text
    shown = re.findall(r'"label": "(\w+)", "confidence": ([0-9.]+)', text)
    files = re.findall(rf"=@{REAL_PHOTOS}(\S+)", text)
    assert len(shown) == len(files) == 4  # one photo alone, then three in one batch
    home, tag = real_model_home(tmp_path_factory.getbasetemp())
    name, version = tag.split(":")
    classifier = Classifier.load(home / "models" / name / version)
    for file, (label, confidence) in zip(files, shown, strict=True):
        data = real_photos.path(file.removesuffix(".jpg")).read_bytes()
        probabilities = classifier.predict_arrays(preprocess_bytes(data, classifier.image_size))
        best = int(probabilities[0].argmax())
        assert classifier.class_names[best] == label == real_photos.labels[file[:-4]], file
        assert float(probabilities[0][best]) == pytest.approx(float(confidence), abs=2e-4), file


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServedService:
    return shared_server(request, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def real_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServedService:
    return shared_real_server(request, tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_readme_curl_commands_run_as_written(
    server: ServedService, real_server: ServedService, real_photos: RealPhotos
) -> None:
    """Real-photo commands against the default model, examples/ ones against a demo-named
    model; only the port (and where the photos were extracted) changes."""
    commands = curl_commands()
    assert [c.split()[-1] for c in commands] == [
        f"{README_URL}/classify",
        f"{README_URL}/classify_batch",
    ] * 2
    for command in commands:
        real = REAL_PHOTOS in command
        target = real_server if real else server
        command = command.replace(README_URL, target.url)
        command = command.replace(f"@{REAL_PHOTOS}", f"@{real_photos.directory}/")
        result = subprocess.run(
            shlex.split(command), cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        results = answer.get("results", [answer])
        files = re.findall(r"=@\S+/(\S+)", command)
        assert [r["filename"] for r in results] == files
        assert all(r["label"] in r["probabilities"] for r in results)
        if real:  # every README photo is a labelled one: the default model gets it right
            assert [r["label"] for r in results] == [real_photos.labels[f[:-4]] for f in files]


@pytest.mark.slow
def test_readme_python_client_runs_as_written_and_prints_what_it_shows(
    real_server: ServedService, real_photos: RealPhotos
) -> None:
    """classify -> feedback by id on real photos, against the default model; the printed
    lines are the README's sample answers (the runtime as this CPU's `auto` picked it)."""
    text = section(README, "Python client")
    (snippet,) = code_blocks(text, "python")
    (shown,) = code_blocks(text, "text")
    assert 'Path("data/real-photos")' in snippet and "client.feedback(request_id=" in snippet
    snippet = snippet.replace(README_URL, real_server.url).replace(
        'Path("data/real-photos")', f"Path({str(real_photos.directory)!r})"
    )
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip().splitlines()
    expected = shown.strip().splitlines()
    (label, confidence, runtime), (shown_label, shown_confidence, shown_runtime) = (
        printed[0].split(),
        expected[0].split(),
    )
    assert label == shown_label and runtime.startswith("openvino-")
    # int8, bf16 and fp32 differ from the figure shown by a few thousandths on this photo.
    assert float(confidence) == pytest.approx(float(shown_confidence), abs=0.02)
    assert "auto" in text and shown_runtime in text
    assert printed[1:] == expected[1:]

"""The loop end to end: predictions over HTTP -> corrections to /feedback -> the export CLI
writes a Kaggle-layout dataset (merged with an existing one) -> a short `train.py --data`
run reads it, corrections included."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from service_support import (
    REPO,
    image_bytes,
    import_into_store,
    serve,
    shared_model_dir,
    store_env,
)

pytestmark = [pytest.mark.slow]
SERVICE_DIR = REPO  # service.py of this checkout
CORRECTIONS = {"cup": (20, 20, 230), "glass": (230, 20, 230), "fork": (230, 230, 20)}


def test_predictions_feedback_export_retrain(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, demo_dataset_dir: Path
) -> None:
    home = tmp_path / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    url = f"sqlite:///{tmp_path / 'store' / 'feedback.db'}"
    env = store_env(home, feedback_url=url)
    env["BENTOML_CONFIG_OPTIONS"] = (
        f"services.kitchenware.monitoring.options.log_path={tmp_path / 'monitoring'}"
    )
    sent: list[tuple[str, str]] = []
    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=tmp_path) as server:
        for label, colour in CORRECTIONS.items():
            for k in range(2):
                photo = image_bytes(colour, "JPEG", size=(60 + k, 50))
                answer = httpx.post(
                    f"{server.url}/classify", files={"image": ("p.jpg", photo)}, timeout=60
                ).json()
                assert answer["label"] != label  # the model is wrong: that is the point
                done = httpx.post(
                    f"{server.url}/feedback",
                    files={"label": (None, label), "request_id": (None, answer["request_id"])},
                    timeout=30,
                )
                assert done.status_code == 200, done.text
                sent.append((done.json()["feedback_id"], label))

    out = tmp_path / "export"
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "kitchenware.serving.export",
            str(out),
            "--merge",
            str(demo_dataset_dir),
            "--url",
            url,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    assert "from feedback: 6" in export.stdout, export.stdout
    with (out / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    fixes = {row["Id"]: row["label"] for row in rows if row["Id"].startswith("feedback-")}
    assert fixes == {f"feedback-{i:06d}": label for i, label in sent}
    assert all((out / "images" / f"{image_id}.jpg").is_file() for image_id in fixes)
    assert len(rows) == 6 + 6 * 8  # the merged synthetic set: 6 classes x 8

    run = tmp_path / "run"
    train = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--data",
            str(out),
            "--backbone",
            "scratch",
            "--image-size",
            "32",
            "--weights",
            "none",
            "--epochs",
            "1",
            "--fine-tune-epochs",
            "0",
            "--batch-size",
            "8",
            "--run-dir",
            str(run),
            "--no-save-to-store",
        ],
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    split = (run / "split.csv").read_text()
    assert sum(f"feedback-{i:06d}" in split for i, _ in sent) == len(sent)

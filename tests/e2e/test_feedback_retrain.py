"""The loop end to end: predictions over HTTP -> corrections to /feedback -> the export CLI
writes a Kaggle-layout dataset (merged with an existing one) -> a short `train.py --data`
run reads it, corrections included."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.images import image_bytes
from support.service import (
    REPO,
    free_port,
    import_into_store,
    serve,
    shared_model_dir,
    store_env,
)

from kitchenware.localserver import running

pytestmark = [pytest.mark.slow]
SERVICE_DIR = REPO  # service.py of this checkout
CORRECTIONS = {"cup": (20, 20, 230), "glass": (230, 20, 230), "fork": (230, 230, 20)}


def test_predictions_feedback_export_retrain(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, demo_dataset_dir: Path
) -> None:
    home = tmp_path / "home"
    import_into_store(shared_model_dir(tmp_path_factory.getbasetemp()), home)
    url = f"sqlite:///{tmp_path / 'store' / 'feedback.db'}"
    env = store_env(home, monitoring_dir=tmp_path / "monitoring", feedback_url=url)
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


# --- `make retrain`: the served model learns from its users -------------------------------
# The synthetic demo model (MobileNetV3Small, 96 px) gets most of the real photos wrong.
# Users correct crops of seven photos; another is only classified (traffic the service
# keeps). 0403 is a cup nobody corrects: the candidate must get its crops right more often.
CORRECTED = ("0009", "0020", "0299", "0004", "0013", "0207", "0412")  # 3 cups, a plate, ...
TRAFFIC_ONLY = ("0026",)  # the other plate: classified, never corrected
TRAFFIC_CROPS = 6
OTHER_CUP = "0403"
CROPS_PER_PHOTO = 8
DEMO_DIR = REPO / "saved_model"


def crops(path: Path, count: int, seed: int) -> list[bytes]:
    """Random crops (75-100 % of each side) of a real photo, as a user's re-takes would be."""
    import io
    import random

    from PIL import Image

    rng = random.Random(f"{path.stem}-{seed}")
    image = Image.open(path).convert("RGB")
    width, height = image.size
    found = []
    for _ in range(count):
        scale = rng.uniform(0.75, 1.0)
        w, h = int(width * scale), int(height * scale)
        x, y = rng.randint(0, width - w), rng.randint(0, height - h)
        buffer = io.BytesIO()
        image.crop((x, y, x + w, y + h)).resize((w // 3, h // 3)).save(buffer, "JPEG", quality=90)
        found.append(buffer.getvalue())
    return found


def classify(url: str, photo: bytes) -> dict[str, object]:
    answer = httpx.post(f"{url}/classify", files={"image": ("p.jpg", photo)}, timeout=60)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def send_corrections(url: str, photos: list[tuple[bytes, str]]) -> list[int]:
    """/classify each photo, then tell /feedback the right label (JSON)."""
    ids = []
    for photo, label in photos:
        request_id = classify(url, photo)["request_id"]
        done = httpx.post(
            f"{url}/feedback", json={"label": label, "request_id": request_id}, timeout=30
        )
        assert done.status_code == 200, done.text
        ids.append(int(done.json()["feedback_id"]))
    return ids


def right_count(url: str, photos: list[tuple[bytes, str]]) -> int:
    return sum(classify(url, photo)["label"] == label for photo, label in photos)


def right_share(url: str, photos: list[bytes], label: str) -> float:
    return right_count(url, [(photo, label) for photo in photos]) / len(photos)


def retrain_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kitchenware.training.retrain", *args]


def run(
    command: list[str], env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def demo_served(tmp_path: Path) -> dict[str, object]:
    home = tmp_path / "home"
    tag = import_into_store(DEMO_DIR, home)
    url = f"sqlite:///{tmp_path / 'store' / 'feedback.db'}"
    env = store_env(home, monitoring_dir=tmp_path / "monitoring", model_tag=tag, feedback_url=url)
    return {"home": home, "tag": tag, "url": url, "env": env}


def test_corrections_make_a_better_model_that_is_promoted_and_served(
    tmp_path: Path, demo_served: dict[str, object], real_photos: Any
) -> None:
    env = dict(demo_served["env"])  # type: ignore[call-overload]
    tag, home = str(demo_served["tag"]), Path(str(demo_served["home"]))
    labels = real_photos.labels
    other = crops(real_photos.path(OTHER_CUP), 12, seed=99)  # never sent before retraining
    corrected_again = [(c, labels[p]) for p in CORRECTED for c in crops(real_photos.path(p), 3, 98)]
    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=tmp_path) as server:
        # The evaluation crops first: the retrain distils only the newest traffic
        # (--max-traffic), so the current model's answers on them are not its targets.
        before_other = right_share(server.url, other, "cup")
        before_kinds = right_count(server.url, corrected_again)
        sent = [
            (c, labels[p])
            for p in CORRECTED
            for c in crops(real_photos.path(p), CROPS_PER_PHOTO, 0)
        ]
        ids = send_corrections(server.url, sent)
        for photo_id in TRAFFIC_ONLY:
            for photo in crops(real_photos.path(photo_id), TRAFFIC_CROPS, 1):
                classify(server.url, photo)
    traffic = len(TRAFFIC_ONLY) * TRAFFIC_CROPS

    retrained = run(
        [
            "make",
            "-s",
            "retrain",
            f"MODEL={tag}",
            f"ARGS=--promote --max-traffic {traffic} --run-dir {tmp_path / 'run'} "
            f"--cache-dir {tmp_path / 'cache'}",
        ],
        env,
    )
    assert retrained.returncode == 0, retrained.stdout[-3000:] + retrained.stderr[-3000:]
    out = retrained.stdout
    print(out[-2500:])
    assert "corrections holdout accuracy" in out and "the candidate passes the rule" in out, out
    promoted = re.search(r"^Promoted: (\S+)", out, re.MULTILINE)
    assert promoted is not None, out
    new_tag = promoted.group(1)
    assert new_tag.split(":")[0] == tag.split(":")[0] and new_tag != tag  # a new version
    assert f"make serve MODEL={new_tag}" in out and f"roll back: make serve MODEL={tag}" in out
    run_dir = tmp_path / "run"
    assert {"report.md", "report.json", "confusion_current.png", "confusion_candidate.png"} <= {
        p.name for p in run_dir.iterdir()
    }
    name, version = new_tag.split(":")
    lineage = json.loads((home / "models" / name / version / "metadata.json").read_text())[
        "provenance"
    ]["retrained_from"]
    assert lineage["parent_tag"] == tag
    assert lineage["corrections"]["ids"] == sorted(ids) and lineage["corrections"]["count"] == len(
        ids
    )
    assert lineage["promotion_rule"]["passed"] is True
    assert lineage["data_fingerprint"].startswith("sha256:")
    assert f"distillation on {traffic} recent traffic photos" in lineage["not_forgetting"]

    # `make serve MODEL=<tag>` serves exactly the promoted version.
    port = free_port()
    with running(
        ["make", "-s", "serve", f"MODEL={new_tag}", f"PORT={port}", "HOST=127.0.0.1"],
        ready_url=f"http://127.0.0.1:{port}/readyz",
        log_path=tmp_path / "make-serve.log",
        env=env,
        cwd=REPO,
        timeout=240,
    ):
        url = f"http://127.0.0.1:{port}"
        assert classify(url, other[0])["model"] == new_tag
        after_other = right_share(url, other, "cup")
        after_kinds = right_count(url, corrected_again)
    print(
        f"other cup: {before_other:.2f} -> {after_other:.2f}; corrected kinds "
        f"{before_kinds}/{len(corrected_again)} -> {after_kinds}/{len(corrected_again)}"
    )
    assert after_other > before_other
    assert after_kinds >= 0.8 * len(corrected_again) and after_kinds > before_kinds


def stored_versions(home: Path, name: str) -> set[str]:
    folder = home / "models" / name
    return {p.name for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()


def test_noise_corrections_are_refused_and_the_served_model_stays(
    tmp_path: Path, demo_served: dict[str, object], real_photos: Any
) -> None:
    import random

    env = dict(demo_served["env"])  # type: ignore[call-overload]
    tag, home = str(demo_served["tag"]), Path(str(demo_served["home"]))
    rng = random.Random(7)
    classes = sorted(set(real_photos.labels.values()) | {"glass"})
    with serve("service:Kitchenware", env, cwd=SERVICE_DIR, log_dir=tmp_path) as server:
        noise = [
            (c, rng.choice(classes))
            for p in CORRECTED
            for c in crops(real_photos.path(p), CROPS_PER_PHOTO, 0)
        ]
        send_corrections(server.url, noise)
    before = stored_versions(home, tag.split(":")[0])
    retrained = run(
        retrain_command(
            "--model",
            tag,
            "--promote",
            "--stage",
            "--run-dir",
            str(tmp_path / "run"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ),
        env,
    )
    out = retrained.stdout
    assert retrained.returncode == 1, out[-3000:] + retrained.stderr[-3000:]
    assert stored_versions(home, tag.split(":")[0] + "-candidate") == set()  # not staged either
    assert "is REFUSED by the rule" in out and "[FAIL]" in out
    assert f"{tag} stays the served model" in out and "Promoted:" not in out
    assert stored_versions(home, tag.split(":")[0]) == before  # nothing new in the store
    assert (tmp_path / "run" / "candidate" / "model.keras").is_file()  # kept for a look
    assert "does NOT pass" in (tmp_path / "run" / "report.md").read_text()


def test_too_few_corrections_and_an_empty_store_are_refused(
    tmp_path: Path, demo_served: dict[str, object], real_photos: Any
) -> None:
    from kitchenware.serving.feedback.store import open_store

    env = dict(demo_served["env"])  # type: ignore[call-overload]
    tag, home = str(demo_served["tag"]), Path(str(demo_served["home"]))
    missing = run(retrain_command("--url", f"sqlite:///{tmp_path / 'nowhere' / 'f.db'}"), env)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "No feedback store at" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "nowhere").exists()

    url = str(demo_served["url"])
    with open_store(url):
        pass  # a store that exists but holds nothing yet
    empty = run(retrain_command("--model", tag), env)
    assert empty.returncode == 2, empty.stdout + empty.stderr
    assert empty.stderr.startswith("error: The feedback store ") and empty.stderr.count("\n") == 1
    assert "holds no corrections" in empty.stderr

    with open_store(url) as store:
        for photo_id in CORRECTED[:4]:  # four photos: a holdout of one at most
            (photo,) = crops(real_photos.path(photo_id), 1, 0)
            store.add_feedback(real_photos.labels[photo_id], image=photo)
    before = stored_versions(home, tag.split(":")[0])
    few = run(retrain_command("--model", tag, "--promote", "--run-dir", str(tmp_path / "r")), env)
    assert few.returncode == 2, few.stdout + few.stderr
    assert "4 corrected photo(s) give a holdout of" in few.stderr
    assert "send more corrections" in few.stderr and "nothing was trained or promoted" in few.stderr
    assert stored_versions(home, tag.split(":")[0]) == before
    assert not (tmp_path / "r").exists()

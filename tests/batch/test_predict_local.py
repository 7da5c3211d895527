"""predict.py with the local engine on real files: layouts, bad files, formats, resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.batch import PREDICT, read_rows, run_predict, write_colour_images
from support.images import image_bytes
from support.service import REPO

from kitchenware.batch.cli import main


def predict(*args: str) -> int:
    return main([*args, "--no-progress"])


def test_folder_recursive_ids_and_labels(colour_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "photos"
    expected = write_colour_images(data / "kitchen", per_class=2)
    expected.update(
        {f"more/{k}": v for k, v in write_colour_images(data / "more", per_class=1).items()}
    )
    (data / "notes.txt").write_text("not picked up: not an image suffix")
    out = tmp_path / "submission.csv"
    assert (
        predict("--data", str(data), "--out", str(out), "--model-dir", str(colour_model_dir)) == 0
    )
    rows = read_rows(out)
    assert list(rows[0]) == ["Id", "label"]  # Kaggle's submission columns
    got = {row["Id"].removeprefix("kitchen/"): row["label"] for row in rows}
    assert got == expected
    assert not (tmp_path / "submission.errors.csv").exists()
    assert not (tmp_path / "submission.csv.partial").exists()


def test_glob_and_file_list(colour_model_dir: Path, tmp_path: Path) -> None:
    expected = write_colour_images(tmp_path / "set" / "a", per_class=1)
    write_colour_images(tmp_path / "set" / "b", per_class=1, fmt="JPEG")
    out = tmp_path / "glob.csv"
    pattern = str(tmp_path / "set" / "**" / "*.png")
    assert predict("--data", pattern, "--out", str(out), "--model-dir", str(colour_model_dir)) == 0
    rows = read_rows(out)
    assert {r["Id"]: r["label"] for r in rows} == {f"a/{k}": v for k, v in expected.items()}

    listing = tmp_path / "set" / "files.txt"
    listing.write_text("# two of them\na/cup-000.png\n\nb/plate-000.jpg\n")
    out = tmp_path / "list.csv"
    assert (
        predict("--data", str(listing), "--out", str(out), "--model-dir", str(colour_model_dir))
        == 0
    )
    assert [(r["Id"], r["label"]) for r in read_rows(out)] == [
        ("a/cup-000", "cup"),
        ("b/plate-000", "plate"),
    ]


def test_kaggle_layout_in_csv_order_with_a_missing_image(
    colour_model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kaggle"
    expected = write_colour_images(root / "images", per_class=1, fmt="JPEG")
    # Kaggle ids are zero-padded numbers: rename to that shape.
    order = sorted(expected)[::-1]
    ids = {}
    for index, old in enumerate(order):
        new = f"{index * 7:04d}"
        (root / "images" / f"{old}.jpg").rename(root / "images" / f"{new}.jpg")
        ids[new] = expected[old]
    (root / "test.csv").write_text("Id\n" + "".join(f"{i}\n" for i in ids) + "9999\n")
    out = tmp_path / "sub.csv"
    code = predict("--data", str(root), "--out", str(out), "--model-dir", str(colour_model_dir))
    assert code == 1  # 9999 has no image
    rows = read_rows(out)
    assert [r["Id"] for r in rows] == list(ids)  # the csv's order, the failed id left out
    assert {r["Id"]: r["label"] for r in rows} == ids
    errors = read_rows(tmp_path / "sub.errors.csv")
    assert [(e["Id"], e["reason"]) for e in errors] == [("9999", "missing")]


def test_corrupt_and_non_image_among_good_ones(colour_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "mixed"
    expected = write_colour_images(data, per_class=2, fmt="JPEG")
    photo = image_bytes((200, 40, 40), fmt="JPEG", size=(400, 300))
    (data / "truncated.jpg").write_bytes(photo[: len(photo) * 2 // 3])  # header intact
    (data / "page.jpg").write_text("<html>not a photo</html>")
    (data / "empty.png").write_bytes(b"")
    errors = tmp_path / "bad-files.csv"
    out = tmp_path / "out.csv"
    code = predict(
        "--data", str(data), "--out", str(out), "--model-dir", str(colour_model_dir),
        "--errors", str(errors), "--batch-size", "4",
    )  # fmt: skip
    assert code == 1
    assert {r["Id"]: r["label"] for r in read_rows(out)} == expected
    reasons = {e["Id"]: e["reason"] for e in read_rows(errors)}
    assert reasons == {"truncated": "corrupt", "page": "not_an_image", "empty": "empty"}
    assert all(e["error"] and e["path"].startswith(str(data)) for e in read_rows(errors))
    # Bad files are retried by a rerun: the journal stays until every file scored.
    assert (tmp_path / "out.csv.partial").exists()
    (data / "truncated.jpg").unlink()
    (data / "page.jpg").unlink()
    (data / "empty.png").unlink()
    rerun = ["--data", str(data), "--out", str(out), "--model-dir", str(colour_model_dir)]
    assert predict(*rerun, "--errors", str(errors)) == 0
    assert not errors.exists()  # the old list no longer holds
    assert not (tmp_path / "out.csv.partial").exists()


def test_probabilities_sum_to_one_and_jsonl(colour_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "p"
    expected = write_colour_images(data, per_class=2)
    out = tmp_path / "probs.csv"
    model = ("--model-dir", str(colour_model_dir))
    assert predict("--data", str(data), "--out", str(out), *model, "--probabilities") == 0
    rows = read_rows(out)
    classes = ["cup", "glass", "plate", "spoon", "fork", "knife"]
    assert list(rows[0]) == ["Id", "label", *classes]
    for row in rows:
        scores = np.array([float(row[c]) for c in classes])
        assert scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert classes[int(scores.argmax())] == row["label"] == expected[row["Id"]]

    out = tmp_path / "probs.jsonl"
    args = ("--format", "jsonl", "--probabilities")
    assert predict("--data", str(data), "--out", str(out), *model, *args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["id"]: line["label"] for line in lines} == expected
    for line in lines:
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert line["confidence"] == max(line["probabilities"].values())


def test_process_decoders_give_the_same_scores(colour_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "d"
    write_colour_images(data, per_class=3, fmt="JPEG")
    outs = []
    for mode in ("threads", "processes"):
        out = tmp_path / f"{mode}.csv"
        args = ["--data", str(data), "--out", str(out), "--model-dir", str(colour_model_dir)]
        assert predict(*args, "--probabilities", "--decode-in", mode, "--decoders", "2") == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]


def test_journal_of_another_model_is_refused(
    colour_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "j"
    write_colour_images(data, per_class=1)
    out = tmp_path / "o.csv"
    header = {"kitchenware_batch_journal": 1, "model_sha256": "0" * 64, "backend": "auto"}
    (tmp_path / "o.csv.partial").write_text(json.dumps(header) + "\n")
    args = ["--data", str(data), "--out", str(out), "--model-dir", str(colour_model_dir)]
    assert predict(*args) == 2
    assert "--restart" in capsys.readouterr().err
    assert predict(*args, "--restart") == 0


def test_cli_usage_errors(tmp_path: Path) -> None:
    result = run_predict("--data", str(tmp_path / "nowhere"), "--model-dir", str(tmp_path))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    (tmp_path / "x.png").write_bytes(image_bytes())
    result = run_predict("--data", str(tmp_path), "--model-dir", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "metadata.json" in result.stderr


@pytest.mark.slow
def test_resume_after_a_kill(tmp_path: Path) -> None:
    """SIGKILL mid-run, rerun: every id once, the same labels as an uninterrupted run."""
    from support.service import build_colour_model

    # A slow model (same labels): the run takes long enough to be killed in the middle.
    model = build_colour_model(tmp_path / "slow-model", image_size=96, busywork_filters=96)
    data = tmp_path / "many"
    expected = write_colour_images(data, per_class=40, fmt="JPEG")  # 240 images
    out = tmp_path / "resumed.csv"
    journal = tmp_path / "resumed.csv.partial"
    args = ["--data", str(data), "--out", str(out), "--model-dir", str(model), "--batch-size", "8"]
    process = subprocess.Popen(
        [*PREDICT, *args, "--no-progress"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    deadline = time.monotonic() + 300
    written = 0
    while time.monotonic() < deadline and process.poll() is None:
        written = len(journal.read_text().splitlines()) - 1 if journal.exists() else 0
        if written >= 24:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()  # never a half-written output
    done_before = len(journal.read_text().splitlines()) - 1
    assert 24 <= done_before < len(expected)

    result = run_predict(*args, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"{done_before} resumed" in result.stderr
    rows = read_rows(out)
    ids = [row["Id"] for row in rows]
    assert len(ids) == len(set(ids)) == len(expected)
    assert not journal.exists()

    clean = tmp_path / "clean.csv"
    clean_args = [*args[:2], "--out", str(clean), *args[4:], "--no-progress"]
    assert run_predict(*clean_args).returncode == 0
    assert read_rows(clean) == rows
    assert {r["Id"]: r["label"] for r in rows} == expected


def test_csv_rows_are_quoted_safely(colour_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "odd names"
    data.mkdir()
    (data / "a, b.png").write_bytes(image_bytes((230, 20, 20)))
    out = tmp_path / "q.csv"
    assert (
        predict("--data", str(data), "--out", str(out), "--model-dir", str(colour_model_dir)) == 0
    )
    with open(out, newline="") as handle:
        assert list(csv.reader(handle)) == [["Id", "label"], ["a, b", "cup"]]

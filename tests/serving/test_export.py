"""The export CLI a user runs by hand: a mistyped --merge is one sentence, and dataset rows
without an image are counted apart from corrections without a photo."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image

from kitchenware.serving.export import main
from kitchenware.serving.feedback.store import open_store


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store' / 'feedback.db'}"
    with open_store(url) as store:
        store.add_feedback("cup", image=_jpeg((200, 10, 10)))
        store.add_feedback("fork", image=_jpeg((10, 200, 10)))
    return url


def _kaggle_dataset(root: Path, present: int, absent: int) -> Path:
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(present + absent):
        if i < present:
            (root / "images" / f"{i:04d}.jpg").write_bytes(_jpeg((i * 20, 100, 100)))
        rows.append((f"{i:04d}", "plate"))
    with (root / "train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("Id", "label"), *rows])
    return root


def test_missing_merge_folder_is_one_sentence(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(tmp_path / "out"), "--merge", str(tmp_path / "nope"), "--url", store_url])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --merge ") and "no such folder" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_csv_without_images_folder_is_refused(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # data/real-photos has a train.csv beside its photos, not the Kaggle images/ folder.
    photos = tmp_path / "real-photos"
    photos.mkdir()
    (photos / "train.csv").write_text("Id,label\n0004,plate\n")
    code = main([str(tmp_path / "out"), "--merge", str(photos), "--url", store_url])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "needs its images in" in err and "corrections" not in err


def test_dataset_rows_and_corrections_are_counted_apart(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = _kaggle_dataset(tmp_path / "data", present=3, absent=2)
    out = tmp_path / "out"
    code = main([str(out), "--merge", str(dataset), "--url", store_url])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "from feedback: 2" in printed and "from dataset: 3" in printed
    assert "corrections without photo: 0" in printed
    assert "dataset rows without image: 2" in printed
    assert "corrections had no photo" not in printed
    with (out / "train.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 5

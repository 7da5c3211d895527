"""The synthetic demo generator: reproducible, readable by discovery, all six classes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kitchenware.training.data import discover_dataset
from kitchenware.training.demo.generator import DEMO_CLASSES, generate_demo_dataset, main


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    first = generate_demo_dataset(tmp_path / "a", per_class=2, seed=3, progress=False)
    second = generate_demo_dataset(tmp_path / "b", per_class=2, seed=3, progress=False)
    other = generate_demo_dataset(tmp_path / "c", per_class=2, seed=4, progress=False)
    assert _files(first) == _files(second)
    assert _files(first)["images/0000.jpg"] != _files(other)["images/0000.jpg"]


def test_kaggle_layout_is_read_by_discovery_with_all_six_classes(demo_dataset_dir: Path) -> None:
    with (demo_dataset_dir / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["Id", "label"]
    assert all(row["Id"].isdigit() and len(row["Id"]) == 4 for row in rows)
    # Ids are not grouped by class, as in Kaggle's file.
    assert [row["label"] for row in rows] != sorted(row["label"] for row in rows)

    dataset = discover_dataset(demo_dataset_dir)
    assert dataset.layout == "kaggle"
    assert dataset.class_names == tuple(sorted(DEMO_CLASSES))
    assert dataset.class_counts() == {name: 8 for name in sorted(DEMO_CLASSES)}


def test_images_are_jpegs_of_varied_non_square_sizes_within_range(demo_dataset_dir: Path) -> None:
    sizes = []
    for path in sorted((demo_dataset_dir / "images").glob("*.jpg")):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.append(image.size)
    assert all(64 <= side <= 128 for size in sizes for side in size)
    assert any(width != height for width, height in sizes)
    assert len(set(sizes)) > len(sizes) // 2


def test_folders_layout_is_read_by_discovery(tmp_path: Path) -> None:
    out = generate_demo_dataset(
        tmp_path / "folders", per_class=3, layout="folders", size_range=(64, 96), progress=False
    )
    dataset = discover_dataset(out)
    assert dataset.layout == "folders"
    assert dataset.class_counts() == {name: 3 for name in sorted(DEMO_CLASSES)}


def test_cli_writes_the_set_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main([str(out), "--per-class", "2", "--size-range", "64", "80", "--seed", "1"])
    assert code == 0
    assert len(list((out / "images").glob("*.jpg"))) == 12
    summary = capsys.readouterr().out
    assert "Wrote 12 synthetic images" in summary and str(out) in summary
    # Running again over its own output replaces it rather than failing.
    assert main([str(out), "--per-class", "1", "--size-range", "64", "80"]) == 0
    assert len(list((out / "images").glob("*.jpg"))) == 6


def test_cli_refuses_a_directory_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.jpg").write_bytes(b"precious")
    assert main([str(tmp_path / "photos"), "--per-class", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "photos" / "mine.jpg").read_bytes() == b"precious"


def test_help_says_the_images_are_synthetic(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "SYNTHETIC" in capsys.readouterr().out


def test_colour_and_background_alone_do_not_give_the_class_away(tmp_path: Path) -> None:
    """A nearest-centroid classifier on colour statistics stays near chance (1/6)."""
    out = generate_demo_dataset(
        tmp_path / "colour", per_class=24, seed=5, size_range=(64, 96), progress=False
    )
    dataset = discover_dataset(out)
    features, labels = [], []
    for sample in dataset.samples:
        with Image.open(sample.path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3) / 255
        histograms = [np.histogram(pixels[:, c], bins=8, range=(0, 1))[0] for c in range(3)]
        shares = np.concatenate(histograms) / len(pixels)
        features.append(np.concatenate([pixels.mean(0), pixels.std(0), shares]))
        labels.append(dataset.class_names.index(sample.label))
    x, y = np.array(features), np.array(labels)
    train = np.arange(len(y)) % 2 == 0
    centroids = np.stack([x[train & (y == k)].mean(0) for k in range(6)])
    distances = ((x[~train][:, None] - centroids[None]) ** 2).sum(-1)
    accuracy = float((distances.argmin(1) == y[~train]).mean())
    assert accuracy < 0.4, f"colour statistics alone reach {accuracy:.2f}"

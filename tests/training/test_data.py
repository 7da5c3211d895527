"""Dataset discovery (both layouts, every bad-input error), fingerprint and split."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from kitchenware.training.data import (
    DataError,
    Sample,
    Split,
    dataset_fingerprint,
    discover_dataset,
    read_split,
    split_dataset,
    write_split,
)

ImageWriter = Callable[..., Path]


def _folders(root: Path, write_image: ImageWriter, counts: dict[str, int]) -> Path:
    for offset, (label, count) in enumerate(counts.items()):
        for i in range(count):
            write_image(root / label / f"{label}_{i}.jpg", seed=1000 * offset + i)
    return root


def _kaggle(root: Path, write_image: ImageWriter, rows: list[tuple[str, str]]) -> Path:
    for seed, (image_id, _) in enumerate(rows):
        name = image_id if "." in image_id else f"{image_id}.jpg"
        write_image(root / "images" / name, seed=seed)
    lines = ["Id,label", *(f"{image_id},{label}" for image_id, label in rows)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


# ---- discovery -------------------------------------------------------------------------


def test_folders_layout_ignores_hidden_and_non_image_files(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    root = _folders(tmp_path / "data", write_image, {"cup": 3, "plate": 3})
    write_image(root / "cup" / "UPPER.JPEG", seed=99)
    write_image(root / "plate" / "alpha.png", mode="RGBA", fmt="PNG")
    write_image(root / "cup" / ".hidden.jpg")
    (root / "cup" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("top-level files are not classes")

    dataset = discover_dataset(root)

    assert dataset.layout == "folders"
    assert dataset.root == root.resolve()
    assert dataset.class_names == ("cup", "plate")
    assert dataset.class_counts() == {"cup": 4, "plate": 4}
    names = {s.path.name for s in dataset.samples}
    assert {"UPPER.JPEG", "alpha.png"} <= names and ".hidden.jpg" not in names


def test_kaggle_layout_reads_ids_with_and_without_extension(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    rows = [("0000", "cup"), ("0001", "cup"), ("0002", "cup")]
    rows += [("0003", "fork"), ("0004.png", "fork"), ("0005", "fork")]
    root = _kaggle(tmp_path / "kaggle", write_image, rows)

    dataset = discover_dataset(root)

    assert dataset.layout == "kaggle"
    assert dataset.class_counts() == {"cup": 3, "fork": 3}
    by_name = {s.path.name: s.label for s in dataset.samples}
    assert by_name["0000.jpg"] == "cup" and by_name["0004.png"] == "fork"


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere.*does not exist"):
        discover_dataset(tmp_path / "nowhere")


def test_directory_with_neither_layout_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"neither a train\.csv .* nor class folders"):
        discover_dataset(tmp_path)


def test_empty_class_folder_is_named(tmp_path: Path, write_image: ImageWriter) -> None:
    root = _folders(tmp_path / "data", write_image, {"cup": 3, "plate": 3})
    (root / "knife").mkdir()
    with pytest.raises(DataError, match=r"knife .* contain no images"):
        discover_dataset(root)


def test_csv_missing_columns_names_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "train.csv").write_text("Id,class\n0000,cup\n")
    with pytest.raises(DataError, match=r"train\.csv is missing column\(s\) label"):
        discover_dataset(tmp_path)


def test_csv_rows_without_images_list_first_few_and_count(
    tmp_path: Path, write_image: ImageWriter
) -> None:
    rows = [(f"{i:04d}", "cup" if i % 2 else "fork") for i in range(12)]
    root = _kaggle(tmp_path / "kaggle", write_image, rows)
    for i in range(2, 10):
        (root / "images" / f"{i:04d}.jpg").unlink()
    with pytest.raises(DataError) as caught:
        discover_dataset(root)
    message = str(caught.value)
    assert "train.csv lists 8 image(s) missing" in message
    assert "0002.jpg" in message and "and 3 more" in message


def test_unknown_labels_are_listed(tmp_path: Path, write_image: ImageWriter) -> None:
    root = _folders(tmp_path / "data", write_image, {"cup": 3, "plate": 3, "teapot": 3})
    with pytest.raises(DataError, match=r"unknown labels teapot \(3 images\)"):
        discover_dataset(root, allowed_labels=["cup", "plate", "fork"])


def test_single_class_is_refused(tmp_path: Path, write_image: ImageWriter) -> None:
    root = _folders(tmp_path / "data", write_image, {"cup": 4})
    with pytest.raises(DataError, match=r"1 class\(es\) \(cup\); a classifier needs at least 2"):
        discover_dataset(root)


def test_class_too_small_to_split_is_named(tmp_path: Path, write_image: ImageWriter) -> None:
    root = _folders(tmp_path / "data", write_image, {"cup": 5, "spoon": 2})
    with pytest.raises(DataError, match=r"too few images to split for class\(es\) spoon \(2\)"):
        discover_dataset(root)


def test_duplicate_csv_ids_are_refused(tmp_path: Path, write_image: ImageWriter) -> None:
    root = _kaggle(tmp_path / "k", write_image, [("0000", "cup"), ("0001", "cup")])
    (root / "train.csv").write_text("Id,label\n0000,cup\n0000,fork\n0001,cup\n")
    with pytest.raises(DataError, match=r"lists 1 Id\(s\) more than once: 0000"):
        discover_dataset(root)


# ---- fingerprint -----------------------------------------------------------------------


def test_fingerprint_follows_content_and_labels_not_location(
    demo_dataset_dir: Path, tmp_path: Path
) -> None:
    original = discover_dataset(demo_dataset_dir)
    fingerprint = dataset_fingerprint(original.samples)
    assert fingerprint.startswith("sha256:") and len(fingerprint) == len("sha256:") + 16

    copy = tmp_path / "copy"
    shutil.copytree(demo_dataset_dir, copy)
    assert dataset_fingerprint(discover_dataset(copy).samples) == fingerprint

    relabelled = [Sample(s.path, "cup") for s in original.samples]
    assert dataset_fingerprint(relabelled) != fingerprint
    (copy / "images" / "0000.jpg").write_bytes(b"changed")
    assert dataset_fingerprint(discover_dataset(copy).samples) != fingerprint


# ---- split -----------------------------------------------------------------------------


def _samples(counts: dict[str, int]) -> list[Sample]:
    return [
        Sample(Path(f"/d/{label}/{i}.jpg"), label) for label, n in counts.items() for i in range(n)
    ]


def test_split_is_stratified_disjoint_and_complete() -> None:
    samples = _samples({"cup": 100, "fork": 40, "plate": 3, "knife": 7})
    split = split_dataset(samples, val_fraction=0.2, test_fraction=0.1, seed=0)

    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == len(samples) and set().union(*parts) == set(samples)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for subset in (split.train, split.val, split.test):
        assert set(Counter(s.label for s in subset)) == {"cup", "fork", "plate", "knife"}
    assert Counter(s.label for s in split.val)["cup"] == 20
    assert Counter(s.label for s in split.test)["cup"] == 10
    assert Counter(s.label for s in split.test)["fork"] == 4


def test_split_is_deterministic_per_seed() -> None:
    samples = _samples({"cup": 30, "fork": 30})
    same = split_dataset(samples, seed=5), split_dataset(list(reversed(samples)), seed=5)
    assert same[0] == same[1]
    assert split_dataset(samples, seed=6).test != same[0].test


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.1, 1.0), (0.6, 0.4)])
def test_split_refuses_invalid_fractions(val: float, test: float) -> None:
    with pytest.raises(DataError, match="fraction"):
        split_dataset(_samples({"cup": 10, "fork": 10}), val_fraction=val, test_fraction=test)


def test_split_file_round_trips_with_relative_paths(demo_dataset_dir: Path, tmp_path: Path) -> None:
    dataset = discover_dataset(demo_dataset_dir)
    split = split_dataset(dataset.samples, seed=1)
    path = write_split(split, tmp_path / "run" / "split.csv", root=dataset.root)

    lines = path.read_text().splitlines()
    assert lines[0] == "path,label,subset"
    assert lines[1].startswith("images/")
    assert len(lines) == 1 + len(dataset.samples)
    assert read_split(path, dataset.root) == split


def test_read_split_names_missing_images(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    write_split(Split(train=tuple(_samples({"cup": 1})), val=(), test=()), path)
    with pytest.raises(DataError, match=r"split\.csv lists 1 image\(s\) not found"):
        read_split(path, tmp_path)

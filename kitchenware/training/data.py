"""Find labelled images on disk, fingerprint them and split them reproducibly.

Two layouts are accepted:

- Kaggle: ``root/train.csv`` with columns ``Id,label`` and ``root/images/<Id>.jpg``
  (an Id that already carries an extension is used as is).
- Folders: ``root/<class>/<image>``, one folder per class.
"""

from __future__ import annotations

import csv
import hashlib
import os
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.preprocessing import IMAGE_SUFFIXES

KAGGLE_CSV = "train.csv"
KAGGLE_IMAGES = "images"
KAGGLE_COLUMNS = ("Id", "label")
SPLIT_COLUMNS = ("path", "label", "subset")
SUBSETS = ("train", "val", "test")
MIN_IMAGES_PER_CLASS = 3  # one each for train, validation and test
_SHOW = 5  # how many offending names an error message lists


class DataError(ValueError):
    """A dataset problem a user must fix; the message names the file or directory."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass(frozen=True)
class Dataset:
    root: Path
    layout: str  # "kaggle" | "folders"
    samples: tuple[Sample, ...]
    class_names: tuple[str, ...]  # sorted

    def class_counts(self) -> dict[str, int]:
        counts = Counter(sample.label for sample in self.samples)
        return {name: counts[name] for name in self.class_names}


@dataclass(frozen=True)
class Split:
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def subsets(self) -> dict[str, tuple[Sample, ...]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def _listing(items: Sequence[str], total: int | None = None) -> str:
    """'a, b, c' or 'a, b, c and 7 more' for error messages."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:_SHOW])
    return shown if total <= _SHOW else f"{shown} and {total - _SHOW} more"


def _is_image_file(path: Path) -> bool:
    return (
        not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )


def _read_kaggle(root: Path) -> list[Sample]:
    csv_path = root / KAGGLE_CSV
    images_dir = root / KAGGLE_IMAGES
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in KAGGLE_COLUMNS if name not in columns]
            if missing:
                raise DataError(
                    f"{csv_path} is missing column(s) {', '.join(missing)}: expected a header "
                    f"row with {','.join(KAGGLE_COLUMNS)}, found {','.join(columns) or 'nothing'}."
                )
            reader.fieldnames = columns
            rows = [(row["Id"], row["label"]) for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path} is not a UTF-8 text CSV file ({exc.reason}).") from exc
    if not images_dir.is_dir():
        raise DataError(f"{csv_path} needs its images in {images_dir}, which does not exist.")

    samples, missing_files, blank_rows = [], [], []
    seen: Counter[str] = Counter()
    for line, (raw_id, raw_label) in enumerate(rows, start=2):
        image_id, label = (raw_id or "").strip(), (raw_label or "").strip()
        if not image_id or not label:
            blank_rows.append(str(line))
            continue
        seen[image_id] += 1
        name = image_id if Path(image_id).suffix.lower() in IMAGE_SUFFIXES else image_id + ".jpg"
        path = images_dir / name
        if not path.is_file():
            missing_files.append(name)
            continue
        samples.append(Sample(path, label))
    if blank_rows:
        raise DataError(
            f"{csv_path} has {len(blank_rows)} row(s) with an empty Id or label "
            f"(line {_listing(blank_rows)})."
        )
    repeated = sorted(image_id for image_id, count in seen.items() if count > 1)
    if repeated:
        raise DataError(
            f"{csv_path} lists {len(repeated)} Id(s) more than once: {_listing(repeated)}."
        )
    if missing_files:
        raise DataError(
            f"{csv_path} lists {len(missing_files)} image(s) missing from {images_dir}: "
            f"{_listing(missing_files)}."
        )
    return samples


def _read_folders(root: Path) -> list[Sample]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_folder = {folder: sorted(filter(_is_image_file, folder.iterdir())) for folder in folders}
    if not any(per_folder.values()):
        raise DataError(
            f"{root} has neither a {KAGGLE_CSV} (Kaggle layout) nor class folders with images "
            f"({', '.join(IMAGE_SUFFIXES)}) in them."
        )
    empty = [folder.name for folder, files in per_folder.items() if not files]
    if empty:
        raise DataError(
            f"Class folder(s) {_listing(empty)} in {root} contain no images "
            f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder."
        )
    return [Sample(path, folder.name) for folder, files in per_folder.items() for path in files]


def discover_dataset(
    root: Path,
    *,
    allowed_labels: Iterable[str] | None = None,
    min_images_per_class: int = MIN_IMAGES_PER_CLASS,
) -> Dataset:
    """Find the labelled images under `root` in either layout; DataError names any problem."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"Data directory {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"Data path {root} is not a directory.")
    root = root.resolve()
    if (root / KAGGLE_CSV).is_file():
        layout, samples, source = "kaggle", _read_kaggle(root), root / KAGGLE_CSV
    else:
        layout, samples, source = "folders", _read_folders(root), root

    counts = Counter(sample.label for sample in samples)
    if allowed_labels is not None:
        allowed = set(allowed_labels)
        unknown = sorted(label for label in counts if label not in allowed)
        if unknown:
            n_unknown = sum(counts[label] for label in unknown)
            raise DataError(
                f"{source} has unknown labels {_listing(unknown)} ({n_unknown} images); "
                f"expected only {', '.join(sorted(allowed))}."
            )
    if len(counts) < 2:
        found = ", ".join(counts) or "none"
        raise DataError(
            f"{source} has {len(counts)} class(es) ({found}); a classifier needs at least 2."
        )
    small = sorted(label for label, count in counts.items() if count < min_images_per_class)
    if small:
        detail = ", ".join(f"{label} ({counts[label]})" for label in small)
        raise DataError(
            f"{source} has too few images to split for class(es) {detail}; each class needs at "
            f"least {min_images_per_class}."
        )
    ordered = tuple(sorted(samples, key=lambda s: (s.label, str(s.path))))
    return Dataset(root=root, layout=layout, samples=ordered, class_names=tuple(sorted(counts)))


def dataset_fingerprint(
    samples: Iterable[Sample],
    *,
    root: Path | None = None,
    content_hashes: Mapping[Path, str] | None = None,
) -> str:
    """Short, location-independent id of the labelled files: 'sha256:<16 hex digits>'.

    Paths are taken relative to `root` (default: the samples' common directory), so a
    copied dataset keeps its fingerprint. `content_hashes` reuses hashes already computed
    (e.g. by the data check) instead of reading the files again.
    """
    items = list(samples)
    if not items:
        raise DataError("Cannot fingerprint an empty list of samples.")
    base = (
        Path(root) if root is not None else Path(os.path.commonpath([s.path.parent for s in items]))
    )
    entries = []
    for sample in items:
        content = (content_hashes or {}).get(sample.path) or file_sha256(sample.path)
        relative = os.path.relpath(sample.path, base).replace(os.sep, "/")
        entries.append(f"{relative}\t{sample.label}\t{content}")
    digest = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
    return f"sha256:{digest[:16]}"


def _subset_sizes(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(val, test) sizes for one class: rounded, at least 1 each when the fraction is > 0."""
    n_val = round(count * val_fraction)
    n_test = round(count * test_fraction)
    if count >= MIN_IMAGES_PER_CLASS:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    while n_val + n_test >= count and (n_val or n_test):  # keep at least one training image
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split_dataset(
    samples: Iterable[Sample],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Split:
    """Stratified, seeded train/val/test split; each class with >= 3 images is in all three."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise DataError(f"{name} must be in [0, 1), got {value}.")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction + test_fraction must be below 1 to leave training images, "
            f"got {val_fraction} + {test_fraction}."
        )
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_class[sample.label].append(sample)
    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda s: str(s.path))
        # A generator per class keyed by its name: adding a class leaves the others' split alone.
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        shuffled = [members[i] for i in rng.permutation(len(members))]
        n_val, n_test = _subset_sizes(len(members), val_fraction, test_fraction)
        test.extend(shuffled[:n_test])
        val.extend(shuffled[n_test : n_test + n_val])
        train.extend(shuffled[n_test + n_val :])

    def ordered(items: list[Sample]) -> tuple[Sample, ...]:
        return tuple(sorted(items, key=lambda s: (s.label, str(s.path))))

    return Split(train=ordered(train), val=ordered(val), test=ordered(test))


def write_split(split: Split, path: Path, *, root: Path | None = None) -> Path:
    """Write the split as CSV (path,label,subset); paths relative to `root` where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = Path(root).resolve() if root is not None else None
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SPLIT_COLUMNS)
        for subset, samples in split.subsets().items():
            for sample in samples:
                shown = sample.path
                if base is not None and shown.resolve().is_relative_to(base):
                    shown = shown.resolve().relative_to(base)
                writer.writerow([shown.as_posix(), sample.label, subset])
    return path


def read_split(path: Path, root: Path) -> Split:
    """Read a split CSV written by `write_split`; relative paths are resolved against `root`."""
    path, root = Path(path), Path(root).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"Split file {path} does not exist.")
    subsets: dict[str, list[Sample]] = {name: [] for name in SUBSETS}
    missing: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in SPLIT_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(f"Split file {path} is missing column(s) {', '.join(absent)}.")
        for line, row in enumerate(reader, start=2):
            subset = row["subset"]
            if subset not in subsets:
                raise DataError(
                    f"Split file {path} line {line} has subset {subset!r}; "
                    f"expected one of {', '.join(SUBSETS)}."
                )
            sample_path = Path(row["path"])
            sample_path = sample_path if sample_path.is_absolute() else root / sample_path
            if not sample_path.is_file():
                missing.append(row["path"])
            subsets[subset].append(Sample(sample_path, row["label"]))
    if missing:
        raise DataError(
            f"Split file {path} lists {len(missing)} image(s) not found under {root}: "
            f"{_listing(missing)}."
        )
    return Split(
        train=tuple(subsets["train"]), val=tuple(subsets["val"]), test=tuple(subsets["test"])
    )

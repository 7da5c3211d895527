"""Export the stored corrections for retraining, in the Kaggle layout `train.py --data` reads.

    python -m kitchenware.serving.export OUT [--merge DATASET] [--url URL] [--images-dir DIR]

writes `OUT/train.csv` (columns Id,label) and `OUT/images/<Id>.<ext>`. With `--merge`, the
images of an existing dataset (Kaggle layout or one folder per class) come first, and a
correction of a photo that is already in it (same sha256) replaces that photo's label.
A photo corrected more than once keeps its latest correction. Ends with a summary.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from kitchenware.core.preprocessing import IMAGE_SUFFIXES
from kitchenware.serving.feedback import FeedbackStore
from kitchenware.serving.settings import get_settings

CSV_NAME, IMAGES_DIR = "train.csv", "images"


@dataclass
class Row:
    image_id: str
    label: str
    source: Path
    origin: str  # "dataset" or "feedback"


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _file_name(image_id: str) -> str:
    return image_id if Path(image_id).suffix.lower() in IMAGE_SUFFIXES else image_id + ".jpg"


def dataset_rows(root: Path) -> list[Row]:
    """The labelled images of a dataset in the Kaggle layout or one folder per class."""
    if (root / CSV_NAME).is_file():
        with (root / CSV_NAME).open(newline="") as handle:
            return [
                Row(r["Id"], r["label"], root / IMAGES_DIR / _file_name(r["Id"]), "dataset")
                for r in csv.DictReader(handle)
            ]
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                image_id = f"{folder.name}__{path.name}"  # keeps its suffix: used as is
                rows.append(Row(image_id, folder.name, path, "dataset"))
    if not rows:
        raise SystemExit(f"{root} has neither a {CSV_NAME} nor class folders with images.")
    return rows


def feedback_rows(store: FeedbackStore) -> tuple[dict[str, Row], int]:
    """The latest correction per photo (by sha256), and how many were superseded."""
    latest: dict[str, Row] = {}
    superseded = 0
    for record in store.feedback_records():  # in id order: later corrections win
        image_id = f"feedback-{record.id:06d}"
        if record.image_ext != "jpg":
            image_id += f".{record.image_ext}"
        path = store.image_path(record.image_sha256, record.image_ext)
        superseded += record.image_sha256 in latest
        latest[record.image_sha256] = Row(image_id, record.label, path, "feedback")
    return latest, superseded


def export(store: FeedbackStore, out: Path, merge: Path | None = None) -> dict[str, int]:
    corrections, superseded = feedback_rows(store)
    rows: list[Row] = []
    relabelled = 0
    if merge is not None:
        for row in dataset_rows(merge):
            sha = _sha256(row.source) if row.source.is_file() else ""
            if sha in corrections:
                fix = corrections.pop(sha)
                relabelled += fix.label != row.label
                row = Row(row.image_id, fix.label, row.source, "feedback")
            rows.append(row)
    rows.extend(corrections.values())
    missing = [row for row in rows if not row.source.is_file()]
    rows = [row for row in rows if row.source.is_file()]
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    for row in rows:
        target = images / _file_name(row.image_id)
        if not target.exists():
            try:
                os.link(row.source, target)  # same filesystem: no copy
            except OSError:
                shutil.copy2(row.source, target)
    with (out / CSV_NAME).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "label"])
        writer.writerows([row.image_id, row.label] for row in rows)
    return {
        "rows": len(rows),
        "from_feedback": sum(row.origin == "feedback" for row in rows),
        "from_dataset": sum(row.origin == "dataset" for row in rows),
        "relabelled_dataset_photos": relabelled,
        "superseded_corrections": superseded,
        "missing_photos": len(missing),
    }


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m kitchenware.serving.export",
        description="Write the stored corrections as a Kaggle-layout dataset (train.csv + "
        "images/) that `train.py --data OUT` retrains on.",
    )
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--merge", type=Path, help="an existing dataset to include first")
    parser.add_argument(
        "--url",
        default=settings.feedback_url,
        help="feedback store URL (default: KITCHENWARE_FEEDBACK_URL or the SQLite file under "
        "the BentoML home)",
    )
    parser.add_argument(
        "--images-dir", default=settings.feedback_images_dir or None, help="stored photos"
    )
    args = parser.parse_args(argv)
    if (args.out / CSV_NAME).exists():
        parser.error(f"{args.out / CSV_NAME} exists already: choose a new folder.")
    store = FeedbackStore(args.url, args.images_dir)
    try:
        summary = export(store, args.out, args.merge)
    finally:
        store.close()
    print(f"Exported {summary['rows']} images to {args.out} ({CSV_NAME} + {IMAGES_DIR}/):")
    for key, value in summary.items():
        print(f"  {key.replace('_', ' ')}: {value}")
    if summary["missing_photos"]:
        print(f"  ({summary['missing_photos']} corrections had no photo left and were skipped)")
    print(f"Retrain: python train.py --data {args.out}")
    return 0 if summary["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())

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
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from kitchenware.runtime.files import file_sha256
from kitchenware.runtime.preprocessing import IMAGE_SUFFIXES
from kitchenware.serving.feedback.store import FeedbackStore, open_store
from kitchenware.serving.settings import get_settings

CSV_NAME, IMAGES_DIR = "train.csv", "images"


class ExportError(ValueError):
    """A problem with the command's inputs, told to the user in one sentence."""


@dataclass
class Row:
    image_id: str
    label: str
    source: Path
    origin: str  # "dataset" or "feedback"


def _file_name(image_id: str) -> str:
    return image_id if Path(image_id).suffix.lower() in IMAGE_SUFFIXES else image_id + ".jpg"


def check_dataset_folder(root: Path) -> None:
    if not root.is_dir():
        raise ExportError(
            f"--merge {root}: no such folder (give a dataset folder, or leave --merge out)."
        )


def dataset_rows(root: Path) -> list[Row]:
    """The labelled images of a dataset in the Kaggle layout or one folder per class."""
    check_dataset_folder(root)
    if (root / CSV_NAME).is_file():
        if not (root / IMAGES_DIR).is_dir():
            # The layout train.py reads: a train.csv alone is not a dataset.
            raise ExportError(
                f"{root / CSV_NAME} needs its images in {root / IMAGES_DIR}, which does not exist."
            )
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
        raise ExportError(f"{root} has neither a {CSV_NAME} nor class folders with images.")
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
            sha = file_sha256(row.source) if row.source.is_file() else ""
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
        "corrections_without_photo": sum(row.origin == "feedback" for row in missing),
        "dataset_rows_without_image": sum(row.origin == "dataset" for row in missing),
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
    try:
        if args.merge is not None:
            check_dataset_folder(args.merge)  # before the store opens: nothing created by a typo
        with open_store(args.url, args.images_dir) as store:
            summary = export(store, args.out, args.merge)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Exported {summary['rows']} images to {args.out} ({CSV_NAME} + {IMAGES_DIR}/):")
    for key, value in summary.items():
        print(f"  {key.replace('_', ' ')}: {value}")
    if summary["corrections_without_photo"]:
        print(
            f"  ({summary['corrections_without_photo']} corrections had no photo left "
            "and were skipped)"
        )
    if summary["dataset_rows_without_image"]:
        print(
            f"  ({summary['dataset_rows_without_image']} rows of {args.merge / CSV_NAME} have no "
            f"image under {args.merge / IMAGES_DIR} and were skipped)"
        )
    print(
        f"Retrain the served model from the store directly: make retrain (see the README); "
        f"or train a new one: python train.py --data {args.out}"
    )
    return 0 if summary["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())

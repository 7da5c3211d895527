"""What to score: each input becomes an `Item` (the id written to the output, and a path).

`--data` may be a folder (searched recursively for image files; a folder holding Kaggle's
`test.csv` and `images/` is read as that layout), a Kaggle `test.csv` itself, a glob pattern,
or a text file listing one path per line.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from kitchenware.runtime.preprocessing import IMAGE_SUFFIXES

KAGGLE_CSV = "test.csv"
KAGGLE_IMAGES = "images"
KAGGLE_ID_COLUMN = "Id"
GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """`--data` names nothing usable; the message says what was expected."""


@dataclass(frozen=True)
class Item:
    id: str
    path: Path


@dataclass(frozen=True)
class Inputs:
    items: list[Item]
    layout: str  # "kaggle", "folder", "glob" or "list": said in the summary
    skipped: int = 0  # files a folder walk left out because of their suffix


def _ids_from_relative(paths: list[Path], root: Path) -> list[Item]:
    """Id = path below `root` without its suffix (Kaggle style: images/0012.jpg -> 0012).

    Two files that differ only by suffix (a.jpg, a.png) keep their suffix, so ids stay unique.
    """
    relative = [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in paths]
    stems = [str(Path(r).with_suffix("")) for r in relative]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [
        Item(stem if counts[stem] == 1 else rel, path)
        for stem, rel, path in zip(stems, relative, paths, strict=True)
    ]


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def from_folder(root: Path) -> Inputs:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _is_hidden(p, root))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise InputError(f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}.")
    return Inputs(_ids_from_relative(images, root), "folder", skipped=len(files) - len(images))


def from_kaggle_csv(csv_path: Path) -> Inputs:
    """Kaggle's test.csv (column Id) with the photos in images/<Id>.jpg beside it."""
    images_dir = csv_path.parent / KAGGLE_IMAGES
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if KAGGLE_ID_COLUMN not in (reader.fieldnames or []):
            raise InputError(
                f"{csv_path} has no '{KAGGLE_ID_COLUMN}' column (columns: "
                f"{', '.join(reader.fieldnames or []) or 'none'}); Kaggle's test.csv has one."
            )
        ids = [row[KAGGLE_ID_COLUMN].strip() for row in reader if row[KAGGLE_ID_COLUMN].strip()]
    if not ids:
        raise InputError(f"{csv_path} lists no ids.")
    if len(set(ids)) != len(ids):
        raise InputError(f"{csv_path} lists some ids more than once.")
    items = []
    for image_id in ids:
        path = images_dir / f"{image_id}.jpg"
        if not path.exists():  # the competition's files are .jpg; accept other suffixes too
            found = sorted(images_dir.glob(f"{glob.escape(image_id)}.*"))
            path = found[0] if found else path
        items.append(Item(image_id, path))
    return Inputs(items, "kaggle")


def from_glob(pattern: str) -> Inputs:
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not matches:
        raise InputError(f"The pattern {pattern!r} matches no files.")
    # Ids relative to the pattern's fixed part: photos/**/*.jpg -> ids below photos/.
    fixed = []
    for part in Path(pattern).parts:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    return Inputs(_ids_from_relative(matches, root), "glob")


def from_list(list_path: Path) -> Inputs:
    """One path per line (blank lines and # comments ignored), relative to the list's folder."""
    base = list_path.parent
    lines = [line.strip() for line in list_path.read_text().splitlines()]
    paths = [Path(line) for line in lines if line and not line.startswith("#")]
    if not paths:
        raise InputError(f"{list_path} lists no files.")
    resolved = [p if p.is_absolute() else base / p for p in paths]
    return Inputs(_ids_from_relative(resolved, base), "list")


def discover(data: str) -> Inputs:
    """Interpret `--data` (see the module docstring)."""
    path = Path(data)
    if path.is_dir():
        if (path / KAGGLE_CSV).is_file() and (path / KAGGLE_IMAGES).is_dir():
            return from_kaggle_csv(path / KAGGLE_CSV)
        return from_folder(path)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return from_kaggle_csv(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return Inputs([Item(path.stem, path)], "list")
        return from_list(path)
    if GLOB_CHARS & set(data):
        return from_glob(data)
    raise InputError(
        f"{data} does not exist: pass a folder, Kaggle's test.csv, a glob such as "
        f"'photos/**/*.jpg' (quoted), or a text file listing one path per line."
    )


def read_error(path: Path) -> tuple[str, str] | None:
    """Why `path` cannot be read at all (reason, message), or None if it can be opened."""
    if not path.exists():
        return "missing", f"{path} does not exist."
    if not path.is_file():
        return "not_a_file", f"{path} is not a regular file."
    if not os.access(path, os.R_OK):
        return "unreadable", f"{path} is not readable (permissions)."
    return None

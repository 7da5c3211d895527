"""Small file helpers every stage shares: content hashes and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def atomic_writer(path: Path | str, mode: str = "w", *, durable: bool = False) -> Iterator[IO[Any]]:
    """A file that appears at `path` complete or not at all: written to a temp file beside it,
    then renamed over it. `durable`: fsync the file and the rename, so a power cut keeps it
    too (without, a process crash still leaves the whole file or none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        encoding, newline = (None, None) if "b" in mode else ("utf-8", "")
        with open(fd, mode, encoding=encoding, newline=newline) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` survive a crash."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_json(data: Any, path: Path | str) -> Path:
    """Write `data` as indented JSON atomically, so readers never see half a file."""
    with atomic_writer(path) as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    return Path(path)

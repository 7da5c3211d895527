"""Store faults caused for real, shared by tests/serving/test_store_faults.py and
bench/store_faults.py: a small tmpfs to fill up, an immutable folder (chattr +i), a SQLite file
held by another connection's exclusive lock. Mounting and chattr need root (CAP_SYS_ADMIN,
CAP_LINUX_IMMUTABLE)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn


def _cannot(reason: str) -> NoReturn:
    raise RuntimeError(reason)


@contextlib.contextmanager
def small_tmpfs(
    path: Path, size: str = "3m", refused: Callable[[str], NoReturn] = _cannot
) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (made here); `refused` is called when this process
    may not mount (tests pass pytest.skip)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mounted.returncode != 0:
        refused("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros into `folder` until its file system is full; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def set_immutable(path: Path, immutable: bool, *, recursive: bool = False) -> None:
    """chattr +i / -i: not even root may then create, write or delete in `path`."""
    flag = "+i" if immutable else "-i"
    subprocess.run(["chattr", *(["-R"] if recursive else []), flag, str(path)], check=True)


def lock_sqlite(db: Path) -> sqlite3.Connection:
    """Hold `db` with BEGIN EXCLUSIVE, as a backup or a stray sqlite3 shell does; end it with
    `.execute("ROLLBACK")` and `.close()` (from any thread)."""
    locker = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    return locker

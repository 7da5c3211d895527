"""Where scores go: a resumable journal while running, then the final file written atomically.

Every finished batch is appended to `<out>.partial` (JSON lines, flushed), so a killed run
loses at most the batch in flight. A rerun reads the journal back and skips those ids. At
the end the output (CSV, Kaggle's `Id,label` by default, or JSON lines) is written to a
temporary file in the same folder and renamed over `<out>`: each id exactly once, in input
order, never a half-written file. The journal is removed once every input has a score.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from kitchenware.runtime.files import atomic_writer

from .inputs import Item

JOURNAL_SUFFIX = ".partial"
JOURNAL_VERSION = 1
FORMATS = ("csv", "jsonl")


class ResumeError(ValueError):
    """The journal beside the output was written by another model or backend."""


@dataclass(frozen=True)
class Failure:
    item: Item
    reason: str
    error: str


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + JOURNAL_SUFFIX)


def default_errors_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.errors.csv")


def _compact(value: float) -> float:
    return float(f"{value:.9g}")  # 9 significant digits round-trip a float32 exactly


class Journal:
    """Append-only record of finished ids and their probabilities."""

    def __init__(self, path: Path, header: dict[str, Any], *, restart: bool = False) -> None:
        self.path = path
        self.header = {"kitchenware_batch_journal": JOURNAL_VERSION, **header}
        self.done: dict[str, list[float]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if restart:
            path.unlink(missing_ok=True)
        if path.exists():
            self._read_back()
        self._handle: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        if not self.done and path.stat().st_size == 0:
            self._write_line(self.header)

    def _read_back(self) -> None:
        raw = self.path.read_bytes()
        # A kill mid-write leaves a last line without its newline: cut it off and redo that id.
        complete = raw[: raw.rfind(b"\n") + 1]
        lines = complete.decode("utf-8").splitlines()
        if not lines:
            self.path.write_bytes(b"")
            return
        header = json.loads(lines[0])
        for key in ("model_sha256", "backend", "class_names"):
            if header.get(key) != self.header.get(key):
                raise ResumeError(
                    f"{self.path} was written with {key}={header.get(key)!r}, not "
                    f"{self.header.get(key)!r}: rerun with --restart to start over, or use the "
                    "same model and backend to resume."
                )
        for line in lines[1:]:
            row = json.loads(line)
            self.done[row["id"]] = row["p"]
        if len(complete) != len(raw):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))

    def _write_line(self, payload: dict[str, Any]) -> None:
        self._handle.write(json.dumps(payload, separators=(",", ":")) + "\n")

    def append(self, items: list[Item], probabilities: np.ndarray) -> None:
        for item, row in zip(items, probabilities, strict=True):
            scores = [_compact(float(p)) for p in row]
            self.done[item.id] = scores
            self._write_line({"id": item.id, "p": scores})
        self._handle.flush()  # a kill now loses nothing already scored
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def label_of(scores: list[float], class_names: list[str]) -> str:
    return class_names[int(np.argmax(scores))]


def write_output(
    out: Path,
    fmt: str,
    items: Iterable[Item],
    done: dict[str, list[float]],
    class_names: list[str],
    *,
    probabilities: bool,
) -> Counter[str]:
    """The final file, in input order, ids without a score left out; returns label counts."""
    counts: Counter[str] = Counter()
    with atomic_writer(out, durable=True) as handle:
        writer = csv.writer(handle) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(["Id", "label", *(class_names if probabilities else [])])
        for item in items:
            scores = done.get(item.id)
            if scores is None:
                continue
            label = label_of(scores, class_names)
            counts[label] += 1
            if writer is not None:
                extra = [f"{p:.8g}" for p in scores] if probabilities else []
                writer.writerow([item.id, label, *extra])
                continue
            row: dict[str, Any] = {
                "id": item.id,
                "path": str(item.path),
                "label": label,
                "confidence": max(scores),
            }
            if probabilities:
                row["probabilities"] = dict(zip(class_names, scores, strict=True))
            handle.write(json.dumps(row) + "\n")
    return counts


def write_errors(path: Path, failures: list[Failure]) -> None:
    """The files that could not be scored and why."""
    with atomic_writer(path, durable=True) as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "path", "reason", "error"])
        for failure in failures:
            writer.writerow(
                [failure.item.id, str(failure.item.path), failure.reason, failure.error]
            )

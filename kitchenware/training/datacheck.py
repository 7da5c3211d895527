"""The data check run before training: every file decoded with the serving rules.

Severity of a finding:
- ``bad``: the file cannot be used (unreadable, not an image, truncated, tiny, or identical
  bytes under two labels). Training stops unless told to skip these files.
- ``dropped``: an extra copy of an image already present with the same label; training
  keeps one copy so the split cannot leak a duplicate into the test set.
- ``info``: worth knowing but harmless (a non-RGB mode that converts to RGB).
"""

from __future__ import annotations

import hashlib
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kitchenware.runtime.preprocessing import (
    CorruptImageError,
    ImageDecodeError,
    TooManyPixelsError,
    decode_image,
    open_image,
)
from kitchenware.training.data import DataError, Dataset, Sample

SEVERITIES = ("bad", "dropped", "info")
_LIST_IN_ERROR = 10  # how many bad files an error message names


@dataclass(frozen=True)
class FileProblem:
    path: Path
    reason: str  # e.g. "corrupt", "not an image", "tiny", "duplicate", "conflicting duplicate"
    detail: str
    severity: str = "bad"  # one of SEVERITIES


@dataclass(frozen=True)
class _FileFacts:
    """What one worker learns about one file."""

    sample: Sample
    sha256: str | None = None
    size: tuple[int, int] | None = None
    mode: str | None = None
    image_format: str | None = None
    problem: FileProblem | None = None


@dataclass
class DataReport:
    root: Path
    layout: str
    total_files: int
    problems: list[FileProblem]
    class_counts: dict[str, int]
    duplicate_groups: list[list[Path]]
    imbalance_ratio: float
    size_summary: dict[str, int]
    mode_counts: dict[str, int]
    format_counts: dict[str, int]
    # Content hash per readable file, so the dataset fingerprint need not read files again.
    content_hashes: dict[Path, str] = field(default_factory=dict, repr=False)

    def paths_with(self, *severities: str) -> set[Path]:
        return {p.path for p in self.problems if p.severity in severities}

    @property
    def bad_paths(self) -> set[Path]:
        """Files training must exclude: unusable files and extra duplicate copies."""
        return self.paths_with("bad", "dropped")

    @property
    def blocking_paths(self) -> set[Path]:
        """Unusable files: training stops on these unless asked to skip them."""
        return self.paths_with("bad")

    def _relative(self, path: Path) -> str:
        return (
            path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
        )

    def format_table(self, max_files: int = 15) -> str:
        """Aligned text: per-class counts, image stats, problem summary, first problem files."""
        lines = [f"Data check of {self.root} ({self.layout} layout, {self.total_files} files)"]
        width = max([5, *(len(name) for name in self.class_counts)])
        lines.append(f"  {'class':<{width}}  {'images':>6}  {'share':>6}")
        for name, count in self.class_counts.items():
            share = count / self.total_files if self.total_files else 0.0
            lines.append(f"  {name:<{width}}  {count:>6}  {share:>6.1%}")
        lines.append(f"  {'total':<{width}}  {self.total_files:>6}")
        lines.append(f"Imbalance ratio (largest / smallest class): {self.imbalance_ratio:.2f}")
        if self.size_summary:
            s = self.size_summary
            lines.append(
                f"Image sizes: width {s['width_min']}-{s['width_max']} "
                f"(median {s['width_median']}), "
                f"height {s['height_min']}-{s['height_max']} (median {s['height_median']})"
            )
        lines.append(
            "Modes: " + _counts(self.mode_counts) + "; formats: " + _counts(self.format_counts)
        )
        by_reason = Counter((p.severity, p.reason) for p in self.problems)
        if not by_reason:
            lines.append("Problems: none")
            return "\n".join(lines)
        lines.append("Problems:")
        lines.append(f"  {'severity':<8}  {'reason':<22}  {'files':>5}")
        for severity in SEVERITIES:
            for (sev, reason), count in sorted(by_reason.items()):
                if sev == severity:
                    lines.append(f"  {severity:<8}  {reason:<22}  {count:>5}")
        ordered = sorted(self.problems, key=lambda p: (SEVERITIES.index(p.severity), str(p.path)))
        lines.append(f"First {min(max_files, len(ordered))} of {len(ordered)} problem files:")
        shown = [
            (p.severity, p.reason, self._relative(p.path), p.detail) for p in ordered[:max_files]
        ]
        path_width = max(len(row[2]) for row in shown)
        for severity, reason, path, detail in shown:
            lines.append(f"  {severity:<8}  {reason:<22}  {path:<{path_width}}  {detail}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary; training writes it into the run directory."""
        return {
            "root": str(self.root),
            "layout": self.layout,
            "total_files": self.total_files,
            "class_counts": self.class_counts,
            "imbalance_ratio": self.imbalance_ratio,
            "size_summary": self.size_summary,
            "mode_counts": self.mode_counts,
            "format_counts": self.format_counts,
            "problem_counts": dict(Counter(p.severity for p in self.problems)),
            "problems": [
                {
                    "path": self._relative(p.path),
                    "reason": p.reason,
                    "detail": p.detail,
                    "severity": p.severity,
                }
                for p in self.problems
            ],
            "duplicate_groups": [
                [self._relative(p) for p in group] for group in self.duplicate_groups
            ],
        }


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "none"


def _inspect(sample: Sample, min_side: int) -> _FileFacts:
    """Read, hash and fully decode one file with the same rules the service applies."""
    name = sample.path.name
    try:
        data = sample.path.read_bytes()
    except OSError as exc:
        return _FileFacts(
            sample, problem=FileProblem(sample.path, "unreadable", exc.strerror or str(exc))
        )
    sha = hashlib.sha256(data).hexdigest()
    try:
        header = open_image(data, name=name, max_pixels=None)
        size, mode, image_format = header.size, header.mode, header.format or "?"
        decode_image(data, name=name)  # full load: catches truncated files
    except TooManyPixelsError as exc:
        return _FileFacts(
            sample, sha, problem=FileProblem(sample.path, "too many pixels", str(exc))
        )
    except CorruptImageError as exc:
        return _FileFacts(sample, sha, problem=FileProblem(sample.path, "corrupt", str(exc)))
    except ImageDecodeError as exc:
        return _FileFacts(sample, sha, problem=FileProblem(sample.path, "not an image", str(exc)))
    problem = None
    if min(size) < min_side:
        problem = FileProblem(
            sample.path, "tiny", f"{size[0]}x{size[1]} px, smaller than {min_side} px on a side"
        )
    elif mode != "RGB":
        problem = FileProblem(sample.path, "non-RGB mode", f"{mode}, converted to RGB", "info")
    return _FileFacts(sample, sha, size, mode, image_format, problem)


def _duplicate_problems(facts: Iterable[_FileFacts]) -> tuple[list[list[Path]], list[FileProblem]]:
    """Group identical files; extra same-label copies are dropped, mixed labels are bad."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for fact in facts:
        if fact.sha256 is not None and (fact.problem is None or fact.problem.severity == "info"):
            groups[fact.sha256].append(fact.sample)
    duplicate_groups: list[list[Path]] = []
    problems: list[FileProblem] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        members = sorted(members, key=lambda s: str(s.path))
        duplicate_groups.append([s.path for s in members])
        labels = sorted({s.label for s in members})
        if len(labels) > 1:
            detail = "same bytes labelled " + ", ".join(
                f"{s.label} ({s.path.name})" for s in members
            )
            problems.extend(FileProblem(s.path, "conflicting duplicate", detail) for s in members)
        else:
            kept = members[0].path.name
            problems.extend(
                FileProblem(
                    s.path, "duplicate", f"same bytes as {kept}, extra copy dropped", "dropped"
                )
                for s in members[1:]
            )
    return duplicate_groups, problems


def check_dataset(dataset: Dataset, *, min_side: int = 32, progress: bool = True) -> DataReport:
    """Decode every file of `dataset` and summarise what training needs to know."""
    workers = min(8, (os.cpu_count() or 1) + 2)  # decoding releases the GIL; reading waits on disk
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda s: _inspect(s, min_side), dataset.samples)
        facts = list(
            tqdm(
                results,
                total=len(dataset.samples),
                desc="Checking images",
                unit="img",
                disable=not progress,
            )
        )
    duplicate_groups, duplicate_problems = _duplicate_problems(facts)
    conflicting = {p.path for p in duplicate_problems if p.severity == "bad"}
    problems = [
        f.problem
        for f in facts
        if f.problem is not None
        and not (f.problem.severity == "info" and f.sample.path in conflicting)
    ]
    problems.extend(duplicate_problems)

    class_counts = dataset.class_counts()
    nonzero = [count for count in class_counts.values() if count]
    imbalance = max(nonzero) / min(nonzero) if nonzero else 0.0
    sizes = [f.size for f in facts if f.size is not None]
    size_summary: dict[str, int] = {}
    if sizes:
        widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
        size_summary = {
            "width_min": min(widths),
            "width_median": int(statistics.median(widths)),
            "width_max": max(widths),
            "height_min": min(heights),
            "height_median": int(statistics.median(heights)),
            "height_max": max(heights),
        }
    return DataReport(
        root=dataset.root,
        layout=dataset.layout,
        total_files=len(dataset.samples),
        problems=problems,
        class_counts=class_counts,
        duplicate_groups=duplicate_groups,
        imbalance_ratio=round(imbalance, 3),
        size_summary=size_summary,
        mode_counts=dict(Counter(f.mode for f in facts if f.mode).most_common()),
        format_counts=dict(Counter(f.image_format for f in facts if f.image_format).most_common()),
        content_hashes={f.sample.path: f.sha256 for f in facts if f.sha256 is not None},
    )


def require_clean(report: DataReport, skip_bad: bool) -> set[Path]:
    """Paths training must leave out; DataError listing bad files unless `skip_bad`."""
    blocking = sorted(report.blocking_paths)
    if blocking and not skip_bad:
        reasons = {p.path: p.reason for p in report.problems if p.severity == "bad"}
        shown = ", ".join(
            f"{report._relative(p)} ({reasons[p]})" for p in blocking[:_LIST_IN_ERROR]
        )
        more = (
            f" and {len(blocking) - _LIST_IN_ERROR} more" if len(blocking) > _LIST_IN_ERROR else ""
        )
        raise DataError(
            f"{len(blocking)} unusable image file(s) in {report.root}: {shown}{more}; "
            "fix or remove them, or pass --skip-bad to train without them."
        )
    return report.bad_paths

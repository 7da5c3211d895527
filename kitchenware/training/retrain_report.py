"""Candidate vs current, side by side, and the promotion rule that protects users.

The rule (also in the README): a candidate replaces the served model only when
1. it is more accurate than the current model on the corrections holdout;
2. it gets every labelled real photo right that the current model gets right;
3. its accuracy on the base dataset's test split (when one is given) is not lower than
   the current model's by more than the margin;
4. its OpenVINO runtime artifacts pass the accuracy gates the current model's passed;
5. when a candidate ran in shadow (retrain_shadow.py) and some of the live answers it changed
   were corrected later, it was right in at least as many of those as the served model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kitchenware.runtime.files import write_json
from kitchenware.training.evaluation import classification_metrics, plot_confusion_matrix
from kitchenware.training.retrain_shadow import ShadowSummary

REPORT_MD, REPORT_JSON = "report.md", "report.json"
CHECK_MARKS = {True: "pass", False: "FAIL", None: "n/a "}
CONFUSION_PNG = {"current": "confusion_current.png", "candidate": "confusion_candidate.png"}


@dataclass(frozen=True)
class Scored:
    """One evaluation set: true labels (-1: unknown) and both models' probabilities."""

    name: str
    labels: np.ndarray
    current: np.ndarray
    candidate: np.ndarray
    ids: Sequence[str] = ()

    def accuracy(self, which: str) -> float | None:
        if len(self.labels) == 0:
            return None
        probabilities = self.current if which == "current" else self.candidate
        return float(np.mean(probabilities.argmax(-1) == self.labels))

    def right(self, which: str) -> set[str]:
        probabilities = self.current if which == "current" else self.candidate
        hits = probabilities.argmax(-1) == self.labels
        return {item for item, hit in zip(self.ids, hits, strict=True) if hit}

    def changed(self) -> int:
        return int(np.sum(self.current.argmax(-1) != self.candidate.argmax(-1)))


@dataclass
class RuleCheck:
    name: str
    passed: bool | None  # None: not applicable
    detail: str


@dataclass
class Comparison:
    class_names: list[str]
    holdout: Scored
    photos: Scored | None
    base_test: Scored | None
    traffic: Scored | None
    base_margin: float
    checks: list[RuleCheck] = field(default_factory=list)
    shadow: ShadowSummary | None = None  # the shadow record of a staged candidate, if any

    def metric_checks(self) -> list[RuleCheck]:
        """Rules 1-3 (the runtime gate, rule 4, runs on the saved candidate afterwards)."""
        cur, cand = self.holdout.accuracy("current"), self.holdout.accuracy("candidate")
        assert cur is not None and cand is not None
        checks = [
            RuleCheck(
                "better on the corrections holdout",
                cand > cur,
                f"{cand:.3f} vs {cur:.3f} on {len(self.holdout.labels)} held-out photos",
            )
        ]
        if self.photos is None:
            checks.append(RuleCheck("no labelled real photo lost", False, "photos unavailable"))
        else:
            lost = sorted(self.photos.right("current") - self.photos.right("candidate"))
            checks.append(
                RuleCheck(
                    "no labelled real photo lost",
                    not lost,
                    f"lost: {', '.join(lost)}" if lost else "none lost",
                )
            )
        if self.base_test is None:
            checks.append(RuleCheck("base test not lower than margin", None, "no base dataset"))
        else:
            b_cur, b_cand = self.base_test.accuracy("current"), self.base_test.accuracy("candidate")
            assert b_cur is not None and b_cand is not None
            checks.append(
                RuleCheck(
                    f"base test not lower by more than {self.base_margin:g}",
                    b_cand >= b_cur - self.base_margin,
                    f"{b_cand:.3f} vs {b_cur:.3f}",
                )
            )
        if self.shadow is not None:
            checks.append(self.shadow_check(self.shadow))
        self.checks = checks
        return checks

    @staticmethod
    def shadow_check(shadow: ShadowSummary) -> RuleCheck:
        name = "in shadow, right where live answers it changed were corrected"
        if not shadow.corrected:
            return RuleCheck(name, None, shadow.sentence())
        return RuleCheck(name, shadow.candidate_right >= shadow.served_right, shadow.sentence())

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed is not False for check in self.checks)

    def rows(self) -> list[tuple[str, ...]]:
        """(what, current, candidate) for the printed and Markdown tables."""

        def acc(scored: Scored | None, which: str) -> str:
            value = scored.accuracy(which) if scored is not None else None
            return "—" if value is None or scored is None else f"{value:.3f} ({len(scored.labels)})"

        rows = [
            (
                "corrections holdout accuracy (photos)",
                *[acc(self.holdout, w) for w in ("current", "candidate")],
            )
        ]
        rows.append(
            (
                "base test accuracy (images)",
                acc(self.base_test, "current"),
                acc(self.base_test, "candidate"),
            )
        )
        if self.photos is not None:
            total = len(self.photos.labels)
            rows.append(
                (
                    "labelled real photos right",
                    f"{len(self.photos.right('current'))}/{total}",
                    f"{len(self.photos.right('candidate'))}/{total}",
                )
            )
        if self.traffic is not None:
            rows.append(
                (
                    "recent traffic photos changing answer",
                    "",
                    f"{self.traffic.changed()}/{len(self.traffic.labels)}",
                )
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        def metrics(scored: Scored | None, which: str) -> dict[str, Any] | None:
            if scored is None or len(scored.labels) == 0:
                return None
            probabilities = scored.current if which == "current" else scored.candidate
            return classification_metrics(scored.labels, probabilities, self.class_names)

        return {
            "passed": self.passed,
            "checks": [asdict(check) for check in self.checks],
            "base_margin": self.base_margin,
            **{
                which: {
                    "holdout": metrics(self.holdout, which),
                    "base_test": metrics(self.base_test, which),
                    "labelled_photos_right": sorted(self.photos.right(which))
                    if self.photos
                    else None,
                }
                for which in ("current", "candidate")
            },
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
            "traffic": None
            if self.traffic is None
            else {"photos": len(self.traffic.labels), "changed_answer": self.traffic.changed()},
        }


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    width = max(len(row[0]) for row in rows)
    lines = [f"{'':{width}}  {'current':>14}  {'candidate':>14}"]
    lines += [f"{what:{width}}  {cur:>14}  {cand:>14}" for what, cur, cand in rows]
    return "\n".join(lines)


def format_checks(checks: Sequence[RuleCheck]) -> str:
    return "\n".join(f"  [{CHECK_MARKS[c.passed]}] {c.name}: {c.detail}" for c in checks)


def _markdown_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    lines = ["| true \\ predicted | " + " | ".join(class_names) + " |"]
    lines.append("|---" * (len(class_names) + 1) + "|")
    lines += [
        f"| {name} | " + " | ".join(str(v) for v in row) + " |"
        for name, row in zip(class_names, matrix, strict=True)
    ]
    return "\n".join(lines)


def write_report(
    comparison: Comparison, run_dir: Path, header: dict[str, Any], timings: dict[str, float]
) -> Path:
    """report.md, report.json and one confusion-matrix PNG per model into `run_dir`."""
    data = comparison.to_dict()
    for which, filename in CONFUSION_PNG.items():
        matrix = data[which]["holdout"]["confusion_matrix"]
        plot_confusion_matrix(
            matrix,
            comparison.class_names,
            run_dir / filename,
            title=f"{which}: corrections holdout",
        )
    write_json({**header, "comparison": data, "seconds": timings}, run_dir / REPORT_JSON)
    verdict = "passes" if comparison.passed else "does NOT pass"
    lines = [
        f"# Retrain report: {header['parent_tag']}",
        "",
        *[f"- {key.replace('_', ' ')}: {value}" for key, value in header.items()],
        "",
        "| | current | candidate |",
        "|---|---:|---:|",
        *[f"| {what} | {cur} | {cand} |" for what, cur, cand in comparison.rows()],
        "",
        f"## Promotion rule: the candidate {verdict}",
        "",
        *[f"- **{CHECK_MARKS[c.passed].strip()}** {c.name}: {c.detail}" for c in comparison.checks],
        "",
    ]
    if comparison.shadow is not None:
        lines += ["## In shadow on live traffic", "", comparison.shadow.sentence() + ".", ""]
    lines.append(
        "## Confusion matrices on the corrections holdout (rows: true, columns: predicted)"
    )
    for which, filename in CONFUSION_PNG.items():
        lines += [
            "",
            f"### {which}",
            "",
            _markdown_matrix(data[which]["holdout"]["confusion_matrix"], comparison.class_names),
            "",
            f"![{which}]({filename})",
        ]
    lines += ["", "## Time (seconds)", "", *[f"- {k}: {v:.1f}" for k, v in timings.items()], ""]
    path = run_dir / REPORT_MD
    path.write_text("\n".join(lines))
    return path

"""The shadow record in the retrain report: "on N live photos the candidate changed M answers;
of those with a later correction it was right in K", and rule 5 that refuses a candidate
that was wrong more often than the served model where users corrected it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from kitchenware.training.retrain_report import REPORT_MD, Comparison, Scored, write_report
from kitchenware.training.retrain_shadow import ShadowSummary, summarize_shadow

CLASSES = ["cup", "glass"]


def shadow_line(request_id: str, position: int, served: str, shadow: str) -> dict[str, object]:
    return {
        "kitchenware_request_id": request_id,
        "position": position,
        "record": "shadow",
        "label": served,
        "shadow_model": "kw-candidate:v1",
        "shadow_label": shadow,
    }


def correction(request_id: str | None, position: int | None, label: str) -> SimpleNamespace:
    return SimpleNamespace(request_id=request_id, position=position, label=label)


def test_the_summary_joins_corrections_by_request_and_position() -> None:
    lines = [
        shadow_line("a", 0, "cup", "glass"),  # changed, corrected to glass: candidate right
        shadow_line("a", 1, "cup", "glass"),  # changed, corrected to cup: served right
        shadow_line("b", 0, "cup", "cup"),  # unchanged
        shadow_line("c", 0, "glass", "cup"),  # changed, corrected to cup: candidate right
        shadow_line("e", 0, "glass", "cup"),  # changed, never corrected
        {**shadow_line("d", 0, "cup", "glass"), "shadow_model": "other:v9"},  # another model
    ]
    corrections = [
        correction("a", 0, "cup"),
        correction("a", 0, "glass"),  # the latest correction wins
        correction("a", 1, "cup"),
        correction("c", 0, "cup"),
        correction(None, None, "glass"),  # a photo sent without an id: no join
    ]
    summary = summarize_shadow(lines, ["kw-candidate:v1"], corrections)
    assert summary == ShadowSummary("kw-candidate:v1", 5, 4, 3, 2, 1)
    assert summarize_shadow(lines, ["nothing:v0"], corrections) is None


def comparison(shadow: ShadowSummary) -> Comparison:
    labels = np.array([0, 1, 1])
    current = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]])
    candidate = np.array([[0.9, 0.1], [0.2, 0.8], [0.2, 0.8]])  # better on the holdout
    holdout = Scored("holdout", labels, current, candidate)
    photos = Scored("photos", labels, current, candidate, ids=["p0", "p1", "p2"])
    return Comparison(CLASSES, holdout, photos, None, None, 0.01, shadow=shadow)


def test_rule_5_refuses_a_candidate_wrong_more_often_in_shadow(tmp_path: Path) -> None:
    worse = comparison(ShadowSummary("kw-candidate:v1", 40, 6, 3, 1, 2))
    worse.metric_checks()
    assert not worse.passed and worse.checks[-1].passed is False
    report = write_report(worse, tmp_path, {"parent_tag": "kw:v0"}, {"train": 1.0})
    text = report.read_text()
    assert "## In shadow on live traffic" in text
    assert "on 40 live photos kw-candidate:v1 changed 6 answers" in text
    assert "it was right in 1 (the served model in 2)" in (tmp_path / REPORT_MD).read_text()


def test_rule_5_passes_when_right_as_often_and_is_moot_without_corrections() -> None:
    better = comparison(ShadowSummary("kw-candidate:v1", 40, 6, 3, 2, 1))
    better.metric_checks()
    assert better.passed and better.checks[-1].passed is True
    unknown = comparison(ShadowSummary("kw-candidate:v1", 40, 6, 0, 0, 0))
    unknown.metric_checks()
    assert unknown.passed and unknown.checks[-1].passed is None

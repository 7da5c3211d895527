"""What a candidate run in shadow did on live traffic: the shadow log joined with corrections.

"On N live photos the candidate changed M answers; of those with a later correction, it was
right in K (the served model in J)." The candidate's answers are the prediction log's
records with `record` "shadow" (serving/inference/shadow.py), JSON lines under BentoML's
monitoring folder (`monitoring/` in the directory the service ran in, or its
`monitoring.options.log_path`); corrections come from the feedback store and join by
request id and position.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REQUEST_ID_COLUMN = "kitchenware_request_id"  # the column name predictionlog writes


@dataclass(frozen=True)
class ShadowSummary:
    candidate: str
    photos: int  # N: live images the candidate answered in shadow
    changed: int  # M: of those, answers it would have changed
    corrected: int  # changed answers that later received a correction
    candidate_right: int  # K: of those, the candidate had the corrected label
    served_right: int  # the served model had it

    def sentence(self) -> str:
        return (
            f"on {self.photos} live photos {self.candidate} changed {self.changed} answers; "
            f"of those with a later correction ({self.corrected}), it was right in "
            f"{self.candidate_right} (the served model in {self.served_right})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_shadow_log(monitoring_dir: Path, prediction_log: str) -> list[dict[str, Any]]:
    """The shadow records of the prediction log under `monitoring_dir` (every worker's
    files, rotated ones included)."""
    folder = Path(monitoring_dir) / prediction_log / "data"
    records = []
    for path in sorted(folder.glob("*.log*")):
        for line in path.read_text(errors="replace").splitlines():
            if '"shadow"' in line:  # cheap pre-filter; the field decides
                record = json.loads(line)
                if record.get("record") == "shadow":
                    records.append(record)
    return records


def summarize_shadow(
    records: Iterable[dict[str, Any]], candidates: Sequence[str], corrections: Iterable[Any]
) -> ShadowSummary | None:
    """The summary for the records of any tag in `candidates` (name:version forms of one
    model); `corrections` are the store's FeedbackRecords. None when it has no records."""
    mine = {
        (r[REQUEST_ID_COLUMN], int(r["position"])): r
        for r in records
        if r.get("shadow_model") in candidates
    }
    if not mine:
        return None
    latest: dict[tuple[str, int], str] = {}  # the last correction of each prediction wins
    for correction in corrections:
        if correction.request_id is not None:
            latest[(correction.request_id, correction.position or 0)] = correction.label
    changed = [key for key, r in mine.items() if r["shadow_label"] != r["label"]]
    corrected = [key for key in changed if key in latest]
    return ShadowSummary(
        candidate=next(iter(mine.values()))["shadow_model"],
        photos=len(mine),
        changed=len(changed),
        corrected=len(corrected),
        candidate_right=sum(mine[key]["shadow_label"] == latest[key] for key in corrected),
        served_right=sum(mine[key]["label"] == latest[key] for key in corrected),
    )

"""The prediction log: one record per classified image, through `bentoml.monitor`.

BentoML's default monitor exporter writes JSON lines under `monitoring/<name>/data/`, one
file per worker (`data.<worker>.log`) that it renames once a day (`data.<worker>.log.<date>`)
and never removes; its `otlp` type sends the same records to an OpenTelemetry collector (see
the README). Each record carries the request id, so corrections sent to /feedback join the
predictions they correct.

`PredictionLogBound` bounds those files in time and size, from the recorder's writer thread
(never on the answer path): a worker starts a new file once its own passes a sixteenth of
the size bound, and the oldest closed files go first when the folder is over the bound or
older than the retention. Files still open (`data.<worker>.log`) are never removed.

Shadow mode (serving/inference/shadow.py) adds records of its own to the same log:
`record` "shadow", the served label beside the candidate's (`shadow_*`). They are separate
records because the candidate answers after the prediction's record is written, or never (shed
under load); and they share this log because BentoML's default exporter writes every monitor
of a process through one logger, so a second monitor name would take over the first's file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kitchenware.runtime.preprocessing import ImageDecodeError, open_image
from kitchenware.serving.metrics import count_removed

logger = logging.getLogger("kitchenware.predictionlog")
MONITOR_LOGGER = "bentoml_monitor_data"  # the logger BentoML's default monitor writes through
SEGMENTS = 16  # a worker's file is closed past 1/SEGMENTS of the bound: removals stay small
SCAN_INTERVAL_S = 60.0  # other workers' files and the age bound: looked at this often


@dataclass(frozen=True)
class PredictionRecord:
    """What is known about one prediction; also the row /feedback looks up by request id."""

    request_id: str
    position: int  # index in a /classify_batch request, 0 for /classify
    created_at: float  # unix time
    image_sha256: str
    image_format: str  # Pillow's name: JPEG, PNG, ...
    width: int
    height: int
    label: str
    confidence: float
    probabilities: dict[str, float]
    model: str
    backend: str
    latency_ms: float
    # Shadow mode: a "shadow" record holds the served answer (label to model, as above) and
    # the candidate's (shadow_*); its backend and latency_ms are the candidate's run, its
    # image fields empty (the prediction's own record has them: join on request id, position).
    record: str = "prediction"
    shadow_model: str = ""
    shadow_label: str = ""
    shadow_confidence: float = 0.0

    def as_log(self) -> dict[str, Any]:
        return asdict(self)


def image_facts(data: bytes) -> tuple[str, str, int, int]:
    """(sha256, format, width, height) of image bytes, from the header only."""
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        image = open_image(data, max_pixels=None)
    except ImageDecodeError:
        return sha256, "", 0, 0
    return sha256, str(image.format or ""), int(image.width), int(image.height)


def prediction_record(
    request_id: str,
    position: int,
    data: bytes,
    probabilities: dict[str, float],
    model: str,
    backend: str,
    latency_ms: float,
    created_at: float | None = None,
) -> PredictionRecord:
    sha256, fmt, width, height = image_facts(data)
    label = max(probabilities, key=lambda name: probabilities[name])
    return PredictionRecord(
        request_id=request_id,
        position=position,
        created_at=time.time() if created_at is None else created_at,
        image_sha256=sha256,
        image_format=fmt,
        width=width,
        height=height,
        label=label,
        confidence=float(probabilities[label]),
        probabilities={k: float(v) for k, v in probabilities.items()},
        model=model,
        backend=backend,
        latency_ms=round(latency_ms, 3),
    )


def log_predictions(name: str, records: list[PredictionRecord]) -> None:
    """One bentoml.monitor record per prediction, one monitor call per batch; `name` empty
    turns the log off. Raises what the monitor raises (the recorder counts and logs it).

    Only the roles and types BentoML supports (feature/prediction, categorical/numerical):
    any other makes it log a "not officially supported" warning per column per record."""
    if not name or not records:
        return
    import bentoml

    columns: list[tuple[str, str, str, Callable[[PredictionRecord], Any]]] = [
        # BentoML reserves the column "request_id" for its trace span id; ours (the
        # X-Request-ID that /feedback takes) is "kitchenware_request_id".
        ("kitchenware_request_id", "feature", "categorical", lambda r: r.request_id),
        ("position", "feature", "numerical", lambda r: r.position),
        ("image_sha256", "feature", "categorical", lambda r: r.image_sha256),
        ("width", "feature", "numerical", lambda r: r.width),
        ("height", "feature", "numerical", lambda r: r.height),
        ("label", "prediction", "categorical", lambda r: r.label),
        ("confidence", "prediction", "numerical", lambda r: r.confidence),
        ("probabilities", "prediction", "categorical", lambda r: json.dumps(r.probabilities)),
        ("model", "feature", "categorical", lambda r: r.model),
        ("backend", "feature", "categorical", lambda r: r.backend),
        ("latency_ms", "feature", "numerical", lambda r: r.latency_ms),
        ("record", "feature", "categorical", lambda r: r.record),
        ("shadow_model", "feature", "categorical", lambda r: r.shadow_model),
        ("shadow_label", "prediction", "categorical", lambda r: r.shadow_label),
        ("shadow_confidence", "prediction", "numerical", lambda r: r.shadow_confidence),
    ]
    with bentoml.monitor(name) as monitor:
        # BentoML learns a monitor's columns from its first record, and while it does it
        # warns "Column name ... is duplicated" for every further row: so the first batch a
        # process logs goes in two calls, its first row alone.
        now = records[:1] if getattr(monitor, "columns_schema", ()) is None else records
        for column, role, kind, value in columns:
            monitor.log_batch([value(record) for record in now], column, role, kind)
    if len(now) < len(records):
        log_predictions(name, records[1:])


class PredictionLogBound:
    """Keeps the prediction log's files under `max_bytes` and `max_age_s` (0: no bound)."""

    def __init__(self, max_bytes: int, max_age_s: float) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._scanned = -SCAN_INTERVAL_S

    @classmethod
    def from_settings(cls, settings: Any) -> PredictionLogBound:
        return cls(
            int(settings.prediction_log_max_mb * 1024 * 1024),
            settings.prediction_log_retention_days * 86400.0,
        )

    def after_write(self) -> None:
        """In the writer thread, after a batch of records went to the log."""
        handler = _log_file_handler()
        if handler is None or not (self.max_bytes or self.max_age_s):
            return  # the log is off, or sent elsewhere (otlp)
        rotated = bool(self.max_bytes) and _file_size(handler) >= self.max_bytes / SEGMENTS
        if rotated:
            _start_new_file(handler)
        if rotated or time.monotonic() - self._scanned >= SCAN_INTERVAL_S:
            self._scanned = time.monotonic()
            self.prune(Path(handler.baseFilename).parent)

    def prune(self, folder: Path, now: float | None = None) -> None:
        """Remove closed files past the age bound, then the oldest until under the size bound."""
        now = time.time() if now is None else now
        files = []
        for path in folder.glob("data.*.log*"):
            with contextlib.suppress(FileNotFoundError):
                facts = path.stat()
                files.append((facts.st_mtime, facts.st_size, path))
        total = sum(size for _, size, _ in files)
        for mtime, size, path in sorted(files):  # oldest first: a file's mtime is its last record
            if path.suffix == ".log":
                continue  # a worker's open file
            expired = bool(self.max_age_s) and now - mtime > self.max_age_s
            if not expired and not (self.max_bytes and total > self.max_bytes):
                continue
            with contextlib.suppress(FileNotFoundError):  # another worker was quicker
                path.unlink()
                count_removed("prediction_log_file", "age" if expired else "size", 1, size)
            total -= size


def _log_file_handler() -> logging.FileHandler | None:
    for handler in logging.getLogger(MONITOR_LOGGER).handlers:
        if isinstance(handler, logging.FileHandler):
            return handler
    return None


def _file_size(handler: logging.FileHandler) -> int:
    stream = handler.stream
    return int(stream.tell()) if stream is not None and not stream.closed else 0


def _start_new_file(handler: logging.FileHandler) -> None:
    """Close this worker's file under a dated name; the handler opens a new one on its next
    record (FileHandler re-opens a closed stream by itself). The names differ from BentoML's
    daily ones (`.<date>`), which its own rollover would overwrite."""
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    handler.acquire()
    try:
        if handler.stream is not None:
            handler.stream.close()
            handler.stream = None
        with contextlib.suppress(FileNotFoundError):
            Path(handler.baseFilename).rename(f"{handler.baseFilename}.{stamp}")
    finally:
        handler.release()

"""Runtime knobs of the service: one object, overridable by KITCHENWARE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kitchenware import PRETRAINED_MODEL_NAME
from kitchenware.runtime.preprocessing import DEFAULT_MAX_PIXELS


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KITCHENWARE_", extra="ignore")

    # The published Xception (`make serve` imports it); `kitchenware:latest` is the demo.
    model_tag: str = Field(
        f"{PRETRAINED_MODEL_NAME}:latest", description="BentoML model tag to serve."
    )
    backend: str = Field(
        "auto",
        description="Inference backend (kitchenware.runtime.backends); auto: fastest gated one.",
    )
    allow_failed_gate: bool = Field(
        False, description="Serve a named backend even if it failed the accuracy gate (benchmarks)."
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest request body.")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Largest width x height.")
    max_batch_files: int = Field(64, ge=1, description="Most images in one /classify_batch.")
    # Background tasks (/classify_batch_async): many files or zips, within the byte limit above.
    max_task_files: int = Field(
        1000, ge=1, description="Most images in one /classify_batch_async task (zips unpacked)."
    )
    max_task_unzipped_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="Most bytes the zips of one task may unpack to."
    )
    top_k: int = Field(3, ge=1, description="Entries in each result's top_k list.")
    # In-process batching; bench/RESULTS.md section 2 ("Workers, threads and processes").
    # 32: one call absorbs 32 clients (TensorFlow-era measurement: 8 and 16 were no faster
    # on 2 cores; kept as history there, not yet re-measured with OpenVINO int8).
    max_batch_size: int = Field(32, ge=2, description="Most images per model call.")
    # 60 s: 3 s answered most c=32 requests 503; 15 s held when quiet, not under load.
    max_latency_ms: int = Field(60_000, ge=1, description="Longest a request may wait in queue.")
    # 1: OpenVINO's LATENCY hint gives one worker's model call every core, so workers x
    # inference threads = cores. Two such workers (4 threads on 2 cores) answered no more at
    # c=16 and cost more CPU and p99 once clients spread over both; one worker's crash costs
    # its in-flight requests and a ~4 s restart while new requests wait in the listen
    # backlog (bench/RESULTS.md section 2, "Workers: 1 or 2, after the one-hop batcher").
    workers: int = Field(1, ge=1, description="Service worker processes.")
    timeout_s: int = Field(120, ge=1, description="Request timeout in seconds.")
    retry_after_s: int = Field(
        2, ge=1, description="Retry-After seconds sent with a 429/503 under overload."
    )
    # Overload (kitchenware/serving/http/overload.py): 40 in flight is ~3.3 s of queue per worker
    # at the ~12 req/s one worker answered (RESULTS.md, "Reliability"), and lets one worker
    # (the Deployment's) take 32 concurrent clients without a 429 (the container smoke test).
    max_in_flight: int = Field(
        40, ge=1, description="Requests one worker runs at once; the next one gets a 429."
    )
    # Slow clients (kitchenware/serving/http/uploads.py): 2 KiB/s is a 3 MB photo in 25 min, far
    # below a poor mobile uplink (~10-50 KiB/s); a slow-loris trickle of bytes is cut off
    # after the grace period with a 408 instead of holding its connection.
    min_upload_bytes_per_s: int = Field(
        2048, ge=1, description="Slowest average upload rate accepted after the grace period."
    )
    upload_grace_s: float = Field(
        10.0, gt=0, description="Seconds an upload may take before its rate is checked."
    )
    # Headers that never finish (http/server_options.py): uvicorn bounds neither a request's
    # header phase nor a new connection that sends nothing. 15 s: nginx's default
    # client_header_timeout is 60 s; a phone sends its headers in one packet.
    header_timeout_s: float = Field(
        15.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers (408 after).",
    )
    # 64 KiB: nginx takes 4 x 8 KiB of headers, h11 16 KiB; httptools has no limit at all.
    max_header_bytes: int = Field(
        65536, ge=1024, description="Most bytes of a request's line and headers (431 past it)."
    )
    # uvicorn closed idle connections after 5 s, racing pooled clients (server_options.py).
    keep_alive_s: int = Field(75, ge=1, description="Idle keep-alive connection lifetime.")
    graceful_shutdown_s: int = Field(
        20, ge=1, description="On SIGTERM, how long in-flight requests may still run."
    )
    # The feedback loop (kitchenware/serving/feedback/store.py, explain.py, predictionlog.py).
    feedback_url: str = Field(
        "",
        description="Feedback store: sqlite:///PATH or postgresql://...; empty: "
        "$BENTOML_HOME/kitchenware-feedback/feedback.db.",
    )
    feedback_images_dir: str = Field(
        "", description="Where stored photos go (by sha256); empty: beside the SQLite file."
    )
    keep_prediction_images: bool = Field(
        True,
        description="Keep each classified photo for prediction_retention_hours, so feedback "
        "by request_id can be exported; false: feedback must send the image.",
    )
    prediction_retention_hours: float = Field(
        24.0, gt=0, description="How long a prediction (and its photo) can receive feedback."
    )
    feedback_retention_days: float = Field(
        0.0, ge=0, description="How long corrections and their photos are kept; 0: forever."
    )
    # Disk bounds besides the time bounds above (store.py, predictionlog.py): enforced in the
    # background; the oldest go first; counted in kitchenware_disk_removed_total{kind,reason}.
    # 2 GiB: ~1,000 phone photos or ~20,000 small uploads; one busy day of full-size uploads
    # would otherwise take hundreds of GB.
    feedback_images_max_mb: float = Field(
        2048.0,
        ge=0,
        description="Most MB the photo folder may hold; past it the photos of the oldest "
        "predictions go (never a correction's); 0: no size bound.",
    )
    feedback_note_max_chars: int = Field(
        500, ge=0, description="Longest free-text note sent with a correction."
    )
    prediction_log: str = Field(
        "kitchenware_predictions",
        description="bentoml.monitor name of the prediction log; empty: off.",
    )
    # ~600 bytes a record: 1 GiB is ~1.8 M predictions (about two days at 10 req/s).
    prediction_log_max_mb: float = Field(
        1024.0, ge=0, description="Most MB of prediction-log files; past it the oldest go; 0: none."
    )
    prediction_log_retention_days: float = Field(
        30.0, ge=0, description="Prediction-log files older than this are removed; 0: forever."
    )
    # Shadow mode (kitchenware/serving/inference/shadow.py): a candidate model answers a sample
    # of live requests beside the served one, off the answer path; its labels go to the
    # prediction log and /metrics, never to a client.
    shadow_model_tag: str = Field(
        "", description="Store tag of a candidate to run in shadow on live requests; empty: off."
    )
    shadow_sample: float = Field(
        0.25, ge=0, le=1, description="Share of /classify and /classify_batch requests shadowed."
    )
    # 8 images: a few requests' worth; shadow work never piles up behind a busy model.
    shadow_max_queue: int = Field(
        8, ge=1, description="Images waiting for the shadow model per worker; past it, shed."
    )
    # 0.25: at most a quarter of one core per worker goes to the candidate.
    shadow_max_cpu_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="Most of its wall time the shadow thread may spend running the candidate.",
    )
    explain_method: str = Field(
        "auto", description="Heatmap method: gradcam, occlusion, or auto (per backend)."
    )
    explain_grid: int = Field(7, ge=2, le=32, description="Occlusion grid (cells per side).")

    # Security (kitchenware/serving/http/auth.py, cors.py): both off unless set.
    api_keys: Annotated[list[str], NoDecode] = Field(
        [],
        description="Comma-separated bearer keys; empty: no key needed (logged loudly).",
    )
    cors_allowed_origins: Annotated[list[str], NoDecode] = Field(
        [],
        description="Comma-separated origins allowed cross-origin (or *); empty: CORS off.",
    )

    @field_validator("api_keys", "cors_allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return (
            [item.strip() for item in value.split(",") if item.strip()]
            if isinstance(value, str)
            else value
        )


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    return ServiceSettings()

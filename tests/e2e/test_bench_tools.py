"""The serving benchmark's own tools: the load generator counts what clients see, the report
checks the issue's targets, and load never leaves loopback. Fast; no TensorFlow."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from loadgen import run_load
from report import compute_ratios, format_ratios, format_table


class _EveryThirdBusy(BaseHTTPRequestHandler):
    """Answers 503 to every third upload, 200 otherwise."""

    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).count += 1
            busy = self.count % 3 == 0
        self.send_response(503 if busy else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EveryThirdBusy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/classify"
    finally:
        server.shutdown()
        server.server_close()


def test_load_generator_counts_answers_and_errors_by_status(flaky_server: str) -> None:
    result = asyncio.run(
        run_load(flaky_server, concurrency=4, requests=30, images=[b"\xff\xd8fake"], timeout_s=10)
    )
    assert result.ok == 20
    assert result.errors == {"503": 10}
    assert result.req_per_s > 0 and result.latency_ms["p99"] >= result.latency_ms["p50"] > 0


def test_load_generator_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="not on loopback"):
        asyncio.run(
            run_load("http://example.com/classify", concurrency=1, requests=1, images=[b""])
        )


def _level(concurrency: int, req_per_s: float, p50: float, p99: float, **errors: int) -> dict:
    return {
        "concurrency": concurrency, "requests": 10, "ok": 10 - sum(errors.values()),
        "images_per_request": 1, "req_per_s": req_per_s, "images_per_s": req_per_s,
        "latency_ms": {"p50": p50, "p90": p99, "p99": p99, "mean": p50}, "errors": errors,
    }  # fmt: skip


def _run(service_16: float, service_c1_p50: float, **errors: int) -> dict:
    raw = [
        {"batch_size": 1, "calls": 5, "images_per_s": 9.0,
         "latency_ms": {"p50": 100.0, "p90": 100.0, "p99": 100.0, "mean": 100.0}},
        {"batch_size": 32, "calls": 3, "images_per_s": 10.0,
         "latency_ms": {"p50": 3200.0, "p90": 3200.0, "p99": 3200.0, "mean": 3200.0}},
    ]  # fmt: skip
    return {
        "raw": {"batches": raw},
        "service": [_level(1, 8.0, service_c1_p50, 130.0), _level(16, service_16, 1600, 2000)],
        "service_batch": {**_level(2, 0.6, 3000, 3500), "images_per_request": 16},
        "peer": [_level(1, 6.0, 160, 200), _level(16, 4.0, 4000, 9000, **errors)],
    }


def test_report_marks_targets_met_from_side_by_side_numbers() -> None:
    ratios = compute_ratios(_run(service_16=9.8, service_c1_p50=110.0))
    assert ratios["service_over_raw_best"] == {16: pytest.approx(0.98)}
    assert ratios["service_over_peer"][16]["throughput"] == pytest.approx(2.45)
    assert ratios["service_c1_p50_minus_raw_b1_p50_ms"] == pytest.approx(10.0)
    assert all(ratios["targets_met"].values())
    assert "NOT MET" not in format_ratios(ratios)


def test_report_names_each_missed_target() -> None:
    run = _run(service_16=7.0, service_c1_p50=140.0)
    run["service"][1]["errors"] = {"503": 2}
    ratios = compute_ratios(run)
    assert not any(ratios["targets_met"].values())
    text = format_ratios(ratios)
    assert text.count("NOT MET") == 4
    assert "503:2" in format_table(run)

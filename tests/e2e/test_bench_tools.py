"""The serving benchmark's own tools: the load generator counts what clients see, the run
checks the issue's targets and reports a stage that cannot run instead of stopping, the CPU
facts come from lscpu, and load never leaves loopback. Fast; no TensorFlow."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_assets import cpu_facts, describe_cpu
from burst import burst
from interleaved import c1_split, median_level, median_raw
from loadgen import run_load
from serving import attempt, comparison, report, targets
from wrk_load import run_wrk, wrk_path


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
        if not busy:  # the service's Server-Timing, for the split of where time went
            self.send_header("Server-Timing", 'queue;dur=1, decode;dur=2, infer;dur=3;desc="x"')
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
    assert result.client_cpu_ms_per_image is not None and result.client_cpu_ms_per_image > 0
    timing = result.server_timing_p50_ms
    assert (timing["queue"], timing["decode"], timing["infer"]) == (1.0, 2.0, 3.0)
    # What the client waited beyond the model call (decode + infer): latency - 5 ms.
    assert timing["outside_model"] == pytest.approx(result.latency_ms["p50"] - 5.0, abs=1.0)


def test_burst_on_the_same_driver_counts_busy_answers_without_retry_after(
    flaky_server: str,
) -> None:
    root = flaky_server.removesuffix("/classify")
    result = asyncio.run(burst(root, clients=4, duration_s=0.5, photos=[b"\xff\xd8fake"]))
    busy = result.outcomes.get("503", 0)
    assert result.sent == busy + result.outcomes.get("200", 0) and busy > 0
    assert result.busy_without_retry_after == busy and result.bad_busy_bodies == busy
    assert result.dropped == 0 and result.server_errors == 0


@pytest.mark.skipif(wrk_path() is None, reason="wrk not installed (deploy/system-packages.sh)")
def test_the_lean_client_counts_answers_and_errors_by_status(flaky_server: str) -> None:
    result = run_wrk(flaky_server, concurrency=2, seconds=1, photos=[b"\xff\xd8fake"])
    assert result["ok"] > 10
    busy = result["errors"]["status"]
    assert result["requests"] == result["ok"] + busy
    assert busy == pytest.approx(result["requests"] / 3, abs=2)  # every third answer is 503
    assert result["images_per_s"] == pytest.approx(result["ok"] / result["wall_s"])
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["client_cpu_ms_per_image"] is not None and result["client_cpu_ms_per_image"] > 0


def test_load_generator_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="not on loopback"):
        asyncio.run(
            run_load("http://example.com/classify", concurrency=1, requests=1, images=[b""])
        )


def _level(c: int, img_per_s: float, p50: float, p99: float, cpu: float, **errors: int) -> dict:
    return {
        "concurrency": c, "requests": 10, "ok": 10 - sum(errors.values()),
        "images_per_s": img_per_s, "latency_ms": {"p50": p50, "p90": p99, "p99": p99},
        "errors": errors, "server_cpu_ms_per_image": cpu, "client_cpu_ms_per_image": 2.0,
        "loadavg_after": 1.0, "server_timing_p50_ms": {
            "queue": 0.5, "decode": 3.0, "infer": 9.0, "app": 13.0, "outside_model": p50 - 12.0},
    }  # fmt: skip


def _raw(b1_p50: float, b16_rate: float, b16_cpu: float) -> dict:
    return {"batches": [
        {"batch_size": 1, "images_per_s": 50.0, "cpu_ms_per_image": 20.0,
         "latency_ms": {"p50": b1_p50, "p90": b1_p50, "p99": b1_p50},
         "predict_ms": {"p50": b1_p50 - 3.0}},
        {"batch_size": 16, "images_per_s": b16_rate, "cpu_ms_per_image": b16_cpu,
         "latency_ms": {"p50": 200.0, "p90": 200.0, "p99": 200.0},
         "predict_ms": {"p50": 150.0}},
    ], "decode_ms": {"p50": 3.0}}  # fmt: skip


LITSERVE = [_level(1, 38.0, 22.0, 30.0, 24.0), _level(16, 70.0, 260, 420, 25.0)]
NAIVE = [_level(1, 8.0, 120.0, 150.0, 120.0), _level(16, 10.0, 1500, 2000, 124.0)]


def _run(served_16: float, served_c1_p50: float, cpu_16: float, **errors: int) -> dict:
    served = [
        _level(1, 40.0, served_c1_p50, 30.0, 25.0),
        _level(16, served_16, 250, 400, cpu_16, **errors),
    ]
    return {
        "model": "kitchenware-xception:test", "wall_s": 1.0, "default_backend": "openvino-bf16",
        "machine": {"cpu": cpu_facts(LSCPU), "loadavg_end": [1.0]},
        "skipped": {}, "gates": {}, "gate_marks": {},
        "raw": {"openvino-bf16": _raw(b1_p50=18.0, b16_rate=80.0, b16_cpu=24.0)},
        "service": {"openvino-bf16": {"served_runtime": "openvino-bf16", "levels": served}},
        "layouts": {},
        "peers": {
            "litserve": {"levels": LITSERVE}, "naive": {"levels": NAIVE},
        },
    }  # fmt: skip


LSCPU = """Architecture:        x86_64
Model name:          Intel(R) Xeon(R) Processor
Flags:               fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile
"""


def test_targets_met_from_side_by_side_numbers() -> None:
    run = _run(served_16=76.0, served_c1_p50=20.0, cpu_16=26.0)
    met = targets(run)
    assert all(met.values()), met
    row = comparison(run, 16)
    assert row["served_over_raw_b16"] == pytest.approx(0.95)
    assert row["served_over_litserve"] == pytest.approx(76 / 70)
    assert row["served_over_naive"] == pytest.approx(76 / 10)
    assert "MISS" not in report(
        {**run, "comparison": [comparison(run, 1), row], "targets": met}, 18
    )


def test_each_missed_target_is_named() -> None:
    # slower than raw and LitServe at 16, too much CPU, slow at c=1, errors at 16
    run = _run(served_16=60.0, served_c1_p50=30.0, cpu_16=40.0, **{"503": 2})
    met = targets(run)
    missed = {name for name, ok in met.items() if not ok}
    assert missed == {
        "served/raw >= 0.9 at c=16, openvino-bf16",
        "server CPU/img <= 1.15 x raw at c=16 (openvino-bf16)",
        "c=1 p50 <= raw b=1 p50 + 3 ms (openvino-bf16)",
        ">= LitServe peer at c=1 (rate and p50)",
        ">= LitServe peer at c=16 (rate and p50)",
        "zero errors at c=1-32, shipped defaults",
    }, missed
    text = report(
        {**run, "comparison": [comparison(run, 1), comparison(run, 16)], "targets": met}, 18
    )
    assert text.count("MISS") == 6


def test_targets_are_judged_again_on_the_lean_clients_numbers() -> None:
    # The Python client's c=1 p50 misses raw b=1 + 3 ms; wrk's, without its 2 ms, meets it.
    run = _run(served_16=76.0, served_c1_p50=22.0, cpu_16=26.0)
    run["service"]["openvino-fp32"] = {"levels": [_level(16, 70.0, 250, 400, 25.0)]}
    run["raw"]["openvino-fp32"] = _raw(b1_p50=18.0, b16_rate=80.0, b16_cpu=24.0)
    run["service"]["openvino-bf16"]["lean_levels"] = [
        _level(1, 50.0, 19.0, 25.0, 24.0),
        _level(16, 78.0, 240, 380, 25.0),
    ]
    run["peers"]["litserve"]["lean_levels"] = [
        _level(1, 45.0, 20.0, 26.0, 24.0),
        _level(16, 72.0, 250, 400, 25.0),
    ]
    assert not targets(run)["c=1 p50 <= raw b=1 p50 + 3 ms (openvino-bf16)"]
    lean = targets(run, "lean_levels")
    assert all(lean.values()), lean
    assert "zero errors at c=1-32, shipped defaults" not in lean  # c=4 and 32: Python only
    assert [t for t in lean if t.startswith("served/raw")] == [  # wrk: the default backend only
        "served/raw >= 0.9 at c=16, openvino-bf16"
    ]
    text = report({**run, "comparison": [], "targets": targets(run), "targets_wrk": lean}, 18)
    assert "MET  c=1 p50 <= raw b=1 p50 + 3 ms (openvino-bf16) [wrk]" in text
    assert "service openvino-bf16 [wrk]" in text


def test_interleaved_rounds_are_judged_on_their_medians() -> None:
    # One slow round (a drift of the machine) moves neither the median rate nor the p50.
    rounds = [_level(16, 90.0, 170, 230, 17.0), _level(16, 60.0, 260, 400, 25.0, **{"503": 1})]
    rounds.append(_level(16, 88.0, 175, 240, 18.0))
    level = median_level(rounds)
    assert level["images_per_s"] == 88.0 and level["latency_ms"]["p50"] == 175
    assert level["server_cpu_ms_per_image"] == 18.0 and level["errors"] == {"503": 1}
    raws = [_raw(b1_p50=p50, b16_rate=rate, b16_cpu=cpu) for p50, rate, cpu in
            [(12.0, 95.0, 16.0), (15.0, 80.0, 20.0), (11.0, 110.0, 14.0)]]  # fmt: skip
    raw = median_raw(raws)
    b1, b16 = raw["batches"]
    assert b1["latency_ms"]["p50"] == 12.0 and (b16["images_per_s"], b16["cpu_ms_per_image"]) == (
        95.0,
        16.0,
    )
    assert level["server_timing_p50_ms"]["infer"] == 9.0
    # The c=1 latency beside the raw batch-1 call, split into the model's parts and the rest.
    split = c1_split(raw, [median_level([_level(1, 60.0, p50, 30.0, 20.0) for p50 in (16, 18)])])
    assert "served p50 17.0 ms = decode 3.0 + infer 9.0 + outside the model call 5.0" in split
    assert "before and after the app 4.0" in split
    assert "raw b1 p50 12.0 ms = decode 3.0 + predict 9.0" in split


def test_a_stage_that_cannot_run_is_reported_and_the_run_goes_on() -> None:
    run: dict = {"skipped": {}}

    def two_process_stage() -> None:
        raise RuntimeError("BackendError: openvino-int8 failed its accuracy gate")

    assert attempt(run, "service openvino-int8", two_process_stage) is None
    assert "failed its accuracy gate" in run["skipped"]["service openvino-int8"]
    assert attempt(run, "raw tensorflow", lambda: {"ok": 1}) == {"ok": 1}


def test_cpu_facts_name_the_model_and_the_flags_that_matter() -> None:
    facts = cpu_facts(LSCPU)
    assert facts["model_name"] == "Intel(R) Xeon(R) Processor"
    assert facts["isa"]["avx512_vnni"] and facts["isa"]["avx512_bf16"]
    assert facts["isa"]["amx"] == ["amx_bf16", "amx_tile"]
    text = describe_cpu(cpu_facts("Model name: AMD EPYC\nFlags: sse2 avx2\n"))
    assert text.startswith("AMD EPYC") and "avx2" in text and "avx512_vnni" not in text
    assert "no amx" in text

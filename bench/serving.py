"""Serving benchmark, real model and real photos: raw pipeline vs served vs two peers.

The published kitchenware Xception (150 px, imported with its OpenVINO IR and gate results
into a cached store under bench/out/bentoml-home) and its 18 real JPEGs (~1000x750). In one
run, on one machine:
1. raw in-process pipeline (decode + predict, bench/raw_pipeline.py) of every backend
   (tensorflow, openvino-fp32/-bf16/-int8) at batch 1/8/16/32, with its CPU per image;
2. `bentoml serve service:Kitchenware` with each backend, /classify at concurrency
   1/4/16/32, with the server's CPU per image (process tree) and the load generator's;
3. the workers/threads layouts of the default backend: one worker with OpenVINO's
   THROUGHPUT hint and one stream per core, two LATENCY workers, beside the default one;
4. the strong peer (LitServe with its own batching, bench/litserve_peer.py) and the naive
   peer (Flask + TF `model.predict` per request) on the default backend's model;
5. the default backend and the LitServe peer again at c=1 and 16 with the lean client, wrk
   (bench/wrk_load.py): the Python client's own 2-3 ms of CPU per photo shares the 2 cores
   and sits inside every c=1 latency; the targets are judged with both clients.
The stages run one after another, minutes apart; on a machine whose speed drifts, judge the
targets with bench/interleaved.py (rounds of raw, service and peer in turn, medians).
A backend whose artifact failed its accuracy gate is measured and marked "(failed gate)";
a stage that cannot run (no bf16 on this CPU, a server that does not start) is reported as
skipped with its reason, and the run goes on. Prints the CPU (model, ISA flags), the tables,
the ratios and the issue's targets; writes bench/out/serving.json.

    python bench/serving.py            # 10-15 minutes on 2 quiet cores (24 requests a client)
    python bench/serving.py --quick    # c=1,4 and batch 1,8, few requests: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import OUT_DIR, REPO_ROOT, cpu_facts, describe_cpu, process_tree_cpu_s
from loadgen import run_load
from servers import RunningServer, running_litserve, running_peer, running_service
from wrk_load import run_wrk, wrk_path

CONCURRENCIES = [1, 4, 16, 32]
MIN_REQUESTS = 100  # per level: c=1 p50 from at least this many answers
# The lean client (wrk) at the targets' levels, on the default backend and the LitServe peer.
LEAN_CONCURRENCIES = [1, 16]
BATCHES = [1, 8, 16, 32]
BACKENDS = ["tensorflow", "openvino-fp32", "openvino-bf16", "openvino-int8"]
HOME = OUT_DIR / "bentoml-home"  # cached: the import + conversion run once
REQUEST_TIMEOUT_S = 120.0
# Targets of issue 17, each checked on numbers of this run (c=16 against raw batch 16).
TARGET_SERVED_OVER_RAW = 0.9
TARGET_CPU_OVER_RAW = 1.15
TARGET_C1_P50_OVER_RAW_B1_MS = 3.0
TARGET_OVER_NAIVE = 5.0
PEERS = ("litserve", "naive")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_model() -> tuple[str, Path, Path]:
    """The real model in the cached store (imported + converted once); tag, dir, photos dir."""
    os.environ["BENTOML_HOME"] = str(HOME)
    from kitchenware.modelbuild.pretrained import import_pretrained, real_photos
    from kitchenware.modelbuild.store import model_dir

    result = import_pretrained()
    photos = real_photos()
    return result.tag, model_dir(result.tag), photos.directory


def attempt(run: dict[str, Any], stage: str, measure: Callable[[], Any]) -> Any:
    """Run one stage; a stage that fails is reported as skipped with its reason, not fatal."""
    try:
        return measure()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".strip()[-600:]
        run["skipped"][stage] = reason
        say(f"  SKIPPED {stage}: {reason}")
        return None


def run_raw(model_dir: Path, backend: str, photos: Path, batches: list[int]) -> dict[str, Any]:
    script = Path(__file__).with_name("raw_pipeline.py")
    command = [sys.executable, str(script), "--model-dir", str(model_dir), "--backend", backend]
    command += ["--photos", str(photos), "--batches", *map(str, batches)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    sys.stderr.write(done.stderr if done.returncode == 0 else "")
    if done.returncode != 0:
        raise RuntimeError(f"raw_pipeline.py exited {done.returncode}: {done.stderr[-600:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def levels(
    url: str, images: list[bytes], concurrencies: list[int], rounds: int, pid: int
) -> list[dict[str, Any]]:
    out = []
    for concurrency in concurrencies:
        result = await run_load(
            url,
            concurrency=concurrency,
            requests=max(MIN_REQUESTS, concurrency * rounds),
            images=images,
            timeout_s=REQUEST_TIMEOUT_S,
            warmup_requests=concurrency,
            cpu_probe=partial(process_tree_cpu_s, pid),
        )
        out.append({**result.as_dict(), "loadavg_after": os.getloadavg()[0]})
        say_level(out[-1], "", "load generator")
    return out


def say_level(level: dict[str, Any], prefix: str, client: str) -> None:
    """One measured level as a progress line (either client's numbers)."""
    say(
        f"  {prefix}c={level['concurrency']:>2}: {level['images_per_s']:6.1f} img/s, p50 "
        f"{level['latency_ms']['p50']:6.0f} ms, p99 {level['latency_ms']['p99']:6.0f} ms, "
        f"server cpu {level['server_cpu_ms_per_image'] or 0:5.1f} ms/img, {client} "
        f"{level['client_cpu_ms_per_image'] or 0:4.2f} ms/img, errors {level['errors'] or 0}"
    )


def lean_levels(url: str, images: list[bytes], seconds: float, pid: int) -> list[dict[str, Any]]:
    out = []
    for concurrency in LEAN_CONCURRENCIES:
        result = run_wrk(
            url,
            concurrency=concurrency,
            seconds=seconds,
            photos=images,
            cpu_probe=partial(process_tree_cpu_s, pid),
        )
        out.append({**result, "loadavg_after": os.getloadavg()[0]})
        say_level(out[-1], "wrk ", "wrk")
    return out


def measure_server(
    server: AbstractContextManager[RunningServer],
    path: str,
    images: list[bytes],
    concurrencies: list[int],
    rounds: int,
    lean_seconds: float = 0.0,
) -> dict[str, Any]:
    """Start a server, ask one photo (what answered it), then the load levels (and the lean
    client's levels when `lean_seconds`)."""
    with server as srv:
        first = httpx.post(
            srv.base_url + path, files={"image": ("p.jpg", images[0], "image/jpeg")}, timeout=60
        )
        first.raise_for_status()
        answered_by = first.json().get("runtime") if path == "/classify" else None
        measured = asyncio.run(
            levels(srv.base_url + path, images, concurrencies, rounds, srv.process.pid)
        )
        entry = {"ready_s": srv.ready_s, "served_runtime": answered_by, "levels": measured}
        if lean_seconds:
            entry["lean_levels"] = lean_levels(
                srv.base_url + path, images, lean_seconds, srv.process.pid
            )
    return entry


def service(tag: str, backend: str, **env: str) -> AbstractContextManager[RunningServer]:
    name = "-".join(["service", backend, *env.values()]).lower()
    settings = {"KITCHENWARE_BACKEND": backend, "KITCHENWARE_ALLOW_FAILED_GATE": "true", **env}
    return running_service(tag, HOME, settings, name=name)


def layouts(cores: int) -> dict[str, dict[str, str]]:
    """Workers x OpenVINO hint beside the default (1 worker, LATENCY: the service rows)."""
    return {
        f"1 worker, THROUGHPUT x{cores} streams": {
            "KITCHENWARE_WORKERS": "1",
            "KITCHENWARE_OPENVINO_HINT": "THROUGHPUT",
            "KITCHENWARE_OPENVINO_STREAMS": str(cores),
        },
        "2 workers, LATENCY": {"KITCHENWARE_WORKERS": "2"},
    }


# --- reading a run ---------------------------------------------------------------------


def at_c(entry: dict[str, Any] | None, c: int, key: str = "levels") -> dict[str, Any] | None:
    """A server's level at concurrency c: from the Python client ("levels") or wrk."""
    if not entry:
        return None
    return next((lv for lv in entry.get(key, []) if lv["concurrency"] == c), None)


def raw_at_b(run: dict[str, Any], backend: str, b: int) -> dict[str, Any] | None:
    raw = run["raw"].get(backend)
    return next((x for x in raw["batches"] if x["batch_size"] == b), None) if raw else None


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else math.nan


def comparison(run: dict[str, Any], c: int) -> dict[str, Any]:
    """The default backend served at concurrency c against raw (batch 16) and both peers."""
    default = run["default_backend"]
    served = at_c(run["service"].get(default), c)
    raw16 = raw_at_b(run, default, 16) or {}
    rate = served["images_per_s"] if served else None
    row: dict[str, Any] = {
        "concurrency": c,
        "served_over_raw_b16": ratio(rate, raw16.get("images_per_s")),
    }
    for peer in PEERS:
        other = at_c(run["peers"].get(peer), c)
        row[f"served_over_{peer}"] = ratio(rate, other["images_per_s"] if other else None)
        row[f"p50_p99_ms_{peer}"] = (
            [other["latency_ms"]["p50"], other["latency_ms"]["p99"]] if other else None
        )
    row["p50_p99_ms_served"] = (
        [served["latency_ms"]["p50"], served["latency_ms"]["p99"]] if served else None
    )
    return row


def targets(run: dict[str, Any], key: str = "levels") -> dict[str, bool]:
    """Issue 17's targets, each from this run's numbers (a missing number is a miss); with
    key="lean_levels" the ones wrk measured (c=1 and 16, default backend and LitServe)."""
    default = run["default_backend"]
    served16 = at_c(run["service"].get(default), 16, key) or {}
    served1 = at_c(run["service"].get(default), 1, key) or {}
    raw16, raw1 = raw_at_b(run, default, 16) or {}, raw_at_b(run, default, 1) or {}
    out: dict[str, bool] = {}
    others = [b for b in run["service"] if b.startswith("openvino")] if key == "levels" else []
    for backend in dict.fromkeys([default, *others]):  # wrk measures the default backend only
        level = at_c(run["service"].get(backend), 16, key)
        raw = raw_at_b(run, backend, 16)
        out[f"served/raw >= {TARGET_SERVED_OVER_RAW} at c=16, {backend}"] = bool(
            level and raw and level["images_per_s"] >= TARGET_SERVED_OVER_RAW * raw["images_per_s"]
        )
    out[f"server CPU/img <= {TARGET_CPU_OVER_RAW} x raw at c=16 ({default})"] = bool(
        served16.get("server_cpu_ms_per_image")
        and raw16
        and served16["server_cpu_ms_per_image"] <= TARGET_CPU_OVER_RAW * raw16["cpu_ms_per_image"]
    )
    out[f"c=1 p50 <= raw b=1 p50 + {TARGET_C1_P50_OVER_RAW_B1_MS:.0f} ms ({default})"] = bool(
        served1
        and raw1
        and served1["latency_ms"]["p50"] <= raw1["latency_ms"]["p50"] + TARGET_C1_P50_OVER_RAW_B1_MS
    )
    for c in (1, 16):
        peer = at_c(run["peers"].get("litserve"), c, key)
        served = at_c(run["service"].get(default), c, key)
        out[f">= LitServe peer at c={c} (rate and p50)"] = bool(
            peer
            and served
            and served["images_per_s"] >= peer["images_per_s"]
            and served["latency_ms"]["p50"] <= peer["latency_ms"]["p50"]
        )
    if key != "levels":  # the naive peer and c=4/32 are measured by the Python client only
        return out
    naive = at_c(run["peers"].get("naive"), 16)
    out[f">= {TARGET_OVER_NAIVE:.0f}x naive peer at c=16 with lower p99"] = bool(
        naive
        and served16
        and served16["images_per_s"] >= TARGET_OVER_NAIVE * naive["images_per_s"]
        and served16["latency_ms"]["p99"] < naive["latency_ms"]["p99"]
    )
    levels_default = (run["service"].get(default) or {}).get("levels", [])
    out["zero errors at c=1-32, shipped defaults"] = bool(levels_default) and not any(
        lv["errors"] for lv in levels_default
    )
    return out


def _rows(run: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    marks = run["gate_marks"]
    for backend, entry in run["service"].items():
        yield f"service {backend}{marks.get(backend, '')}", entry
        if "lean_levels" in entry:
            yield f"service {backend} [wrk]", {"levels": entry["lean_levels"]}
    for name, entry in run["layouts"].items():
        yield f"{run['default_backend']}: {name}", entry
    for peer, entry in run["peers"].items():
        name = {"litserve": "LitServe peer", "naive": "naive Flask peer (TF)"}[peer]
        yield name, entry
        if "lean_levels" in entry:
            yield f"{name} [wrk]", {"levels": entry["lean_levels"]}


def table(run: dict[str, Any]) -> str:
    head = f"{'raw pipeline (decode+predict)':<40}"
    lines = [head + "".join(f"{'b=' + str(b):>8}" for b in BATCHES) + f"{'cpu ms/img b16':>16}"]
    for backend, raw in run["raw"].items():
        cells = {b["batch_size"]: b["images_per_s"] for b in raw["batches"]}
        b16 = raw_at_b(run, backend, 16)
        lines.append(
            f"  {backend + run['gate_marks'].get(backend, ''):<38}"
            + "".join(f"{cells[b]:8.1f}" if b in cells else f"{'-':>8}" for b in BATCHES)
            + (f"{b16['cpu_ms_per_image']:16.1f}" if b16 else f"{'-':>16}")
        )
    lines += ["", f"{'served':<40}{'conc':>5}{'img/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'server cpu':>11}{'loadgen cpu':>12}{'errors':>7}{'load':>6}"]  # fmt: skip
    for name, entry in _rows(run):
        for lv in entry["levels"]:
            lines.append(
                f"  {name[:38]:<38}{lv['concurrency']:>5}{lv['images_per_s']:8.1f}"
                f"{lv['latency_ms']['p50']:8.0f}{lv['latency_ms']['p99']:8.0f}"
                f"{lv['server_cpu_ms_per_image'] or 0:11.1f}"
                f"{lv['client_cpu_ms_per_image'] or 0:12.1f}"
                f"{sum(lv['errors'].values()):>7}{lv['loadavg_after']:6.1f}"
            )
    lines += ["", f"{run['default_backend']} served vs: raw b=16, LitServe peer, naive peer"]
    lines.append(
        f"{'conc':>5}{'/raw':>7}{'/LitServe':>10}{'/naive':>8}"
        "   p50/p99 ms: served | LitServe | naive"
    )
    for row in run["comparison"]:
        pairs = [row[f"p50_p99_ms_{k}"] for k in ("served", *PEERS)]
        lines.append(
            f"{row['concurrency']:>5}{row['served_over_raw_b16']:7.2f}"
            f"{row['served_over_litserve']:10.2f}{row['served_over_naive']:8.2f}   "
            + " | ".join(f"{p[0]:.0f}/{p[1]:.0f}" if p else "-" for p in pairs)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: c=1,4, batch 1,8")
    parser.add_argument("--backends", nargs="+", default=BACKENDS)
    parser.add_argument("--rounds", type=int, default=24, help="requests per client per level")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-layouts", action="store_true")
    parser.add_argument(
        "--wrk-seconds",
        type=float,
        default=10.0,
        help="seconds per lean-client (wrk) level; 0 skips them",
    )
    args = parser.parse_args(argv)
    concurrencies = [1, 4] if args.quick else CONCURRENCIES
    batches = [1, 8, 16] if args.quick else BATCHES
    rounds = 2 if args.quick else args.rounds
    started = time.perf_counter()
    run: dict[str, Any] = {
        "command": " ".join(["python", "bench/serving.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_facts(), "python": platform.python_version()},
        "skipped": {},
        "raw": {},
        "service": {},
        "layouts": {},
        "peers": {},
    }
    say(f"CPU: {describe_cpu(run['machine']['cpu'])}; load {run['machine']['cpu']['loadavg']}")
    say("preparing the real model (first run: import + OpenVINO conversion, minutes)")
    tag, model_dir, photos_dir = prepare_model()
    from kitchenware.runtime.artifacts import read_manifest
    from kitchenware.runtime.backends import AUTO_ORDER, why_unusable

    manifest = read_manifest(model_dir)
    run["model"] = tag
    run["gates"] = {
        name: record.gate.model_dump()
        for name, record in (manifest.artifacts if manifest else {}).items()
    }
    backends = []
    for backend in args.backends:
        gate = run["gates"].get(backend)
        if backend != "tensorflow" and gate is None:
            run["skipped"][f"backend {backend}"] = "no artifact in this model"
        elif backend != "tensorflow" and gate["images"] == 0:  # e.g. bf16 on a CPU without it
            run["skipped"][f"backend {backend}"] = gate["reason"]
        else:
            backends.append(backend)
    run["gate_marks"] = {
        b: " (failed gate)" for b in backends if b in run["gates"] and not run["gates"][b]["passed"]
    }
    run["default_backend"] = next(b for b in AUTO_ORDER if why_unusable(model_dir, b) is None)
    default = run["default_backend"]
    images = [path.read_bytes() for path in sorted(photos_dir.glob("*.jpg"))]
    say(f"model {tag}; backends {backends}; auto = {default}; {len(images)} photos")

    def stage(section: str, key: str, measure: Callable[[], Any]) -> None:
        say(f"{section} {key}")
        if (result := attempt(run, f"{section} {key}", measure)) is not None:
            run[section][key] = result

    for backend in backends:
        stage("raw", backend, partial(run_raw, model_dir, backend, photos_dir, batches))
    load = partial(measure_server, images=images, concurrencies=concurrencies, rounds=rounds)
    lean_s = 0.0 if args.quick else args.wrk_seconds
    if lean_s and wrk_path() is None:
        run["skipped"]["lean client (wrk)"] = "wrk is not installed: deploy/system-packages.sh"
        lean_s = 0.0
    lean = partial(load, lean_seconds=lean_s)
    for backend in backends:
        measure = lean if backend == default else load
        stage("service", backend, partial(measure, service(tag, backend), "/classify"))
    if not args.no_layouts and default.startswith("openvino"):
        for name, env in layouts(os.cpu_count() or 2).items():
            stage("layouts", name, partial(load, service(tag, default, **env), "/classify"))
    if not args.no_peers:
        stage("peers", "litserve", partial(lean, running_litserve(model_dir, default), "/predict"))
        stage("peers", "naive", partial(load, running_peer(model_dir), "/predict"))
    run["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    run["wall_s"] = time.perf_counter() - started
    run["comparison"] = [comparison(run, c) for c in concurrencies]
    run["targets"] = targets(run)
    run["targets_wrk"] = targets(run, "lean_levels") if lean_s else {}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "serving.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    print(report(run, len(images)))
    print(f"\nwrote {OUT_DIR / 'serving.json'}")
    return 0


def report(run: dict[str, Any], photos: int) -> str:
    cpu = run["machine"]["cpu"]
    lines = [
        f"\n{run['model']}, {photos} real photos; {run['wall_s']:.0f} s",
        f"CPU: {describe_cpu(cpu)}",
        f"1-min load average {cpu['loadavg'][0]:.2f} -> {run['machine']['loadavg_end'][0]:.2f}",
        *(f"skipped {stage}: {reason}" for stage, reason in run["skipped"].items()),
        *(f"gate {name}: {gate['reason']}" for name, gate in run["gates"].items()),
        f"auto serves: {run['default_backend']}",
        *(
            f"asked for {b}, answered by {e['served_runtime']}"
            for b, e in run["service"].items()
            if e.get("served_runtime") not in (None, b)
        ),
        "",
        table(run),
        "",
        *(f"{'MET ' if met else 'MISS'} {target}" for target, met in run["targets"].items()),
        *(["", "the same targets with the lean client (wrk):"] if run.get("targets_wrk") else []),
        *(f"{'MET ' if ok else 'MISS'} {t} [wrk]" for t, ok in run.get("targets_wrk", {}).items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

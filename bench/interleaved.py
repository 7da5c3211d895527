"""Issue 17's targets on interleaved medians: raw pipeline, service and LitServe in turn.

`bench/serving.py` measures its stages one after another, minutes apart; on a VM whose
speed drifts by minutes (RESULTS.md section 1: the raw pipeline alone moved 91 -> 114 img/s
between two runs) a ratio inside one run moves with the drift. Here each round measures,
in turn, for the default backend with the shipped settings:
the raw pipeline at batch 1 and 16 (a fresh subprocess), the service at c=1 and 16 with the
Python client and with wrk, then the peer the same way, each server started for its turn
only. The targets are judged on the median of the rounds; every round is printed too.
Loopback only, bounded by `--rounds`.

    python bench/interleaved.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import OUT_DIR, cpu_facts, describe_cpu
from servers import running_litserve
from serving import (
    LEAN_CONCURRENCIES,
    lean_levels,
    levels,
    prepare_model,
    run_raw,
    say,
    service,
    targets,
)
from wrk_load import wrk_path

REQUESTS_PER_CLIENT = 24
NUMBERS = ("images_per_s", "server_cpu_ms_per_image", "client_cpu_ms_per_image")


def median_level(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One level (same concurrency) over the rounds: medians, errors summed."""
    out = dict(rounds[0])
    for key in NUMBERS:
        values = [r[key] for r in rounds if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["latency_ms"] = {
        k: statistics.median(r["latency_ms"][k] for r in rounds) for k in ("p50", "p90", "p99")
    }
    errors: dict[str, int] = {}
    for r in rounds:
        for kind, count in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
    out["errors"] = errors
    parts = {name for r in rounds for name in r.get("server_timing_p50_ms", {})}
    out["server_timing_p50_ms"] = {
        name: statistics.median(r["server_timing_p50_ms"][name] for r in rounds)
        for name in parts
        if all(name in r.get("server_timing_p50_ms", {}) for r in rounds)
    }
    return out


def median_levels(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [median_level([r[i] for r in rounds]) for i in range(len(rounds[0]))]


def median_raw(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    batches = []
    for i, first in enumerate(rounds[0]["batches"]):
        same = [r["batches"][i] for r in rounds]
        batches.append(
            {
                "batch_size": first["batch_size"],
                "images_per_s": statistics.median(b["images_per_s"] for b in same),
                "cpu_ms_per_image": statistics.median(b["cpu_ms_per_image"] for b in same),
                "latency_ms": {"p50": statistics.median(b["latency_ms"]["p50"] for b in same)},
                "predict_ms": {"p50": statistics.median(b["predict_ms"]["p50"] for b in same)},
            }
        )
    return {"batches": batches, "decode_ms": {
        "p50": statistics.median(r["decode_ms"]["p50"] for r in rounds)}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    if wrk_path() is None:
        raise SystemExit("wrk is not installed: run deploy/system-packages.sh as root")
    started = time.perf_counter()
    tag, model_dir, photos_dir = prepare_model()
    from kitchenware.runtime.backends import AUTO_ORDER, why_unusable

    backend = next(b for b in AUTO_ORDER if why_unusable(model_dir, b) is None)
    images = [path.read_bytes() for path in sorted(photos_dir.glob("*.jpg"))]
    cpu = cpu_facts()
    say(f"CPU: {describe_cpu(cpu)}; load {cpu['loadavg']}; {tag}, auto = {backend}")
    rounds: list[dict[str, Any]] = []
    # One server up at a time: the LitServe peer's idle workers poll their queues (15 % of a
    # core measured here), which would tax whichever server is being measured beside it.
    servers = {
        "service": (lambda: service(tag, backend), "/classify"),
        "litserve": (lambda: running_litserve(model_dir, backend), "/predict"),
    }
    for k in range(args.rounds):
        say(f"round {k + 1}/{args.rounds}: raw {backend}")
        one: dict[str, Any] = {"raw": run_raw(model_dir, backend, photos_dir, [1, 16])}
        for name, (start, path) in servers.items():
            say(f"round {k + 1}/{args.rounds}: {name}")
            with start() as server:
                url, pid = server.base_url + path, server.process.pid
                one[name] = {
                    "levels": asyncio.run(
                        levels(url, images, LEAN_CONCURRENCIES, REQUESTS_PER_CLIENT, pid)
                    ),
                    "lean_levels": lean_levels(url, images, args.wrk_seconds, pid),
                }
        one["loadavg"] = cpu_facts()["loadavg"]
        rounds.append(one)
    view = {
        "default_backend": backend,
        "raw": {backend: median_raw([r["raw"] for r in rounds])},
        "service": {
            backend: {
                key: median_levels([r["service"][key] for r in rounds])
                for key in ("levels", "lean_levels")
            }
        },
        "peers": {
            "litserve": {
                key: median_levels([r["litserve"][key] for r in rounds])
                for key in ("levels", "lean_levels")
            }
        },
    }
    # The naive peer and c=4/32 are bench/serving.py's; here c=1 and 16 only.
    python = {t: ok for t, ok in targets(view).items() if "naive" not in t and "c=1-32" not in t}
    lean = targets(view, "lean_levels")
    result = {
        "command": " ".join(["python", "bench/interleaved.py", *(argv or sys.argv[1:])]),
        "cpu": cpu,
        "rounds": rounds,
        "medians": view,
        "targets_python": python,
        "targets_wrk": lean,
        "wall_s": time.perf_counter() - started,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "interleaved.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    view, backend = result["medians"], result["medians"]["default_backend"]
    lines = [f"CPU: {describe_cpu(result['cpu'])}; {len(result['rounds'])} rounds, "
             f"{result['wall_s']:.0f} s; load after each round "
             + ", ".join(f"{r['loadavg'][0]:.1f}" for r in result["rounds"])]  # fmt: skip
    for k, one in enumerate([*result["rounds"], None]):
        source = one if one is not None else {
            "raw": view["raw"][backend], "service": view["service"][backend],
            "litserve": view["peers"]["litserve"],
        }  # fmt: skip
        raw = {b["batch_size"]: b for b in source["raw"]["batches"]}
        cells = [
            f"{'median' if one is None else f'round {k + 1}':<8} raw b16 "
            f"{raw[16]['images_per_s']:6.1f} img/s {raw[16]['cpu_ms_per_image']:5.1f} ms CPU, "
            f"b1 p50 {raw[1]['latency_ms']['p50']:5.1f} ms"
        ]
        for name in ("service", "litserve"):
            for key, client in (("levels", "py"), ("lean_levels", "wrk")):
                for lv in source[name][key]:
                    cells.append(
                        f"{name} {client} c={lv['concurrency']}: {lv['images_per_s']:.1f} img/s "
                        f"p50 {lv['latency_ms']['p50']:.1f} ms "
                        f"CPU {lv['server_cpu_ms_per_image'] or 0:.1f}"
                    )
        lines.append(" | ".join(cells))
    lines += ["", c1_split(view["raw"][backend], view["service"][backend]["levels"]), ""]
    lines += [f"{'MET ' if ok else 'MISS'} {t} [Python client, median]"
              for t, ok in result["targets_python"].items()]  # fmt: skip
    lines += [f"{'MET ' if ok else 'MISS'} {t} [wrk, median]"
              for t, ok in result["targets_wrk"].items()]  # fmt: skip
    return "\n".join(lines)


def c1_split(raw: dict[str, Any], levels: list[dict[str, Any]]) -> str:
    """Where a lone photo's time goes, served (Server-Timing medians, Python client) beside
    the raw pipeline at batch 1: what the c=1 latency target is bounded by."""
    lone = next(lv for lv in levels if lv["concurrency"] == 1)
    parts, b1 = lone.get("server_timing_p50_ms", {}), raw["batches"][0]
    if not parts:
        return "c=1 split: no Server-Timing in the answers"
    return (
        f"c=1 split, medians: served p50 {lone['latency_ms']['p50']:.1f} ms = decode "
        f"{parts['decode']:.1f} + infer {parts['infer']:.1f} + outside the model call "
        f"{parts['outside_model']:.1f} (of which queue {parts['queue']:.1f}, rest of the app "
        f"{parts['app'] - parts['queue'] - parts['decode'] - parts['infer']:.1f}, before and "
        f"after the app {lone['latency_ms']['p50'] - parts['app']:.1f}; per-part medians, so "
        f"the sum is approximate) | raw b1 p50 {b1['latency_ms']['p50']:.1f} ms = decode "
        f"{raw['decode_ms']['p50']:.1f} + predict {b1['predict_ms']['p50']:.1f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""Serving benchmark, real model and real photos: every backend raw vs served, and a naive peer.

The published kitchenware Xception (150 px, imported with its OpenVINO IR and gate results
into a cached store under bench/out/bentoml-home) and the package's 18 real JPEGs
(~1000x750). In one run, for each backend (tensorflow, openvino-fp32, openvino-bf16 when
the CPU has bf16, openvino-int8, also when it failed its gate, marked so):
1. raw in-process pipeline (decode + predict, bench/raw_pipeline.py) at batch 1/8/16/32;
2. `bentoml serve service:Kitchenware` with that backend, /classify at concurrency 1/4/16/32;
then the former two-process layout (bench/service_two_process.py) with the fastest OpenVINO
backend, and the naive Flask peer (TF `model.predict` per request). Prints the table, the
ratios and the issue's targets; writes bench/out/serving.json.

    python bench/serving.py            # about 10-15 minutes on 2 quiet cores
    python bench/serving.py --quick    # c=1,4 and batch 1,8, few requests: a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import OUT_DIR, REPO_ROOT
from loadgen import run_load
from servers import running_peer, running_service

from kitchenware.localserver import descendants, process_table, process_tree_cpu_s

CONCURRENCIES = [1, 4, 16, 32]
BATCHES = [1, 8, 16, 32]
BACKENDS = ["tensorflow", "openvino-fp32", "openvino-bf16", "openvino-int8"]
HOME = OUT_DIR / "bentoml-home"  # cached: the import + conversion run once
REQUEST_TIMEOUT_S = 120.0
# Targets of issue 10, each checked on numbers of this run.
TARGET_INT8_OVER_TF_AT_16 = 3.5
TARGET_SERVICE_OVER_RAW_AT_16 = 0.9
TARGET_OVER_PEER_AT_16 = 5.0
TARGET_C1_P50_MS = 20.0


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_model() -> tuple[str, Path, Path]:
    """The real model in the cached store (imported + converted once); tag, dir, photos dir."""
    os.environ["BENTOML_HOME"] = str(HOME)
    from kitchenware.core.pretrained import import_pretrained, real_photos
    from kitchenware.core.store import model_dir

    result = import_pretrained()
    photos = real_photos()
    return result.tag, model_dir(result.tag), photos.directory


def run_raw(model_dir: Path, backend: str, photos: Path, batches: list[int]) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).with_name("raw_pipeline.py")),
        "--model-dir",
        str(model_dir),
        "--backend",
        backend,
        "--photos",
        str(photos),
        "--batches",
        *map(str, batches),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.PIPE)
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


async def levels(
    url: str, images: list[bytes], concurrencies: list[int], rounds: int, pid: int
) -> list[dict[str, Any]]:
    out = []
    for concurrency in concurrencies:
        result = await run_load(
            url,
            concurrency=concurrency,
            requests=max(8, concurrency * rounds),
            images=images,
            timeout_s=REQUEST_TIMEOUT_S,
            warmup_requests=concurrency,
            cpu_probe=partial(process_tree_cpu_s, pid),
        )
        out.append({**result.as_dict(), "loadavg_after": os.getloadavg()[0]})
        say(
            f"  c={concurrency:>2}: {result.images_per_s:6.1f} img/s, p50 "
            f"{result.latency_ms['p50']:6.0f} ms, p99 {result.latency_ms['p99']:6.0f} ms, "
            f"cpu {result.server_cpu_ms_per_image or 0:5.1f} ms/img, errors {result.errors or 0}"
        )
    return out


def serve_levels(
    tag: str, backend: str, images: list[bytes], concurrencies: list[int], rounds: int, **kw: Any
) -> dict[str, Any]:
    env = {"KITCHENWARE_BACKEND": backend, "KITCHENWARE_ALLOW_FAILED_GATE": "true"}
    name = kw.pop("name", f"service-{backend}")
    with running_service(tag, HOME, env, name=name, **kw) as srv:
        rss = worker_rss_mb(srv.process.pid)
        measured = asyncio.run(
            levels(srv.base_url + "/classify", images, concurrencies, rounds, srv.process.pid)
        )
    return {"ready_s": srv.ready_s, "rss_mb_at_rest": rss, "levels": measured}


def worker_rss_mb(root_pid: int) -> dict[str, float]:
    """RSS of every process of a server, right after it turned ready (at rest)."""
    sizes = {}
    for pid in sorted(descendants(process_table(), root_pid)):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes[f"{pid} {cmd}"] = int(line.split()[1]) / 1024
    return sizes


def by_c(run: dict[str, Any], key: str, c: int) -> dict[str, Any] | None:
    entry = run.get(key)
    if not entry:
        return None
    return next((level for level in entry["levels"] if level["concurrency"] == c), None)


def raw_best(run: dict[str, Any], backend: str) -> float:
    raw = run["raw"].get(backend)
    return max(b["images_per_s"] for b in raw["batches"]) if raw else float("nan")


def ratios(run: dict[str, Any], fastest_ov: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"service_over_raw_at_16": {}, "over_peer_at_16": {}}
    peer16 = by_c(run, "peer", 16)
    for backend in run["service"]:
        level = by_c(run["service"], backend, 16)
        if level is None:
            continue
        out["service_over_raw_at_16"][backend] = level["images_per_s"] / raw_best(run, backend)
        if peer16 and peer16["images_per_s"]:
            out["over_peer_at_16"][backend] = {
                "throughput": level["images_per_s"] / peer16["images_per_s"],
                "p99_ms": level["latency_ms"]["p99"],
                "peer_p99_ms": peer16["latency_ms"]["p99"],
            }
    tf16, int8 = by_c(run["service"], "tensorflow", 16), by_c(run["service"], "openvino-int8", 16)
    if tf16 and int8:
        out["int8_over_tensorflow_at_16"] = int8["images_per_s"] / tf16["images_per_s"]
    if fastest_ov and run.get("two_process"):
        one, two = by_c(run["service"], fastest_ov, 16), by_c(run, "two_process", 16)
        if one and two:
            out["one_over_two_processes_at_16"] = {
                "throughput": one["images_per_s"] / two["images_per_s"],
                "cpu_ms_per_image_one": one["server_cpu_ms_per_image"],
                "cpu_ms_per_image_two": two["server_cpu_ms_per_image"],
            }
    default = run.get("default_backend")
    c1 = by_c(run["service"], default, 1) if default else None
    default16 = by_c(run["service"], default, 16) if default else None
    errors = {
        f"{b} c={lv['concurrency']}": lv["errors"]
        for b, entry in run["service"].items()
        for lv in entry["levels"]
        if lv["errors"]
    }
    over_peer = out["over_peer_at_16"].get(default or "", {})
    out["targets"] = {
        f"int8 >= {TARGET_INT8_OVER_TF_AT_16}x tensorflow served at c=16": out.get(
            "int8_over_tensorflow_at_16", 0
        )
        >= TARGET_INT8_OVER_TF_AT_16,
        f"service/raw >= {TARGET_SERVICE_OVER_RAW_AT_16} at c=16 (default {default})": bool(
            default in out["service_over_raw_at_16"]
            and out["service_over_raw_at_16"][default] >= TARGET_SERVICE_OVER_RAW_AT_16
        ),
        f"service >= {TARGET_OVER_PEER_AT_16}x peer at c=16 with lower p99": bool(
            over_peer
            and over_peer["throughput"] >= TARGET_OVER_PEER_AT_16
            and over_peer["p99_ms"] < over_peer["peer_p99_ms"]
        ),
        f"p50 at c=1 <= {TARGET_C1_P50_MS} ms (default)": bool(
            c1 and c1["latency_ms"]["p50"] <= TARGET_C1_P50_MS
        ),
        "zero errors c=1-32 (all backends)": not errors,
    }
    out["errors"] = errors
    out["default_at_16_images_per_s"] = default16["images_per_s"] if default16 else None
    return out


def table(run: dict[str, Any]) -> str:
    lines = [
        f"{'raw pipeline (decode+predict)':<34}" + "".join(f"{'b=' + str(b):>9}" for b in BATCHES)
    ]
    for backend, raw in run["raw"].items():
        cells = {b["batch_size"]: b["images_per_s"] for b in raw["batches"]}
        lines.append(
            f"  {backend + run['gate_marks'].get(backend, ''):<32}"
            + "".join(f"{cells[b]:9.1f}" if b in cells else f"{'-':>9}" for b in BATCHES)
        )
    lines.append("")
    header = f"{'served /classify':<34}{'conc':>5}{'img/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    lines.append(header + f"{'cpu ms/img':>11}{'errors':>8}")
    rows = [(f"service {b}{run['gate_marks'].get(b, '')}", e) for b, e in run["service"].items()]
    if run.get("two_process"):
        rows.append((f"two processes {run['two_process']['backend']}", run["two_process"]))
    if run.get("peer"):
        rows.append(("naive Flask peer (TF predict)", run["peer"]))
    for name, entry in rows:
        for lv in entry["levels"]:
            cpu = lv["server_cpu_ms_per_image"]
            lines.append(
                f"  {name:<32}{lv['concurrency']:>5}{lv['images_per_s']:8.1f}"
                f"{lv['latency_ms']['p50']:8.0f}{lv['latency_ms']['p99']:8.0f}"
                f"{(cpu or 0):11.1f}{sum(lv['errors'].values()):>8}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: c=1,4, batch 1,8")
    parser.add_argument("--backends", nargs="+", default=BACKENDS)
    parser.add_argument("--rounds", type=int, default=6, help="requests per client per level")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--no-two-process", action="store_true")
    args = parser.parse_args(argv)
    concurrencies = [1, 4] if args.quick else CONCURRENCIES
    batches = [1, 8] if args.quick else BATCHES
    rounds = 2 if args.quick else args.rounds
    started = time.perf_counter()
    run: dict[str, Any] = {
        "command": " ".join(["python", "bench/serving.py", *(argv or sys.argv[1:])]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
    }
    say("preparing the real model (first run: import + OpenVINO conversion, minutes)")
    tag, model_dir, photos_dir = prepare_model()
    from kitchenware.core.artifacts import read_manifest
    from kitchenware.core.backends import AUTO_ORDER, why_unusable

    manifest = read_manifest(model_dir)
    run["model"] = tag
    run["gates"] = {
        name: record.gate.model_dump()
        for name, record in (manifest.artifacts if manifest else {}).items()
    }
    available = [b for b in args.backends if b == "tensorflow" or b in run["gates"]]
    unsupported = [b for b in available if b != "tensorflow" and run["gates"][b]["images"] == 0]
    backends = [b for b in available if b not in unsupported]  # e.g. bf16 on a CPU without it
    run["skipped_backends"] = {b: run["gates"][b]["reason"] for b in unsupported}
    run["gate_marks"] = {
        b: " (failed gate)" for b in backends if b in run["gates"] and not run["gates"][b]["passed"]
    }
    run["default_backend"] = next(b for b in AUTO_ORDER if why_unusable(model_dir, b) is None)
    images = [path.read_bytes() for path in sorted(photos_dir.glob("*.jpg"))]
    say(f"model {tag}; backends {backends}; auto = {run['default_backend']}; {len(images)} photos")

    run["raw"] = {}
    for backend in backends:
        say(f"raw pipeline {backend}")
        run["raw"][backend] = run_raw(model_dir, backend, photos_dir, batches)
    run["service"] = {}
    for backend in backends:
        say(f"service {backend}")
        run["service"][backend] = serve_levels(tag, backend, images, concurrencies, rounds)
    fastest_ov = max(
        (b for b in backends if b.startswith("openvino")),
        key=lambda b: by_c(run["service"], b, concurrencies[-1])["images_per_s"],  # type: ignore[index]
        default=None,
    )
    if fastest_ov and not args.no_two_process:
        say(f"two-process layout {fastest_ov}")
        two = serve_levels(
            tag,
            fastest_ov,
            images,
            concurrencies,
            rounds,
            name="two-process",
            target="bench.service_two_process:Kitchenware",
        )
        run["two_process"] = {"backend": fastest_ov, **two}
    if not args.no_peer:
        say("naive Flask peer")
        with running_peer(model_dir) as peer:
            run["peer"] = {
                "ready_s": peer.ready_s,
                "levels": asyncio.run(
                    levels(
                        peer.base_url + "/predict", images, concurrencies, rounds, peer.process.pid
                    )
                ),
            }
    run["machine"]["loadavg_end"] = os.getloadavg()
    run["wall_s"] = time.perf_counter() - started
    run["ratios"] = ratios(run, fastest_ov)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "serving.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    load = run["machine"]
    print(
        f"\n{tag}, {len(images)} real photos; {os.cpu_count()} CPUs; 1-min load "
        f"{load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f}; {run['wall_s']:.0f} s"
    )
    for name, reason in {**run["skipped_backends"]}.items():
        print(f"skipped {name}: {reason}")
    for gate in run["gates"].values():
        print(f"gate: {gate['reason']}")
    print(f"auto serves: {run['default_backend']}\n")
    print(table(run))
    print("\n" + json.dumps({k: v for k, v in run["ratios"].items() if k != "targets"}, indent=1))
    for target, met in run["ratios"]["targets"].items():
        print(f"{'MET ' if met else 'MISS'} {target}")
    print(f"\nwrote {OUT_DIR / 'serving.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

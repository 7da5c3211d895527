"""Turn one benchmark run into the ratios the issue asks for, a text table and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Targets from issue 5; each is checked on numbers measured in the same run.
TARGET_SERVICE_OVER_RAW = 0.95
TARGET_SERVICE_OVER_PEER_AT_16 = 2.0
TARGET_C1_P50_OVER_RAW_MS = 15.0


def _by_concurrency(levels: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {level["concurrency"]: level for level in levels}


def compute_ratios(run: dict[str, Any]) -> dict[str, Any]:
    """Service vs raw and vs peer, plus a pass/fail line per target."""
    raw_batches = run["raw"]["batches"]
    raw_best = max(raw_batches, key=lambda b: b["images_per_s"])
    raw_b1 = next((b for b in raw_batches if b["batch_size"] == 1), None)
    service = _by_concurrency(run["service"])
    peer = _by_concurrency(run["peer"])

    over_raw = {
        c: service[c]["images_per_s"] / raw_best["images_per_s"] for c in service if c >= 16
    }
    over_peer = {
        c: {
            "throughput": service[c]["req_per_s"] / peer[c]["req_per_s"]
            if peer[c]["req_per_s"]
            else float("inf"),
            "service_p99_ms": service[c]["latency_ms"]["p99"],
            "peer_p99_ms": peer[c]["latency_ms"]["p99"],
        }
        for c in service
        if c in peer
    }
    c1_gap = (
        service[1]["latency_ms"]["p50"] - raw_b1["latency_ms"]["p50"]
        if 1 in service and raw_b1
        else None
    )
    errors = {c: level["errors"] for c, level in service.items() if level["errors"]}
    targets = {
        "service_over_raw_best_at_16_32": bool(over_raw)
        and min(over_raw.values()) >= TARGET_SERVICE_OVER_RAW,
        "service_over_peer_at_16": 16 in over_peer
        and over_peer[16]["throughput"] >= TARGET_SERVICE_OVER_PEER_AT_16
        and over_peer[16]["service_p99_ms"] < over_peer[16]["peer_p99_ms"],
        "service_c1_p50_within_15ms_of_raw_b1": c1_gap is not None
        and c1_gap <= TARGET_C1_P50_OVER_RAW_MS,
        "service_zero_errors_c1_to_c32": not errors,
    }
    return {
        "raw_best_images_per_s": raw_best["images_per_s"],
        "raw_best_batch_size": raw_best["batch_size"],
        "service_over_raw_best": over_raw,
        "service_batch_endpoint_over_raw_best": run["service_batch"]["images_per_s"]
        / raw_best["images_per_s"],
        "service_over_peer": over_peer,
        "service_c1_p50_minus_raw_b1_p50_ms": c1_gap,
        "service_errors": errors,
        "targets_met": targets,
    }


def _errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}:{v}" for k, v in errors.items()) or "0"


def _cpu_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_table(run: dict[str, Any]) -> str:
    header = (
        f"{'server':<26}{'conc':>5}{'ok/req':>9}{'req/s':>8}{'img/s':>8}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'cpu ms/img':>11}  errors"
    )
    lines = [header, "-" * len(header)]
    for batch in run["raw"]["batches"]:
        lat = batch["latency_ms"]
        calls = batch["calls"]
        lines.append(
            f"{'raw in-process b=' + str(batch['batch_size']):<26}{'-':>5}{f'{calls}/{calls}':>9}"
            f"{batch['images_per_s'] / batch['batch_size']:>8.2f}{batch['images_per_s']:>8.2f}"
            f"{lat['p50']:>9.1f}{lat['p90']:>9.1f}{lat['p99']:>9.1f}"
            f"{_cpu_text(batch.get('cpu_ms_per_image')):>11}  0"
        )
    rows = [("service /classify", level) for level in run["service"]]
    batch = run["service_batch"]
    rows.append((f"service /classify_batch x{batch['images_per_request']}", batch))
    rows += [("naive Flask peer", level) for level in run["peer"]]
    for name, level in rows:
        lat = level["latency_ms"]
        ok_of_requests = f"{level['ok']}/{level['requests']}"
        lines.append(
            f"{name:<26}{level['concurrency']:>5}{ok_of_requests:>9}"
            f"{level['req_per_s']:>8.2f}{level['images_per_s']:>8.2f}"
            f"{lat['p50']:>9.1f}{lat['p90']:>9.1f}{lat['p99']:>9.1f}"
            f"{_cpu_text(level.get('server_cpu_ms_per_image')):>11}  "
            f"{_errors_text(level['errors'])}"
        )
    return "\n".join(lines)


def format_ratios(ratios: dict[str, Any]) -> str:
    lines = [
        f"raw best: {ratios['raw_best_images_per_s']:.2f} img/s at batch "
        f"{ratios['raw_best_batch_size']}",
    ]
    for c, value in ratios["service_over_raw_best"].items():
        lines.append(f"service / raw best at concurrency {c}: {value:.2f}")
    lines.append(
        f"service /classify_batch / raw best: {ratios['service_batch_endpoint_over_raw_best']:.2f}"
    )
    for c, value in ratios["service_over_peer"].items():
        lines.append(
            f"service / peer at concurrency {c}: {value['throughput']:.2f}x throughput, "
            f"p99 {value['service_p99_ms']:.0f} ms vs {value['peer_p99_ms']:.0f} ms"
        )
    gap = ratios["service_c1_p50_minus_raw_b1_p50_ms"]
    if gap is not None:
        lines.append(f"service p50 at concurrency 1 - raw batch-1 p50: {gap:+.1f} ms")
    for name, met in ratios["targets_met"].items():
        lines.append(f"target {name}: {'MET' if met else 'NOT MET'}")
    return "\n".join(lines)


def write_plot(run: dict[str, Any], path: Path) -> Path:
    """Throughput and p99 vs concurrency for service, peer and raw (x = batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tput, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = [
        ("service /classify", run["service"], "concurrency", "o-"),
        ("naive Flask peer", run["peer"], "concurrency", "s-"),
    ]
    for label, levels, key, style in series:
        xs = [level[key] for level in levels]
        ax_tput.plot(xs, [level["images_per_s"] for level in levels], style, label=label)
        ax_p99.plot(xs, [level["latency_ms"]["p99"] / 1000 for level in levels], style, label=label)
    raw = run["raw"]["batches"]
    raw_x = [b["batch_size"] for b in raw]
    ax_tput.plot(raw_x, [b["images_per_s"] for b in raw], "^--", label="raw model (x = batch)")
    ax_p99.plot(
        raw_x, [b["latency_ms"]["p99"] / 1000 for b in raw], "^--", label="raw model (x = batch)"
    )
    ax_tput.set(xscale="log", xlabel="concurrent clients", ylabel="images / s", title="Throughput")
    ax_p99.set(
        xscale="log", xlabel="concurrent clients", ylabel="p99 latency (s)", title="p99 latency"
    )
    for axis in (ax_tput, ax_p99):
        axis.set_xticks(sorted({*raw_x, *(level["concurrency"] for level in run["service"])}))
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    load = run["machine"].get("loadavg_start", [float("nan")])[0]
    fig.suptitle(f"Xception 299 px, {run['machine']['cpus']} CPUs, 1-min load at start {load:.2f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

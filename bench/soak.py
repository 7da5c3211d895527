"""Soak: minutes of closed-loop load with real photos; errors, worker RSS and open fds over time.

    python bench/soak.py --duration 600 --concurrency 8              # starts `bentoml serve`
    python bench/soak.py --url http://127.0.0.1:3000 --pid PID ...   # a server already running

Passes (exit 0) when no request failed, every worker's RSS grew less than 10 % from the
start of the second window to the end, and no worker's open file descriptors grew.
The windows: minute 2 vs the last minute (10-minute run); for short runs, the second vs the
last quarter. Samples go to bench/out/soak.json and a plot to bench/out/soak.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import OUT_DIR, real_photos
from loadgen import Answer, closed_loop, loopback_client
from servers import running_service

from kitchenware.localserver import descendants, process_table

RSS_GROWTH_LIMIT = 0.10


@dataclass
class Sample:
    t_s: float
    ok: int  # answers 200 since the previous sample
    errors: int
    p50_ms: float
    workers: dict[str, dict[str, int]]  # label -> {"rss_kb", "fds", "threads"}


@dataclass
class SoakResult:
    duration_s: float
    concurrency: int
    requests: int
    ok: int
    outcomes: dict[str, int]
    samples: list[Sample] = field(default_factory=list)
    rss_growth: dict[str, float] = field(default_factory=dict)  # label -> fraction
    fd_growth: dict[str, int] = field(default_factory=dict)
    windows_s: tuple[float, float, float, float] = (0, 0, 0, 0)
    load_average: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.ok == self.requests
            and all(g < RSS_GROWTH_LIMIT for g in self.rss_growth.values())
            and all(g <= 0 for g in self.fd_growth.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def worker_label(pid: int) -> str:
    """A stable name for a server process: its service (and worker id) from the command line."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = [a.decode(errors="replace") for a in args if a]
    if "_bentoml_impl.worker.service" not in " ".join(text):
        return f"arbiter:{pid}" if "serve" in text[1:3] or "serve" in " ".join(text) else str(pid)
    service = text[text.index("--service-name") + 1] if "--service-name" in text else "entry"
    worker = text[text.index("--worker-id") + 1] if "--worker-id" in text else "?"
    return f"{service or 'entry'}:{worker}"


def probe_workers(server_pid: int) -> dict[str, dict[str, int]]:
    """RSS, open fds and threads of every process in the server's tree."""
    found: dict[str, dict[str, int]] = {}
    for pid in sorted(descendants(process_table(), server_pid)):
        try:
            status = _status(pid)
            found[worker_label(pid)] = {
                "pid": pid,
                "rss_kb": int(status["VmRSS"].split()[0]),
                **open_fds(pid),
                "threads": int(status["Threads"]),
            }
        except (OSError, KeyError, ValueError):  # exited while we looked
            continue
    return found


def open_fds(pid: int) -> dict[str, int]:
    """Open files and pipes ("fds", what a leak grows) and sockets, apart: sockets follow the
    clients' connections, which the kernel hands to either worker as they reconnect."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed while we looked
            continue
    sockets = sum(target.startswith("socket:") for target in targets)
    return {"fds": len(targets) - sockets, "sockets": sockets}


def windows(duration_s: float) -> tuple[float, float, float, float]:
    """(start, end) of the early and the late window compared for growth."""
    if duration_s >= 300:
        return (60.0, 120.0, duration_s - 60.0, duration_s)
    quarter = duration_s / 4
    return (quarter, 2 * quarter, 3 * quarter, duration_s)


def growth(samples: list[Sample], win: tuple[float, float, float, float], key: str) -> dict:
    """Per worker: late-window mean over early-window mean (RSS), or late min - early max (fds)."""
    early = [s for s in samples if win[0] <= s.t_s < win[1]]
    late = [s for s in samples if win[2] <= s.t_s <= win[3] + 1]
    result: dict[str, float] = {}
    for label in early[0].workers if early else []:
        a = [s.workers[label][key] for s in early if label in s.workers]
        b = [s.workers[label][key] for s in late if label in s.workers]
        if not a or not b:
            continue
        if key == "rss_kb":
            result[label] = round(sum(b) / len(b) / (sum(a) / len(a)) - 1, 4)
        else:
            # A leak stays: the late window's fewest open files exceed the early window's
            # most. A file open at one sample (a photo being written) is not a leak.
            result[label] = min(b) - max(a)
    return result


async def soak(
    url: str,
    server_pid: int,
    *,
    duration_s: float,
    concurrency: int,
    photos: list[bytes],
    sample_every_s: float = 5.0,
    timeout_s: float = 60.0,
) -> SoakResult:
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    window_ok = window_errors = 0
    samples: list[Sample] = []
    started = time.monotonic()
    deadline = started + duration_s

    async def count(answer: Answer) -> None:
        nonlocal window_ok, window_errors
        outcomes[answer.outcome] += 1
        if answer.outcome == "200":
            window_ok += 1
            latencies.append(answer.seconds)
        else:
            window_errors += 1

    async def sampler() -> None:
        nonlocal window_ok, window_errors
        while time.monotonic() < deadline:
            await asyncio.sleep(sample_every_s)
            recent = sorted(latencies[-max(window_ok, 1) :])
            samples.append(
                Sample(
                    t_s=round(time.monotonic() - started, 1),
                    ok=window_ok,
                    errors=window_errors,
                    p50_ms=round(1000 * recent[len(recent) // 2], 1) if recent else 0.0,
                    workers=await asyncio.to_thread(probe_workers, server_pid),
                )
            )
            window_ok = window_errors = 0

    async with loopback_client(url, concurrency, timeout_s) as client:
        load = closed_loop(
            client,
            f"{url}/classify",
            clients=concurrency,
            images=photos,
            more=lambda _: time.monotonic() < deadline,
            on_answer=count,
        )
        await asyncio.gather(sampler(), load)

    win = windows(duration_s)
    return SoakResult(
        duration_s=round(time.monotonic() - started, 1),
        concurrency=concurrency,
        requests=sum(outcomes.values()),
        ok=outcomes.get("200", 0),
        outcomes=dict(sorted(outcomes.items())),
        samples=samples,
        rss_growth=growth(samples, win, "rss_kb"),
        fd_growth=growth(samples, win, "fds"),
        windows_s=win,
        load_average=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
    )


def plot(result: SoakResult, path: Path) -> Path:
    """RSS and open fds per worker, and answers per second, over the run."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 7.5))
    rss_ax, fd_ax, rate_ax = figure.subplots(3, 1, sharex=True)
    times = [s.t_s / 60 for s in result.samples]
    labels = sorted({label for s in result.samples for label in s.workers})
    for label in labels:
        points = [(s.t_s / 60, s.workers[label]) for s in result.samples if label in s.workers]
        if max(w["rss_kb"] for _, w in points) < 50_000:  # the tiny arbiter: not of interest
            continue
        rss_ax.plot([t for t, _ in points], [w["rss_kb"] / 1024 for _, w in points], label=label)
        fd_ax.plot([t for t, _ in points], [w["fds"] for _, w in points], label=label)
    for ax in (rss_ax, fd_ax):
        ax.axvspan(result.windows_s[0] / 60, result.windows_s[1] / 60, alpha=0.1, color="g")
        ax.axvspan(result.windows_s[2] / 60, result.windows_s[3] / 60, alpha=0.1, color="r")
    rss_ax.set_ylabel("RSS (MiB)")
    rss_ax.legend(fontsize=8)
    fd_ax.set_ylabel("open fds")
    interval = [
        (b.t_s - a.t_s) for a, b in zip(result.samples, result.samples[1:], strict=False)
    ] or [1.0]
    rate_ax.plot(times[1:], [s.ok / dt for s, dt in zip(result.samples[1:], interval, strict=True)])
    rate_ax.set_ylabel("answers 200 / s")
    rate_ax.set_xlabel("minutes")
    figure.suptitle(
        f"soak: {result.requests} requests at concurrency {result.concurrency}, "
        f"{result.requests - result.ok} failed (load {result.load_average})"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", help="a running server (give its --pid too)")
    parser.add_argument("--pid", type=int, help="pid of that server's `bentoml serve`")
    parser.add_argument("--model-tag", help="model to serve when starting one")
    parser.add_argument(
        "--bentoml-home", type=Path, default=Path(os.environ.get("BENTOML_HOME", "~/bentoml"))
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "soak.json")
    args = parser.parse_args(argv)
    photos = list(real_photos().values())

    def run(url: str, pid: int) -> SoakResult:
        return asyncio.run(
            soak(url, pid, duration_s=args.duration, concurrency=args.concurrency, photos=photos)
        )

    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid (the server's process, to read its workers' RSS)")
        result = run(args.url.rstrip("/"), args.pid)
    else:
        from kitchenware.serving.settings import ServiceSettings

        tag = args.model_tag or ServiceSettings().model_tag
        home = args.bentoml_home.expanduser()
        with running_service(tag, home, name="soak") as server:
            result = run(server.base_url, server.process.pid)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result.as_dict(), indent=1))
    plot(result, args.out.with_suffix(".png"))
    summary = {k: v for k, v in result.as_dict().items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

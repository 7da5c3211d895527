"""Slow clients: N slow-loris uploads to /classify held open while 4 ordinary clients classify
real photos. What the ordinary clients got (status counts, p50/p99), what the slow ones got
(which status, how long after opening), server CPU. Loopback only; bounded in time.

    python bench/slow_clients.py --levels 0,30,100,300 --duration 30   # starts `bentoml serve`
    python bench/slow_clients.py --url http://127.0.0.1:3000 --pid PID  # a server already up

Each slow client does what the issue's evidence did: headers and the start of a multipart
body, then one byte every `--trickle` seconds. When the server answers (a 408 past the
minimum upload rate) or drops it, the client opens a new one at once, so N slow uploads
stay open for the whole window, as an attacker would keep them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import cpu_facts, describe_cpu, percentiles_ms, process_tree_cpu_s, real_photos
from loadgen import Answer, check_loopback, closed_loop, loopback_client
from servers import running_service

BOUNDARY = "slowloris"
BUSY_PAUSE_CAP_S = 1.0  # ordinary clients honour Retry-After on 429/503, capped


def slow_head(host: str, port: int) -> bytes:
    """Headers and the start of a multipart body that promises 100 kB and never sends it."""
    return (
        f"POST /classify HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Content-Length: 100000\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


@dataclass
class SlowState:
    """What the slow clients saw: one outcome per upload the server ended, and how long
    after opening; `open_now` is sampled once a second during the ordinary window."""

    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    opened: int = 0
    open_now: int = 0
    open_samples: list[int] = field(default_factory=list)

    def ended(self, outcome: str, after_s: float) -> None:
        self.outcomes[outcome] += 1
        self.seconds.setdefault(outcome, []).append(after_s)


async def slow_upload(
    host: str, port: int, until: float, trickle_s: float, state: SlowState
) -> None:
    """One slow client: open, trickle one byte every `trickle_s`, note how the server ended
    it, open again; stops at `until` (an upload still open then is not counted)."""
    while time.monotonic() < until:
        opened = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            state.ended(f"connect {type(exc).__name__}", time.monotonic() - opened)
            await asyncio.sleep(trickle_s)
            continue
        state.opened += 1
        state.open_now += 1
        answer = asyncio.ensure_future(reader.read(65536))  # the first bytes: the status line
        try:
            writer.write(slow_head(host, port))
            while time.monotonic() < until:
                done, _ = await asyncio.wait(
                    {answer}, timeout=min(trickle_s, max(0.01, until - time.monotonic()))
                )
                if done:
                    break
                writer.write(b"\xff")
                await writer.drain()
                if time.monotonic() >= until:
                    break
        except OSError:
            await asyncio.wait({answer}, timeout=1.0)  # the answer may be on its way
        finally:
            state.open_now -= 1
        if answer.done() and not answer.cancelled():
            state.ended(outcome_of(answer), time.monotonic() - opened)
        else:
            answer.cancel()
        writer.close()


def outcome_of(answer: asyncio.Future[bytes]) -> str:
    """ "408" (the status the server sent), "closed" (EOF, no answer) or the error's name."""
    if answer.exception() is not None:
        return type(answer.exception()).__name__
    first = answer.result()
    if first.startswith(b"HTTP/"):
        return first.split(b" ", 2)[1].decode()
    return "closed" if not first else "garbage"


def server_fds(pid: int) -> tuple[int, int]:
    """(most open fds of one server process, lowest soft fd limit among them)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    fds, limits = [0], []
    for process in processes:
        try:
            fds.append(process.num_fds())
            limits.append(process.rlimit(psutil.RLIMIT_NOFILE)[0])
        except psutil.Error:
            continue
    return max(fds), min(limits, default=0)


@dataclass
class LevelResult:
    slow_clients: int
    window_s: float
    ordinary: dict[str, int]  # status -> count
    ordinary_latency_ms: dict[str, float]  # of the 200s
    slow: dict[str, int]  # how each slow upload ended -> count
    slow_after_s: dict[str, dict[str, float]]  # outcome -> min/p50/max seconds after opening
    slow_opened: int
    slow_open_min_mean: tuple[int, float]  # open slow uploads, sampled each second
    server_cpu_pct: float  # % of one core over the window, every server process
    server_cpu_ms_per_ok: float | None
    client_cpu_pct: float  # this process (ordinary + slow clients): it shares the cores
    server_max_fds: int  # most open fds of one server process, sampled each second
    server_fd_limit: int
    load_average: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def level(
    url: str,
    pid: int | None,
    *,
    slow_clients: int,
    duration_s: float,
    trickle_s: float,
    clients: int,
    photos: list[bytes],
) -> LevelResult:
    """Open `slow_clients` slow uploads, let them settle, then run `clients` ordinary closed-
    loop clients for `duration_s`; the slow clients keep N open until the window ends."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    ramp_s = 2.0
    until = time.monotonic() + ramp_s + duration_s
    state = SlowState()
    slow = [
        asyncio.create_task(slow_upload(host, port, until, trickle_s, state))
        for _ in range(slow_clients)
    ]
    await asyncio.sleep(ramp_s)

    outcomes: Counter[str] = Counter()
    latencies: list[float] = []

    async def judge(answer: Answer) -> None:
        outcomes[answer.outcome] += 1
        if answer.outcome == "200":
            latencies.append(answer.seconds)
        elif answer.response is not None and answer.response.status_code in (429, 503):
            retry_after = float(answer.response.headers.get("retry-after", "1"))
            await asyncio.sleep(min(retry_after, BUSY_PAUSE_CAP_S))

    fds = [(0, 0)]

    async def sample_open() -> None:
        """Once a second while the slow uploads are open: how many, and the server's fds."""
        while time.monotonic() < until:
            state.open_samples.append(state.open_now)
            if pid:
                fds.append(await asyncio.to_thread(server_fds, pid))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample_open())
    cpu_before = process_tree_cpu_s(pid) if pid else 0.0
    client_before = time.process_time()
    async with loopback_client(url, clients, timeout_s=60.0) as client:
        wall = await closed_loop(
            client,
            url + "/classify",
            clients=clients,
            images=photos,
            more=lambda _: time.monotonic() < until,
            on_answer=judge,
        )
    cpu_used = process_tree_cpu_s(pid) - cpu_before if pid else float("nan")
    client_used = time.process_time() - client_before
    await asyncio.gather(*slow, sampler)

    def spread(values: list[float]) -> dict[str, float]:
        values = sorted(values)
        return {
            "min": round(values[0], 1),
            "p50": round(values[len(values) // 2], 1),
            "max": round(values[-1], 1),
        }

    samples = state.open_samples or [0]
    ok = outcomes.get("200", 0)
    return LevelResult(
        slow_clients=slow_clients,
        window_s=round(wall, 1),
        ordinary=dict(sorted(outcomes.items())),
        ordinary_latency_ms={k: round(v, 1) for k, v in percentiles_ms(latencies).items()},
        slow=dict(sorted(state.outcomes.items())),
        slow_after_s={k: spread(v) for k, v in sorted(state.seconds.items())},
        slow_opened=state.opened,
        slow_open_min_mean=(min(samples), round(sum(samples) / len(samples), 1)),
        server_cpu_pct=round(100 * cpu_used / wall, 1),
        server_cpu_ms_per_ok=round(1000 * cpu_used / ok, 1) if ok else None,
        client_cpu_pct=round(100 * client_used / wall, 1),
        server_max_fds=max(count for count, _ in fds),
        server_fd_limit=min((limit for _, limit in fds if limit), default=0),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )


def raise_own_fd_limit(needed: int) -> int:
    """Hundreds of sockets in this process: lift the soft limit to the hard one if short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft < needed:
        raise SystemExit(f"this process may open {soft} files; {needed} are needed (ulimit -n)")
    return soft


def markdown_row(result: LevelResult) -> str:
    lat = result.ordinary_latency_ms
    slow = ", ".join(
        f"{count} x {outcome} after {result.slow_after_s[outcome]['min']}-"
        f"{result.slow_after_s[outcome]['max']} s"
        for outcome, count in result.slow.items()
    )
    ordinary = ", ".join(f"{count} x {status}" for status, count in result.ordinary.items())
    return (
        f"| {result.slow_clients} | {result.slow_open_min_mean[1]} | {ordinary} | "
        f"{lat['p50']:.0f} / {lat['p99']:.0f} | {slow or '-'} | {result.server_cpu_pct:.0f} % | "
        f"{result.client_cpu_pct:.0f} % | "
        f"{result.server_max_fds} / {result.server_fd_limit} | "
        f"{' '.join(map(str, result.load_average))} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="0,30,100,300", help="slow uploads per level")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each level")
    parser.add_argument("--trickle", type=float, default=2.0, help="seconds between slow bytes")
    parser.add_argument("--clients", type=int, default=4, help="ordinary closed-loop clients")
    parser.add_argument("--url", help="a running server (give its --pid for CPU and fds)")
    parser.add_argument("--pid", type=int, help="pid of that server's `bentoml serve`")
    parser.add_argument("--model-tag", help="model to serve when starting one")
    parser.add_argument(
        "--bentoml-home", type=Path, default=Path(os.environ.get("BENTOML_HOME", "~/bentoml"))
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KITCHENWARE_X=V",
        help="a setting for the server this script starts (repeatable)",
    )
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.levels.split(",")]
    own_limit = raise_own_fd_limit(max(levels) + args.clients + 64)
    photos = list(real_photos().values())
    facts = cpu_facts()
    print(f"# CPU: {describe_cpu(facts)}; load {facts['loadavg']}; own fd limit {own_limit}")

    def run(url: str, pid: int | None) -> list[LevelResult]:
        check_loopback(url)
        results = []
        for slow_clients in levels:
            result = asyncio.run(
                level(
                    url,
                    pid,
                    slow_clients=slow_clients,
                    duration_s=args.duration,
                    trickle_s=args.trickle,
                    clients=args.clients,
                    photos=photos,
                )
            )
            print(json.dumps(result.as_dict()), flush=True)
            results.append(result)
        return results

    if args.url:
        results = run(args.url.rstrip("/"), args.pid)
    else:
        from kitchenware.serving.settings import ServiceSettings

        tag = args.model_tag or ServiceSettings().model_tag
        settings = dict(item.split("=", 1) for item in args.set)
        with tempfile.TemporaryDirectory(prefix="slow-clients-") as scratch:
            # A store of its own: the run's predictions never land in a real feedback store.
            settings.setdefault("KITCHENWARE_FEEDBACK_URL", f"sqlite:///{scratch}/feedback.db")
            home = args.bentoml_home.expanduser()
            with running_service(tag, home, settings, name="slow-clients") as server:
                print(f"# served {tag} from {home}; settings {settings}", flush=True)
                results = run(server.base_url, server.process.pid)
    print(
        "\n| slow uploads | open (mean) | ordinary answers | ordinary p50 / p99 ms | "
        "slow uploads ended | server CPU | client CPU | max fds / limit | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for result in results:
        print(markdown_row(result))
    return 0 if all(set(r.ordinary) == {"200"} for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

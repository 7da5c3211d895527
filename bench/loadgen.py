"""The closed-loop HTTP load driver: loopback only, bounded, timeouts on every request.

`closed_loop` is the one driver (bench/serving.py, burst.py and soak.py use it): clients
each send one multipart upload, wait for the answer, send the next. `run_load` runs it for
a fixed request count and reports req/s, latency percentiles, errors by status, and the CPU
per image of the server (a probe) and of this process (the load generator).

    python bench/loadgen.py --url http://127.0.0.1:3000/classify --concurrency 16 --requests 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import percentiles_ms, real_photos

from kitchenware.serving.http.servertiming import parse as parse_server_timing

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class LoadResult:
    """One load level: what a client saw."""

    url: str
    concurrency: int
    requests: int
    images_per_request: int
    ok: int
    wall_s: float
    req_per_s: float
    images_per_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int] = field(default_factory=dict)  # status code or exception name
    server_cpu_ms_per_image: float | None = None  # from cpu_probe, when given
    # This process's CPU: the load generator shares the cores with the server under test.
    client_cpu_ms_per_image: float | None = None
    # Medians of the answers' Server-Timing parts (our service sends them; peers do not),
    # and `outside_model`: what the client waited beyond the model call's decode + infer.
    server_timing_p50_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_loopback(url: str) -> None:
    """The benchmark never sends load anywhere but this machine."""
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"Load URL {url} is not on loopback (127.0.0.1); refusing to send load.")


def multipart_files(
    field_name: str, images: list[bytes], start: int, count: int
) -> list[tuple[str, tuple[str, bytes, str]]]:
    """`count` images from the set, starting at `start`, as repeated multipart parts."""
    picked = [images[(start + offset) % len(images)] for offset in range(count)]
    return [
        (field_name, (f"image-{start + offset}.jpg", data, "image/jpeg"))
        for offset, data in enumerate(picked)
    ]


@dataclass
class Answer:
    """One request of a closed-loop client: what came back, or the transport error."""

    index: int
    seconds: float
    response: httpx.Response | None = None  # None: no HTTP answer at all
    error: httpx.HTTPError | None = None
    events: list[str] = field(default_factory=list)  # httpx trace events, when traced

    @property
    def outcome(self) -> str:
        """The HTTP status ("200", "503") or the transport exception's name ("ReadError")."""
        return str(self.response.status_code) if self.response else type(self.error).__name__


def loopback_client(
    url: str, connections: int, timeout_s: float, keepalive: bool = True
) -> httpx.AsyncClient:
    """An HTTP client for load on 127.0.0.1 only, with one pooled connection per client."""
    check_loopback(url)
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections if keepalive else 0
    )
    return httpx.AsyncClient(
        limits=limits, timeout=httpx.Timeout(timeout_s, connect=10.0), trust_env=False
    )


async def closed_loop(
    client: httpx.AsyncClient,
    url: str,
    *,
    clients: int,
    images: list[bytes],
    more: Callable[[int], bool],
    on_answer: Callable[[Answer], Awaitable[None]],
    field_name: str = "image",
    images_per_request: int = 1,
    trace: bool = False,
) -> float:
    """The one load driver: `clients` clients each upload, wait for the answer, hand it to
    `on_answer`, and go on while `more(request index)` holds. Returns the wall seconds."""
    counter = itertools.count()

    async def one_client() -> None:
        while more(index := next(counter)):
            files = multipart_files(
                field_name, images, index * images_per_request, images_per_request
            )
            events: list[str] = []

            async def note(name: str, info: dict[str, Any], seen: list[str] = events) -> None:
                seen.append(name)

            started = time.perf_counter()
            try:
                response = await client.post(
                    url, files=files, extensions={"trace": note} if trace else {}
                )
                answer = Answer(index, time.perf_counter() - started, response, events=events)
            except httpx.HTTPError as exc:
                answer = Answer(index, time.perf_counter() - started, error=exc, events=events)
            await on_answer(answer)

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return time.perf_counter() - started


async def run_load(
    url: str,
    *,
    concurrency: int,
    requests: int,
    images: list[bytes],
    field_name: str = "image",
    images_per_request: int = 1,
    timeout_s: float = 120.0,
    warmup_requests: int = 0,
    cpu_probe: Callable[[], float] | None = None,
) -> LoadResult:
    """Send `warmup_requests` (not counted) then `requests` uploads from `concurrency` clients."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    timings: defaultdict[str, list[float]] = defaultdict(list)

    async def record(answer: Answer) -> None:
        if answer.outcome == "200":
            latencies.append(answer.seconds)
            assert answer.response is not None
            if header := answer.response.headers.get("server-timing"):
                parts = parse_server_timing(header)
                for name, ms in parts.items():
                    timings[name].append(ms)
                model_ms = parts.get("decode", 0.0) + parts.get("infer", 0.0)
                timings["outside_model"].append(answer.seconds * 1000 - model_ms)
        else:
            errors[answer.outcome] += 1

    async def ignore(answer: Answer) -> None:
        pass

    async with loopback_client(url, concurrency, timeout_s) as client:
        load = partial(
            closed_loop,
            client,
            url,
            clients=concurrency,
            images=images,
            field_name=field_name,
            images_per_request=images_per_request,
        )
        if warmup_requests:
            await load(more=lambda i: i < warmup_requests, on_answer=ignore)
        cpu_before = cpu_probe() if cpu_probe else 0.0
        client_before = time.process_time()
        wall = await load(more=lambda i: i < requests, on_answer=record)
        client_used = time.process_time() - client_before
        cpu_used = cpu_probe() - cpu_before if cpu_probe else None

    ok = len(latencies)
    images_done = ok * images_per_request
    return LoadResult(
        url=url,
        concurrency=concurrency,
        requests=requests,
        images_per_request=images_per_request,
        ok=ok,
        wall_s=wall,
        req_per_s=ok / wall if wall else 0.0,
        images_per_s=ok * images_per_request / wall if wall else 0.0,
        latency_ms=percentiles_ms(latencies),
        errors=dict(sorted(errors.items())),
        server_cpu_ms_per_image=1000 * cpu_used / images_done
        if cpu_used is not None and images_done
        else None,
        client_cpu_ms_per_image=1000 * client_used / images_done if images_done else None,
        server_timing_p50_ms={name: statistics.median(ms) for name, ms in timings.items()},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:3000/classify")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=0, help="uncounted requests first")
    parser.add_argument("--field", default="image", help="multipart field name")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_load(
            args.url,
            concurrency=args.concurrency,
            requests=args.requests,
            images=list(real_photos().values()),
            field_name=args.field,
            images_per_request=args.images_per_request,
            timeout_s=args.timeout,
            warmup_requests=args.warmup,
        )
    )
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if not result.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())

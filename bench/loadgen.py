"""A bounded closed-loop HTTP load generator: fixed request counts, timeouts, loopback only.

`concurrency` clients each send one multipart upload, wait for the answer, send the next,
until `requests` answers are in. Reports req/s, latency percentiles and errors by status.

    python bench/loadgen.py --url http://127.0.0.1:3000/classify --concurrency 16 --requests 64
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import percentiles_ms, real_photos

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
    check_loopback(url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def one_request(index: int, record: bool) -> None:
            files = multipart_files(
                field_name, images, index * images_per_request, images_per_request
            )
            start = time.perf_counter()
            try:
                response = await client.post(url, files=files)
                await response.aread()
                status = response.status_code
            except httpx.HTTPError as exc:
                status = -1
                if record:
                    errors[type(exc).__name__] += 1
            elapsed = time.perf_counter() - start
            if record and status == 200:
                latencies.append(elapsed)
            elif record and status > 0:
                errors[str(status)] += 1

        async def phase(total: int, record: bool) -> float:
            counter = itertools.count()

            async def client_loop() -> None:
                while (index := next(counter)) < total:
                    await one_request(index, record)

            start = time.perf_counter()
            await asyncio.gather(*(client_loop() for _ in range(min(concurrency, total))))
            return time.perf_counter() - start

        if warmup_requests:
            await phase(warmup_requests, record=False)
        cpu_before = cpu_probe() if cpu_probe else 0.0
        client_before = time.process_time()
        wall = await phase(requests, record=True)
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

"""Repeated bursts of many concurrent clients: every request ends in an HTTP answer or a
named transport error (a dropped connection), counted per burst. Loopback only, bounded.

    python bench/burst.py --url http://127.0.0.1:3000 --clients 96 --duration 30 --bursts 3

Each client loops for `duration` seconds: upload one real photo to /classify, wait for
the answer, and on 429/503 honour Retry-After (capped) before the next try. `--fresh`
opens a new connection per request (like `ab` without -k) instead of keep-alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_assets import real_photos
from loadgen import Answer, closed_loop, loopback_client

DROPPED = ("ReadError", "RemoteProtocolError", "ConnectError", "WriteError", "ReadTimeout")
RETRY_AFTER_CAP_S = 1.0  # clients back off, but a burst must stay a burst


@dataclass
class BurstResult:
    clients: int
    duration_s: float
    sent: int
    outcomes: dict[str, int]  # HTTP status or transport exception name -> count
    dropped: int  # requests that got no HTTP answer at all
    server_errors: int  # 5xx other than 503
    busy_without_retry_after: int
    bad_busy_bodies: int  # a 429/503 whose JSON does not say to retry
    examples: dict[str, str] = field(default_factory=dict)  # first message per error kind
    drops: list[dict[str, Any]] = field(default_factory=list)  # when and how each was lost
    latency_p50_ms: float = 0.0
    latency_max_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _busy_body_ok(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "retry" in str(body.get("error", "")).lower()


async def burst(
    url: str,
    *,
    clients: int,
    duration_s: float,
    photos: list[bytes],
    fresh: bool = False,
    timeout_s: float = 60.0,
    path: str = "/classify",
) -> BurstResult:
    """One burst: `clients` closed-loop clients for `duration_s`, then wait for stragglers."""
    outcomes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    drops: list[dict[str, Any]] = []
    latencies: list[float] = []
    busy_no_header = bad_bodies = 0
    deadline = time.monotonic() + duration_s

    async def judge(answer: Answer) -> None:
        nonlocal busy_no_header, bad_bodies
        kind, response = answer.outcome, answer.response
        outcomes[kind] += 1
        if response is None:
            drops.append(
                {
                    "kind": kind,
                    "at_s": round(time.monotonic() - (deadline - duration_s), 2),
                    "after_s": round(answer.seconds, 2),
                    "new_connection": any(
                        e.startswith("connection.connect_tcp") for e in answer.events
                    ),
                    "last_event": answer.events[-1] if answer.events else "",
                }
            )
            examples.setdefault(kind, repr(answer.error)[:200])
        elif response.status_code == 200:
            latencies.append(answer.seconds)
        elif response.status_code in (429, 503):
            if not _busy_body_ok(response):
                bad_bodies += 1
                examples.setdefault(kind, response.text[:200])
            retry_after = response.headers.get("retry-after")
            if retry_after is None:
                busy_no_header += 1
            else:
                await asyncio.sleep(min(float(retry_after), RETRY_AFTER_CAP_S))
        else:
            examples.setdefault(kind, response.text[:200])

    async with loopback_client(url, clients, timeout_s, keepalive=not fresh) as client:
        elapsed = await closed_loop(
            client,
            url + path,
            clients=clients,
            images=photos,
            more=lambda _: time.monotonic() < deadline,
            on_answer=judge,
            trace=True,
        )

    dropped = sum(count for kind, count in outcomes.items() if not kind.isdigit())
    server_errors = sum(
        count for kind, count in outcomes.items() if kind.isdigit() and kind.startswith("5")
    ) - outcomes.get("503", 0)
    latencies.sort()
    return BurstResult(
        clients=clients,
        duration_s=round(elapsed, 1),
        sent=sum(outcomes.values()),
        outcomes=dict(sorted(outcomes.items())),
        dropped=dropped,
        server_errors=server_errors,
        busy_without_retry_after=busy_no_header,
        bad_busy_bodies=bad_bodies,
        examples=examples,
        drops=drops,
        latency_p50_ms=round(1000 * latencies[len(latencies) // 2], 1) if latencies else 0.0,
        latency_max_ms=round(1000 * latencies[-1], 1) if latencies else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="service root, e.g. http://127.0.0.1:3000")
    parser.add_argument("--clients", type=int, default=96)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per burst")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between bursts")
    parser.add_argument("--fresh", action="store_true", help="a new connection per request")
    parser.add_argument("--path", default="/classify")
    args = parser.parse_args(argv)
    photos = list(real_photos().values())
    failed = False
    for number in range(1, args.bursts + 1):
        result = asyncio.run(
            burst(
                args.url.rstrip("/"),
                clients=args.clients,
                duration_s=args.duration,
                photos=photos,
                fresh=args.fresh,
                path=args.path,
            )
        )
        print(json.dumps({"burst": number, **result.as_dict()}), flush=True)
        failed |= bool(result.dropped or result.server_errors or result.bad_busy_bodies)
        time.sleep(args.pause)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

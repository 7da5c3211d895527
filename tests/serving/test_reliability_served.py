"""Faults against a real `bentoml serve` on loopback: bursts, idle keep-alive connections,
a killed worker, SIGTERM. Bounded (seconds of load, fixed client counts); marked slow.

Figures these tests print are the ones quoted in bench/RESULTS.md ("Reliability").
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support.images import image_bytes
from support.service import (
    REPO,
    ServedService,
    build_colour_model,
    import_into_store,
    serve,
    store_env,
)
from support.worker import worker_pids

sys.path.insert(0, str(REPO / "bench"))
from burst import burst

pytestmark = pytest.mark.slow
PHOTO = (REPO / "examples" / "cup.jpg").read_bytes()


@pytest.fixture(scope="module")
def model_tag(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("reliability")
    home = base / "bentoml_home"
    # ~50 ms per image on 2 cores: requests stay in flight long enough to be caught.
    return home, import_into_store(build_colour_model(base / "slow", 128, 48), home)


@pytest.fixture(scope="module")
def two_workers(
    model_tag: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedService]:
    home, tag = model_tag
    env = store_env(home, model_tag=tag, workers="2", max_in_flight="24", retry_after_s="1")
    with serve("service:Kitchenware", env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


def test_bursts_of_96_clients_get_answers_never_dropped_connections(
    two_workers: ServedService,
) -> None:
    results = [
        asyncio.run(burst(two_workers.url, clients=96, duration_s=10, photos=[PHOTO]))
        for _ in range(3)
    ]
    for number, result in enumerate(results, 1):
        print(f"burst {number}: {result.sent} sent, {result.outcomes}, drops {result.drops}")
    assert all(r.dropped == 0 for r in results), [r.drops for r in results]
    assert all(r.server_errors == 0 for r in results), [r.outcomes for r in results]
    assert all(r.busy_without_retry_after == 0 and r.bad_busy_bodies == 0 for r in results)
    assert sum(r.outcomes.get("200", 0) for r in results) > 0
    after = httpx.post(f"{two_workers.url}/classify", files={"image": ("c.jpg", PHOTO)})
    assert after.status_code == 200  # recovered at once


def test_an_idle_keep_alive_connection_is_not_closed_under_a_client(
    two_workers: ServedService,
) -> None:
    """httpx keeps idle connections 5 s, uvicorn closed them at 5 s: the race behind drops."""
    connection = http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=10)
    connection.request("GET", "/livez")
    first = connection.getresponse()
    first.read()
    sock = connection.sock
    time.sleep(7)
    connection.request("GET", "/livez")  # on the same socket; a closed one fails here
    second = connection.getresponse()
    second.read()
    assert first.status == second.status == 200
    assert connection.sock is sock, "the server closed the idle connection"
    connection.close()


@dataclass
class Kill:
    """What 8 clients saw when one worker was killed under their load."""

    outcomes: list[tuple[float, float, str]]  # (sent, answered, status or exception name)
    killed_at: float
    replaced_after_s: float | None

    def failed(self) -> Counter[str]:
        return Counter(s for _, _, s in self.outcomes if not s.isdigit())

    def statuses_within(self, seconds: float) -> Counter[str]:
        return Counter(
            s for _, done, s in self.outcomes if self.killed_at <= done <= self.killed_at + seconds
        )


def kill_a_worker_under_load(server: ServedService, clients: int = 8) -> Kill:
    before = worker_pids(server)
    outcomes: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    status = str(
                        session.post(
                            f"{server.url}/classify", files={"image": ("c.jpg", PHOTO)}
                        ).status_code
                    )
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                outcomes.append((sent, time.monotonic(), status))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    killed_at = time.monotonic()
    os.kill(before[0], signal.SIGKILL)
    replaced = None
    while time.monotonic() - killed_at < 60:
        now = worker_pids(server)
        if len(now) == len(before) and before[0] not in now:
            replaced = time.monotonic() - killed_at
            break
        time.sleep(0.2)
    time.sleep(5)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    kill = Kill(outcomes, killed_at, replaced)
    print(
        f"worker kill ({len(before)} workers): {sum(kill.failed().values())} lost "
        f"{kill.failed()}, answers in the 8 s after: {dict(kill.statuses_within(8))}, "
        f"replacement worker after {replaced} s"
    )
    return kill


def test_killing_one_worker_loses_only_its_in_flight_requests(
    two_workers: ServedService,
) -> None:
    assert len(worker_pids(two_workers)) == 2
    kill = kill_a_worker_under_load(two_workers)
    assert sum(kill.failed().values()) <= 8, kill.failed()  # the clients' in-flight requests
    assert kill.statuses_within(8)["200"] > 0  # the other worker kept answering
    assert kill.replaced_after_s is not None
    assert not [s for _, _, s in kill.outcomes if s.startswith("5")]


@pytest.fixture(scope="module")
def shipped_defaults(
    model_tag: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedService]:
    home, tag = model_tag
    env = store_env(home, model_tag=tag)
    with serve("service:Kitchenware", env, log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


def test_killing_the_only_worker_loses_in_flight_requests_and_new_ones_wait(
    shipped_defaults: ServedService,
) -> None:
    """One worker (the default on 2 cores): the arbiter keeps the listening socket and starts a
    new worker; requests sent meanwhile wait in the backlog and are answered, none refused."""
    assert len(worker_pids(shipped_defaults)) == 1
    kill = kill_a_worker_under_load(shipped_defaults)
    # At most one loss per client (its in-flight request): a client whose next requests
    # failed while the new worker started would lose many in the ~4-10 s gap.
    assert sum(kill.failed().values()) <= 8, kill.failed()
    assert "ConnectError" not in kill.failed()  # nobody was refused
    assert kill.replaced_after_s is not None
    sent_after = Counter(s for sent, _, s in kill.outcomes if sent > kill.killed_at)
    assert sent_after["200"] > 0, sent_after  # requests sent during the gap were answered


def test_sigterm_lets_in_flight_requests_finish_then_exits(
    model_tag: tuple[Path, str], tmp_path: Path
) -> None:
    home, tag = model_tag
    env = store_env(home, model_tag=tag, workers="1")
    big = image_bytes((200, 30, 30), size=(600, 600))
    with serve("service:Kitchenware", env, log_dir=tmp_path) as server:

        async def in_flight() -> list[int]:
            async with httpx.AsyncClient(timeout=60) as client:
                requests = [
                    asyncio.create_task(
                        client.post(
                            f"{server.url}/classify_batch",
                            files=[("images", (f"{i}.png", big)) for i in range(8)],
                        )
                    )
                    for _ in range(4)
                ]
                await asyncio.sleep(0.5)
                os.kill(server.process.pid, signal.SIGTERM)  # what Kubernetes sends PID 1
                answers = await asyncio.gather(*requests, return_exceptions=True)
                return [a.status_code if isinstance(a, httpx.Response) else -1 for a in answers]

        sent_at = time.monotonic()
        statuses = asyncio.run(in_flight())
        server.process.wait(timeout=60)
        exited_after = time.monotonic() - sent_at
        print(
            f"SIGTERM: in-flight answered {statuses}, exit {server.process.returncode} "
            f"after {exited_after:.1f} s"
        )
    assert statuses == [200] * 4
    assert exited_after < 40

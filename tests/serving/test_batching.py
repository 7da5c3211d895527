"""The in-process batcher: requests share calls, and calls follow each other without the
event loop in between (a loop busy with uploads must not hold the model idle). Fast."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence

import pytest

from kitchenware.serving.inference.batching import MicroBatcher, QueueFull


def _batcher(
    calls: list[tuple[float, float, list[int]]], seconds: float, size: int
) -> MicroBatcher[int, int]:
    def run(items: Sequence[int]) -> list[int]:
        started = time.perf_counter()
        time.sleep(seconds)
        calls.append((started, time.perf_counter(), list(items)))
        if -1 in items:
            raise ValueError("a broken call")
        return [item * 10 for item in items]

    return MicroBatcher(run, max_batch_size=size, max_latency_ms=10_000)


def test_queued_calls_run_back_to_back_while_the_event_loop_is_busy() -> None:
    calls: list[tuple[float, float, list[int]]] = []
    batcher = _batcher(calls, 0.05, size=1)

    async def main() -> list[int]:
        waiting = [asyncio.ensure_future(batcher.submit(i, 1)) for i in range(4)]
        await asyncio.sleep(0.01)  # all four queued, the first call running
        time.sleep(0.3)  # the loop busy (uploads, answers): the batcher must not wait for it
        return list(await asyncio.gather(*waiting))

    assert asyncio.run(main()) == [0, 10, 20, 30]
    assert [items for _, _, items in calls] == [[0], [1], [2], [3]]
    gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(calls)]
    assert max(gaps) < 0.03, f"the model sat idle between calls: {gaps}"


def test_requests_share_a_call_and_a_failed_call_fails_its_requests_only() -> None:
    calls: list[tuple[float, float, list[int]]] = []
    batcher = _batcher(calls, 0.05, size=8)

    async def main() -> list[object]:
        first = asyncio.ensure_future(batcher.submit(1, 1))
        await asyncio.sleep(0.01)  # the first call is running: the next three queue up
        rest = [asyncio.ensure_future(batcher.submit(i, 1)) for i in (2, -1, 3)]
        shared = await asyncio.gather(*rest, return_exceptions=True)
        after = await batcher.submit(4, 1)
        return [await first, *shared, after]

    first, *shared, after = asyncio.run(main())
    assert first == 10 and after == 40
    assert all(isinstance(r, ValueError) for r in shared)  # one call: one failure for all three
    assert [items for _, _, items in calls] == [[1], [2, -1, 3], [4]]


def test_a_queue_over_the_latency_budget_is_refused_at_once() -> None:
    batcher = _batcher([], 0.2, size=1)
    batcher.max_latency_ms = 100
    batcher.seconds_per_image = 0.2

    async def main() -> None:
        running = asyncio.ensure_future(batcher.submit(1, 1))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.submit(2, 1))
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        with pytest.raises(QueueFull):
            await batcher.submit(3, 1)
        assert time.perf_counter() - started < 0.05
        assert await running == 10 and await queued == 20

    asyncio.run(main())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # by design
def test_a_batcher_thread_that_dies_fails_its_call_and_is_replaced() -> None:
    def run(items: Sequence[int]) -> list[int]:
        if 0 in items:
            raise SystemExit  # a BaseException ends the thread it runs in
        return [item * 10 for item in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(run, max_batch_size=4, max_latency_ms=10_000)

    async def main() -> int:
        with pytest.raises(RuntimeError, match="interrupted"):
            await asyncio.wait_for(batcher.submit(0, 1), 5)
        return await asyncio.wait_for(batcher.submit(7, 1), 5)

    first = threading.enumerate()
    assert asyncio.run(main()) == 70
    for thread in threading.enumerate():  # the dead one reports its exit inside this test
        if thread not in first and thread.name == "kitchenware-batcher":
            thread.join(0.1)

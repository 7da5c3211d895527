"""In-process adaptive batching: concurrent requests share one model call, no second process.

While the model runs one call, new requests queue; the next call takes everything queued
(up to `max_batch_size` images). A lone request never waits for company, so latency at
concurrency 1 is one batch-1 call. A request whose estimated wait (images ahead x measured
seconds per image) exceeds the latency budget is refused at once (QueueFull -> 503 busy),
like BentoML's own batcher, instead of timing out later.

The queued items go to `run` whole, in one worker thread: the pipeline decodes the photos
and calls the model there, so a request costs one thread hand-off, not one for decoding and
another for the model, and decoding never competes for the cores with the model's own
threads (bench/RESULTS.md section 1, "one-hop batcher"). Measured against BentoML's
two-process layout (front + model service, arrays sent over HTTP) in bench/RESULTS.md
("one process or two").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio.to_thread

Item = TypeVar("Item")
Result = TypeVar("Result")

EMA_WEIGHT = 0.2  # how fast the seconds-per-image estimate follows the measured calls


class QueueFull(RuntimeError):
    """The queue ahead is longer than the latency budget allows."""


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    images: int
    future: asyncio.Future[Result]


@dataclass
class MicroBatcher(Generic[Item, Result]):
    """Queue of work items in front of one blocking `run` (one result per item, in order),
    called in a worker thread with every item queued up to `max_batch_size` images."""

    run: Callable[[Sequence[Item]], Sequence[Result]]
    max_batch_size: int
    max_latency_ms: float
    seconds_per_image: float = 0.05  # replaced by measurements after the first calls
    _queue: deque[_Pending[Item, Result]] = field(default_factory=deque)
    _queued_images: int = 0
    _wake: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    def estimated_wait_s(self, extra_images: int = 0) -> float:
        return (self._queued_images + extra_images) * self.seconds_per_image

    async def submit(self, item: Item, images: int) -> Result:
        """`item` (holding `images` photos) -> its result, computed in a batch with others."""
        if self._queue and self.estimated_wait_s(images) * 1000 > self.max_latency_ms:
            raise QueueFull(
                f"{self._queued_images} images queued, about {self.estimated_wait_s():.1f} s "
                f"of work, over the {self.max_latency_ms:.0f} ms budget."
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="kitchenware-batcher")
        pending: _Pending[Item, Result] = _Pending(item, images, loop.create_future())
        self._queue.append(pending)
        self._queued_images += images
        assert self._wake is not None
        self._wake.set()
        return await pending.future

    def _take(self) -> list[_Pending[Item, Result]]:
        """Whole requests up to max_batch_size images (a bigger request goes alone)."""
        taken = [self._queue.popleft()]
        size = taken[0].images
        while self._queue and size + self._queue[0].images <= self.max_batch_size:
            size += self._queue[0].images
            taken.append(self._queue.popleft())
        self._queued_images -= size
        return taken

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            taken = [p for p in self._take() if not p.future.done()]  # clients gone away
            if not taken:
                continue
            started = time.perf_counter()
            try:
                results = await anyio.to_thread.run_sync(self.run, [p.item for p in taken])
            except Exception as exc:
                for pending in taken:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            images = sum(p.images for p in taken)
            elapsed = time.perf_counter() - started
            self.seconds_per_image += EMA_WEIGHT * (elapsed / images - self.seconds_per_image)
            for pending, result in zip(taken, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)

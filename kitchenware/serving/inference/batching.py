"""In-process adaptive batching: concurrent requests share one model call, no second process.

While the model runs one call, new requests queue; the next call takes everything queued
(up to `max_batch_size` images). A lone request never waits for company, so latency at
concurrency 1 is decode + one batch-1 call. A request whose estimated wait (images ahead
x measured seconds per image) exceeds the latency budget is refused at once (QueueFull ->
503 busy), like BentoML's own batcher, instead of timing out later.

Measured against BentoML's two-process layout (front + model service, arrays sent over
HTTP) in bench/RESULTS.md ("one process or two").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np

from kitchenware.serving.metrics import BATCH_SIZE, INFERENCE_SECONDS

EMA_WEIGHT = 0.2  # how fast the seconds-per-image estimate follows the measured calls


class QueueFull(RuntimeError):
    """The queue ahead is longer than the latency budget allows."""


@dataclass
class _Pending:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


@dataclass
class MicroBatcher:
    """Queue of image batches in front of one blocking `predict`, run in a worker thread."""

    predict: Callable[[np.ndarray], np.ndarray]
    max_batch_size: int
    max_latency_ms: float
    seconds_per_image: float = 0.05  # replaced by measurements after the first calls
    _queue: deque[_Pending] = field(default_factory=deque)
    _queued_images: int = 0
    _wake: asyncio.Event | None = None
    _task: asyncio.Task[None] | None = None

    def estimated_wait_s(self, extra_images: int = 0) -> float:
        return (self._queued_images + extra_images) * self.seconds_per_image

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) arrays -> (n, classes) probabilities, batched with others."""
        if self._queue and self.estimated_wait_s(len(images)) * 1000 > self.max_latency_ms:
            raise QueueFull(
                f"{self._queued_images} images queued, about {self.estimated_wait_s():.1f} s "
                f"of work, over the {self.max_latency_ms:.0f} ms budget."
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._run(), name="kitchenware-batcher")
        pending = _Pending(images, loop.create_future())
        self._queue.append(pending)
        self._queued_images += len(images)
        assert self._wake is not None
        self._wake.set()
        return await pending.future

    def _take(self) -> list[_Pending]:
        """Whole requests up to max_batch_size images (a bigger request goes alone)."""
        taken = [self._queue.popleft()]
        size = len(taken[0].images)
        while self._queue and size + len(self._queue[0].images) <= self.max_batch_size:
            size += len(self._queue[0].images)
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
            taken = self._take()
            taken = [p for p in taken if not p.future.done()]  # the client went away
            if not taken:
                continue
            batch = (
                taken[0].images if len(taken) == 1 else np.concatenate([p.images for p in taken])
            )
            started = time.perf_counter()
            try:
                probabilities = await anyio.to_thread.run_sync(self.predict, batch)
            except Exception as exc:
                for pending in taken:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            INFERENCE_SECONDS.observe(elapsed)
            BATCH_SIZE.observe(len(batch))
            self.seconds_per_image += EMA_WEIGHT * (elapsed / len(batch) - self.seconds_per_image)
            offset = 0
            for pending in taken:
                n = len(pending.images)
                if not pending.future.done():
                    pending.future.set_result(probabilities[offset : offset + n])
                offset += n

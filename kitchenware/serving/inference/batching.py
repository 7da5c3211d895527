"""In-process adaptive batching: concurrent requests share one model call, no second process.

While the model runs one call, new requests queue; the next call takes everything queued
(up to `max_batch_size` images). A lone request never waits for company, so latency at
concurrency 1 is one batch-1 call. A request whose estimated wait (images ahead x measured
seconds per image) exceeds the latency budget is refused at once (QueueFull -> 503 busy),
like BentoML's own batcher, instead of timing out later.

The queued items go to `run` whole, in the batcher's own thread: the pipeline decodes the
photos and calls the model there, so a request costs one thread hand-off, not one for
decoding and another for the model, and decoding never competes for the cores with the
model's own threads (bench/RESULTS.md section 1, "one-hop batcher"). The thread takes the
next call's items itself as soon as a call ends: the event loop only appends requests and
receives results. (With a loop-driven batcher, each call went back through the event loop
to start the next: 11-13 ms between calls at c=16, measured, while the loop was busy with
uploads and the thread waited for the GIL; bench/RESULTS.md section 3.) Measured against
BentoML's two-process layout (front + model service, arrays sent over HTTP) in
bench/RESULTS.md ("one process or two").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

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
    loop: asyncio.AbstractEventLoop


@dataclass
class MicroBatcher(Generic[Item, Result]):
    """Queue of work items in front of one blocking `run` (one result per item, in order),
    called in the batcher's thread with every item queued up to `max_batch_size` images."""

    run: Callable[[Sequence[Item]], Sequence[Result]]
    max_batch_size: int
    max_latency_ms: float
    seconds_per_image: float = 0.05  # replaced by measurements after the first calls
    _queue: deque[_Pending[Item, Result]] = field(default_factory=deque)
    _queued_images: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def estimated_wait_s(self, extra_images: int = 0) -> float:
        return (self._queued_images + extra_images) * self.seconds_per_image

    async def submit(self, item: Item, images: int) -> Result:
        """`item` (holding `images` photos) -> its result, computed in a batch with others."""
        loop = asyncio.get_running_loop()
        pending: _Pending[Item, Result] = _Pending(item, images, loop.create_future(), loop)
        with self._changed:
            if self._queue and self.estimated_wait_s(images) * 1000 > self.max_latency_ms:
                raise QueueFull(
                    f"{self._queued_images} images queued, about {self.estimated_wait_s():.1f} s "
                    f"of work, over the {self.max_latency_ms:.0f} ms budget."
                )
            if self._thread is None:
                self._start_thread()
            self._queue.append(pending)
            self._queued_images += images
            self._changed.notify()
        return await pending.future

    def _start_thread(self) -> None:
        """(With the lock held.) The thread that runs the calls."""
        self._thread = threading.Thread(target=self._serve, name="kitchenware-batcher", daemon=True)
        self._thread.start()

    def _take(self) -> list[_Pending[Item, Result]]:
        """Whole requests up to max_batch_size images (a bigger request goes alone)."""
        taken = [self._queue.popleft()]
        size = taken[0].images
        while self._queue and size + self._queue[0].images <= self.max_batch_size:
            size += self._queue[0].images
            taken.append(self._queue.popleft())
        self._queued_images -= size
        return taken

    def _serve(self) -> None:
        """The batcher's thread: one call after another while requests are queued."""
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                # Clients gone away (their request cancelled) are skipped; a read of done()
                # from this thread can only be late, and _deliver checks again on the loop.
                taken = [p for p in self._take() if not p.future.done()]
            if not taken:
                continue
            started = time.perf_counter()
            try:
                results = self.run([p.item for p in taken])
            except Exception as exc:
                self._deliver(taken, [exc] * len(taken))
                continue
            except BaseException:  # this thread ends here: another takes over the queue
                stopped = RuntimeError("The model call was interrupted; retry the request.")
                self._deliver(taken, [stopped] * len(taken))
                with self._changed:
                    self._thread = None
                    if self._queue:
                        self._start_thread()
                raise
            images = sum(p.images for p in taken)
            elapsed = time.perf_counter() - started
            self.seconds_per_image += EMA_WEIGHT * (elapsed / images - self.seconds_per_image)
            self._deliver(taken, list(results))

    @staticmethod
    def _deliver(taken: list[_Pending[Item, Result]], outcomes: list[Result | Exception]) -> None:
        """Each result (or the call's exception) to its request, on the request's own loop."""
        for pending, outcome in zip(taken, outcomes, strict=True):
            # A closed loop (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                pending.loop.call_soon_threadsafe(_settle, pending.future, outcome)


def _settle(future: asyncio.Future[Result], outcome: Result | Exception) -> None:
    if future.done():  # the client went away meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

"""The local engine: parallel decoding overlapped with batched inference, in one process.

Decoder threads (or processes) work a bounded window of files ahead of the model, so while
the model runs batch k (TensorFlow and OpenVINO release the GIL), batches k+1 and k+2 are
being decoded. Results come back in input order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kitchenware.runtime.backends import Backend
from kitchenware.runtime.preprocessing import DEFAULT_MAX_PIXELS

from .decoding import Decoded, decode_files
from .inputs import Item
from .results import Failure

DECODE_MODES = ("threads", "processes")


def default_decoders() -> int:
    """One decoder per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LocalOptions:
    batch_size: int = 32
    decoders: int = 0  # 0: one per core
    decode_in: str = "threads"
    prefetch_batches: int = 2  # decoded batches kept ready ahead of the model
    max_pixels: int | None = DEFAULT_MAX_PIXELS


BatchDone = Callable[[list[Item], np.ndarray], None]
FailureSeen = Callable[[Failure], None]


def _executor(options: LocalOptions, workers: int) -> Executor:
    if options.decode_in == "processes":
        # spawn: forking a process that already runs TensorFlow's thread pools is unsafe.
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return ThreadPoolExecutor(workers, thread_name_prefix="decode")


def _slices(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_local(
    items: list[Item],
    backend: Backend,
    options: LocalOptions,
    on_batch: BatchDone,
    on_failure: FailureSeen,
) -> None:
    """Score `items`; each scored batch goes to `on_batch`, each unreadable file to `on_failure`."""
    if options.decode_in not in DECODE_MODES:
        raise ValueError(f"decode_in must be one of {DECODE_MODES}, not {options.decode_in!r}.")
    workers = options.decoders or default_decoders()
    batch_size = max(1, options.batch_size)
    # Threads take one file per task; processes a few, to pay pickling once per slice.
    per_task = 1 if options.decode_in == "threads" else max(1, batch_size // (2 * workers))
    window = (options.prefetch_batches + 1) * batch_size
    size = backend.image_size
    pending: deque[tuple[list[Item], Future[list[Decoded]]]] = deque()
    queued = 0
    tasks = _slices(items, per_task)

    with _executor(options, workers) as pool:

        def refill() -> None:
            nonlocal queued
            while queued < window:
                chunk = next(tasks, None)
                if chunk is None:
                    return
                paths = [str(item.path) for item in chunk]
                pending.append((chunk, pool.submit(decode_files, paths, size, options.max_pixels)))
                queued += len(chunk)

        refill()
        ready_items: list[Item] = []
        ready_arrays: list[np.ndarray] = []
        while pending or ready_items:
            while pending and len(ready_items) < batch_size:
                chunk, future = pending.popleft()
                queued -= len(chunk)
                for item, decoded in zip(chunk, future.result(), strict=True):
                    if decoded.array is None:
                        on_failure(Failure(item, decoded.reason, decoded.error))
                    else:
                        ready_items.append(item)
                        ready_arrays.append(decoded.array)
                refill()  # keep the decoders busy while the model runs below
            if not ready_items:
                continue
            batch_items, ready_items = ready_items[:batch_size], ready_items[batch_size:]
            batch_arrays, ready_arrays = ready_arrays[:batch_size], ready_arrays[batch_size:]
            batch = np.stack(batch_arrays).astype(np.float32)
            on_batch(batch_items, np.asarray(backend.predict_arrays(batch)))

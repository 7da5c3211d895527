"""Faults of the feedback store: what a failing database or disk is called, how long any store
call may take, and one log line when a fault starts and one when it ends.

A store fault never costs a prediction (they are kept in the background, see recorder.py)
and never a false answer to a correction: /feedback says 503 + Retry-After with a sentence
naming the store and the cause, and the store is re-opened once the fault clears.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import sqlalchemy as sa

from kitchenware.serving.http.errors import ClientError
from kitchenware.serving.metrics import STORE_ERRORS, STORE_FAILING

logger = logging.getLogger("kitchenware.store")
T = TypeVar("T")

# Every store call is bounded well below the request timeout: SQLite waits this long for a
# lock, PostgreSQL this long to connect and to run a statement; /feedback's whole store call
# (photo, lookup, insert) gets STORE_DEADLINE_S before it answers 503.
LOCK_WAIT_S = 3.0
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_S = 5.0
STORE_DEADLINE_S = 8.0
RETRY_AFTER_S = 5


_DISK_CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "its folder is not writable",
    errno.EPERM: "its folder is not writable (immutable?)",
    errno.EIO: "the disk reports I/O errors",
}
_DATABASE_CAUSES = (
    ("database or disk is full", "the disk is full"),
    ("readonly database", "the database file or its folder is read-only"),
    ("unable to open database", "the database file cannot be opened (folder unwritable?)"),
    ("database is locked", "the database is locked by another process"),
    # SQLite says "disk I/O error" both for a failing disk and for a folder where it cannot
    # create its journal (an immutable folder, measured by bench/store_faults.py).
    (
        "disk i/o error",
        "SQLite reports a disk I/O error (a failing disk, or a store folder "
        "where it cannot create its journal: check its permissions and lsattr)",
    ),
    ("statement timeout", "the database did not answer in time"),
    ("canceling statement", "the database did not answer in time"),
    ("timeout", "the database did not answer in time"),
    ("connection refused", "the database server refuses connections (stopped?)"),
    ("server closed the connection", "the database server closed the connection"),
    ("terminating connection", "the database server is shutting down"),
    ("the database system is", "the database server is starting up or shutting down"),
    ("consuming input failed", "the database server closed the connection"),
)


class StoreUnavailable(ClientError):
    """The store cannot serve this call right now: 503 with a Retry-After and the cause."""

    def __init__(self, store: str, cause: str, what: str = "the correction") -> None:
        super().__init__(
            503,
            "feedback_store_unavailable",
            f"The feedback store ({store}) cannot take {what} right now: {cause}. Nothing "
            f"was stored; retry in {RETRY_AFTER_S} s.",
            retry_after_s=RETRY_AFTER_S,
        )


def is_store_fault(exc: BaseException) -> bool:
    """A failing database or disk, as opposed to a bug or a refused correction."""
    return isinstance(exc, OSError | sa.exc.OperationalError | sa.exc.InterfaceError | TimeoutError)


def fault_cause(exc: BaseException) -> str:
    """A few words a user can act on, from an OSError or a database error."""
    if isinstance(exc, OSError) and exc.errno in _DISK_CAUSES:
        return _DISK_CAUSES[exc.errno]
    if isinstance(exc, TimeoutError):
        return f"it did not answer within {STORE_DEADLINE_S:g} s"
    text = str(getattr(exc, "orig", None) or exc).lower()
    for needle, cause in _DATABASE_CAUSES:
        if needle in text:
            return cause
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:200] or type(exc).__name__


class StoreHealth:
    """Whether a store works, per worker: one log line per change, a metric in between."""

    def __init__(self, name: str, consequence: str, gauge: bool = True) -> None:
        self.name = name
        self.consequence = consequence
        self.gauge = gauge
        self._lock = threading.Lock()
        self.failing_since: float | None = None
        self.cause = ""
        self.failures = 0

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def failed(self, exc: BaseException | str, operation: str) -> str:
        """Count a fault; log it only when the store was working until now. Returns the cause."""
        cause = exc if isinstance(exc, str) else fault_cause(exc)
        STORE_ERRORS.labels(operation=operation).inc()
        with self._lock:
            self.failures += 1
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                self.cause = cause
                if self.gauge:
                    STORE_FAILING.set(1)
                logger.error(
                    "%s is failing (%s: %s); %s", self.name, operation, cause, self.consequence
                )
        return cause

    def worked(self) -> None:
        with self._lock:
            if self.failing_since is None:
                return
            lasted = time.monotonic() - self.failing_since
            logger.warning(
                "%s works again after %.1f s (%d failed calls; the cause was: %s)",
                self.name,
                lasted,
                self.failures,
                self.cause,
            )
            self.failing_since, self.failures = None, 0
            if self.gauge:
                STORE_FAILING.set(0)


class StoreOpener(Generic[T]):
    """Opens the store on first use and again after a failed open, at most every
    RETRY_AFTER_S: a store unwritable at start is tried again later, not never."""

    def __init__(self, open_store: Callable[[], T], name: str, health: StoreHealth) -> None:
        self.open_store = open_store
        self.name = name
        self.health = health
        self.store: T | None = None
        self.error = ""
        self._tried_at = -float("inf")
        self._lock = threading.Lock()

    def get(self) -> T:
        """The open store, or StoreUnavailable naming why it cannot be opened."""
        with self._lock:
            if self.store is None and time.monotonic() - self._tried_at >= RETRY_AFTER_S:
                self._tried_at = time.monotonic()
                try:
                    self.store = self.open_store()
                except Exception as exc:  # unwritable folder, database down, ...
                    self.error = self.health.failed(exc, "open")
            if self.store is None:
                raise StoreUnavailable(self.name, f"it could not be opened ({self.error})")
            return self.store

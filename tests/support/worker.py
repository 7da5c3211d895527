"""The worker processes of a served instance (to kill one, or to see that none died)."""

from __future__ import annotations

from pathlib import Path

from kitchenware.localserver import descendants, process_table
from support.service import ServedService


def worker_pids(server: ServedService) -> list[int]:
    """The HTTP worker processes (not the arbiter), by BentoML's worker command line."""
    pids = []
    for pid in descendants(process_table(), server.process.pid):
        try:
            if b"_bentoml_impl.worker.service" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return sorted(pids)

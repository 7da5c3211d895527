"""One folder per running server for BentoML's per-server files, so two servers can share a
BENTOML_HOME (`make serve` next to `make serve MODEL=demo PORT=3001`, blue/green on one host).

BentoML 1.4.40 puts two per-server things at fixed places under $BENTOML_HOME:
- the async-task store `task_result.db`, deleted and re-created by every start
  (`_bentoml_impl.server.serving.server_on_deployment`). Its `-wal`/`-shm` files stay, so a
  second start removed the first one's tasks, or failed: `sqlite3.OperationalError: disk I/O
  error`.
- Prometheus' multiprocess folder `prometheus_multiproc_dir`, emptied by every start
  (`bentoml.serving.ensure_prometheus_dir`). The running server lost its `kitchenware_*`
  series from /metrics.

Both are chosen in the `bentoml serve` process after it has imported service.py and before
any worker starts. The task store comes from the BENTOML_RESULT_STORE environment variable,
read at first use and inherited by the workers (circus copies the environment). The metrics
folder comes from BentoMLContainer.prometheus_multiproc_dir (no variable, no config key);
BentoML hands it to the workers as PROMETHEUS_MULTIPROC_DIR. So service.py calls
`use_own_instance_dir()` at import. In the `bentoml serve` process it makes
$BENTOML_HOME/instances/<port>-<random>/ and points both there. Anywhere else (the workers,
`bentoml build`, tests, scripts that import service.py) it does nothing.

A server holds an flock on its folder's `lock` file while it runs. At its start, every
folder whose lock nobody holds is removed (its server ended or was killed), and a clean exit
removes its own. So the folders never outlive their servers by more than one start.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

INSTANCES = "instances"
LOCK = "lock"
TASK_STORE = "task_result.db"
METRICS_DIR = "prometheus_multiproc_dir"
RESULT_STORE_ENV = "BENTOML_RESULT_STORE"  # BentoML's own variable
STARTING = ".starting-"  # a folder not locked yet; removed only when clearly abandoned
ABANDONED_START_S = 3600.0

_held: list[IO[bytes]] = []  # open for this process's lifetime: closing it frees the folder
log = logging.getLogger("kitchenware.instancedir")


def serve_command_port() -> int | None:
    """The port when this process is the `bentoml serve` command itself, else None."""
    import click
    from bentoml._internal.configuration.containers import BentoMLContainer

    context = click.get_current_context(silent=True)
    if context is None or context.command.name != "serve" or "port" not in context.params:
        return None
    port = context.params["port"]
    return int(port) if port is not None else int(BentoMLContainer.http.port.get())


def use_own_instance_dir() -> Path | None:
    """In the `bentoml serve` process: give this server its own task store and metrics
    folder (see the module docstring); returns the folder, or None elsewhere."""
    port = serve_command_port()
    if port is None:
        return None
    from bentoml._internal.configuration.containers import BentoMLContainer

    folder = claim_instance_dir(Path(BentoMLContainer.bentoml_home.get()) / INSTANCES, port)
    os.environ.setdefault(RESULT_STORE_ENV, str(folder / TASK_STORE))  # a user's value wins
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder / METRICS_DIR))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    log.info("this server's task store and metrics files: %s", folder)
    return folder


def claim_instance_dir(root: Path, port: int) -> Path:
    """A new folder under `root`, locked by this process; stale ones removed first."""
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)
    # Locked before it gets its final name, so no other start ever sees it unlocked.
    staging = Path(tempfile.mkdtemp(prefix=STARTING, dir=root))
    lock = open(staging / LOCK, "wb")  # noqa: SIM115 (held until the process ends)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held.append(lock)
    folder = root / f"{port}-{staging.name.removeprefix(STARTING)}"
    staging.rename(folder)
    return folder


def remove_stale(root: Path) -> list[Path]:
    """Remove the folders under `root` no running server holds; returns them."""
    removed = []
    for folder in root.iterdir():
        if folder.name.startswith(STARTING):
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile: it started
                if time.time() - folder.stat().st_mtime < ABANDONED_START_S:
                    continue  # another server is starting right now
        elif is_held(folder / LOCK):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def is_held(lock_path: Path) -> bool:
    try:
        with open(lock_path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # no lock file: not a folder a server could be using
    return False

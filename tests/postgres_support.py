"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on loopback and a free port.

Debian's PostgreSQL binaries live in /usr/lib/postgresql/<major>/bin. PostgreSQL refuses to
run as root, so as root the cluster is owned by and run as the `postgres` system user
(runuser); otherwise as the current user. Trust authentication, loopback only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from service_support import free_port

PG_USER = "postgres"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *command]
    return command


@contextlib.contextmanager
def postgres_server(base: Path | None = None) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops and deletes the cluster after."""
    binaries = pg_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is missing: apt-get install -y postgresql")
    root = Path(tempfile.mkdtemp(prefix="kitchenware-pg-", dir=base))
    data, log = root / "data", root / "server.log"
    user = PG_USER if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
    port = free_port()
    subprocess.run(
        _as_owner([str(binaries / "initdb"), "-D", str(data), "-U", user, "-A", "trust"]),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=on"
    subprocess.run(
        _as_owner(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)

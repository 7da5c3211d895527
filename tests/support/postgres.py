"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on loopback and a free port.

Debian's PostgreSQL binaries live in /usr/lib/postgresql/<major>/bin. PostgreSQL refuses to
run as root, so as root the cluster is owned by and run as the `postgres` system user
(runuser); otherwise as the current user. Trust authentication, loopback only. Fault tests
stop, restart and freeze (SIGSTOP) the cluster through PostgresCluster.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.service import free_port

PG_USER = "postgres"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *command]
    return command


@dataclass
class PostgresCluster:
    """A running throwaway cluster: its URL, and the faults a test can cause (stop, start,
    freeze with SIGSTOP)."""

    url: str
    binaries: Path
    data: Path
    log: Path
    port: int
    socket_dir: Path

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_owner([str(self.binaries / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=on"
        self.pg_ctl("-l", str(self.log), "-o", options, "-w", "start")
        self.wait_ready()

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """The postmaster and every backend it started (what a frozen server is)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True
        ).stdout.split()
        return [postmaster, *map(int, children)]

    def signal(self, number: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)


@contextlib.contextmanager
def postgres_cluster(base: Path | None = None) -> Iterator[PostgresCluster]:
    """A fresh cluster on loopback; stopped and deleted after."""
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
    url = f"postgresql://{user}@127.0.0.1:{port}/postgres"
    cluster = PostgresCluster(url, binaries, data, log, port, root)
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.signal(signal.SIGCONT)  # a frozen server cannot stop
        subprocess.run(
            _as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(base: Path | None = None) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; stops and deletes the cluster after."""
    with postgres_cluster(base) as cluster:
        yield cluster.url

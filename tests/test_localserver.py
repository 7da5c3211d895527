"""kitchenware.localserver: a real subprocess server started, probed and stopped."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from kitchenware.localserver import free_port, process_table, running


def test_a_server_is_ready_when_it_answers_and_gone_after(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "readyz").write_text("ok")
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}"
    with running(
        command,
        ready_url=f"{url}/readyz",
        log_path=tmp_path / "logs" / "server.log",
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        timeout=60,
    ) as (process, probes):
        assert probes[-1] == "200" and set(probes) <= {"refused", "200"}
        assert httpx.get(f"{url}/readyz").text == "ok"
        pid = process.pid
    assert process.poll() is not None and pid not in process_table()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/readyz")


def test_a_server_that_exits_first_fails_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"]
    with (
        pytest.raises(RuntimeError, match=r"exited with 3:\nno model here"),
        running(
            command,
            ready_url=f"http://127.0.0.1:{free_port()}/readyz",
            log_path=tmp_path / "server.log",
            env={},
            cwd=tmp_path,
            timeout=60,
        ),
    ):
        pass

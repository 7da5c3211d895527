"""The published kitchenware Xception in tests: imported once per session into its own
BentoML home, served once per session with the service's default settings.

The wheel comes from the user's cache (~/.cache/kitchenware, or $KITCHENWARE_CACHE_DIR):
downloaded on the first run anywhere, then reused.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from support.service import REPO, ServedService, serve, session_server, store_env

_shared: dict[str, object] = {}


def pretrained_cli(
    *args: str, home: Path, timeout: float = 3600, **settings: str
) -> subprocess.CompletedProcess[str]:
    """`python -m kitchenware.modelbuild.pretrained ARGS` against the store in `home`.

    An import (convert, verify, OpenVINO IR + gate) took 15 min at load average 20 here.
    """
    return subprocess.run(
        [sys.executable, "-m", "kitchenware.modelbuild.pretrained", *args],
        env=store_env(home, default_model=True, overrides=settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def imported_tag(stdout: str) -> str:
    """The tag in the CLI's 'model TAG imported into / already in ...' line."""
    line = next(line for line in stdout.splitlines() if line.startswith("model "))
    return line.split()[1]


def real_model_home(base: Path) -> tuple[Path, str]:
    """A BentoML home holding the imported real model (one import per session)."""
    if "home" not in _shared:
        home = base / "real_bentoml_home"
        done = pretrained_cli("import", home=home)
        assert done.returncode == 0, done.stderr[-3000:]
        _shared["home"], _shared["tag"] = home, imported_tag(done.stdout)
    return Path(str(_shared["home"])), str(_shared["tag"])


def shared_real_server(request: object, base: Path) -> ServedService:
    """`bentoml serve service:Kitchenware` with no model setting: the default model."""

    def start() -> tuple[contextlib.AbstractContextManager[ServedService], dict[str, object]]:
        home, tag = real_model_home(base)
        context = serve("service:Kitchenware", store_env(home, default_model=True), log_dir=base)
        return context, {"tag": tag, "bentoml_home": home}

    return session_server(request, "real-model", start)

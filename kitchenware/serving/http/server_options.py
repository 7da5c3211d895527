"""Two uvicorn timeouts BentoML 1.4 only takes as hidden `bentoml serve` flags.

- Keep-alive: uvicorn closes a connection idle for 5 s. A pooled client (httpx expires
  idle connections after 5 s too, aiohttp after 15 s) that sends its next request just as
  the server closes gets a reset and no answer: the "dropped connection" of a 96-client
  burst (bench/burst.py; the request never reached the service). A longer server
  keep-alive (like nginx's 75 s) closes that window for every common client.
- Graceful shutdown: on SIGTERM uvicorn stops accepting and waits for in-flight requests,
  without a bound unless one is given; the bound keeps shutdown inside Kubernetes'
  terminationGracePeriodSeconds (30 s).

BentoML 1.4.40 takes both only as hidden `bentoml serve --timeout-keep-alive N
--timeout-graceful-shutdown N` flags: no service or server config key (ServiceConfig's
`http` block has none), no environment variable (the click options declare no envvar), and
the generated container runs a plain `bentoml serve`. A user's plain `bentoml serve` would
keep uvicorn's 5 s. So `apply_server_options` changes uvicorn's defaults in the worker
process only (service.py calls it at import, before BentoML's worker builds its
uvicorn.Config); the flags, when given, still win (an explicit value other than uvicorn's 5).
"""

from __future__ import annotations

import functools
from typing import Any

UVICORN_DEFAULT_KEEP_ALIVE_S = 5


def apply_server_options(*, keep_alive_s: int, graceful_shutdown_s: int) -> None:
    """Make uvicorn.Config default to these timeouts in this process (idempotent)."""
    import uvicorn.config

    config_cls: Any = uvicorn.config.Config
    original = getattr(config_cls.__init__, "__wrapped__", config_cls.__init__)

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("timeout_keep_alive", UVICORN_DEFAULT_KEEP_ALIVE_S) in (
            None,
            UVICORN_DEFAULT_KEEP_ALIVE_S,
        ):
            kwargs["timeout_keep_alive"] = keep_alive_s
        if kwargs.get("timeout_graceful_shutdown") is None:
            kwargs["timeout_graceful_shutdown"] = graceful_shutdown_s
        original(self, *args, **kwargs)

    config_cls.__init__ = init

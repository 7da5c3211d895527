"""Cross-origin requests: off unless KITCHENWARE_CORS_ALLOWED_ORIGINS names origins.

Off means no Access-Control-* header is ever sent, so browsers keep pages from other
origins from reading answers. On, Starlette's CORSMiddleware answers preflights for the
listed origins only (`*` allows any origin, without credentials).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

ALLOWED_METHODS = ("GET", "POST", "OPTIONS")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "Server-Timing")
PREFLIGHT_CACHE_S = 600


def check_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Origins as browsers send them (scheme://host[:port]); a ValueError for anything else."""
    cleaned = tuple(origin.strip().rstrip("/") for origin in origins if origin.strip())
    for origin in cleaned:
        if origin != "*" and (
            not origin.startswith(("http://", "https://")) or "/" in origin.split("://", 1)[1]
        ):
            raise ValueError(
                f"KITCHENWARE_CORS_ALLOWED_ORIGINS entry {origin!r} is not an origin; write "
                "scheme://host[:port] (e.g. https://app.example.com) or *."
            )
    return cleaned


def cors_options(origins: Iterable[str]) -> dict[str, Any] | None:
    """CORSMiddleware keyword arguments, or None when CORS stays off."""
    allowed = check_origins(origins)
    if not allowed:
        return None
    return {
        "allow_origins": list(allowed),
        "allow_methods": list(ALLOWED_METHODS),
        "allow_headers": list(ALLOWED_HEADERS),
        "expose_headers": list(EXPOSED_HEADERS),
        "allow_credentials": False,  # bearer keys are sent explicitly, never as cookies
        "max_age": PREFLIGHT_CACHE_S,
    }


def with_cors(app: ASGIApp, origins: Iterable[str]) -> ASGIApp:
    """`app` behind CORSMiddleware for `origins`, or `app` unchanged when there are none."""
    options = cors_options(origins)
    return app if options is None else CORSMiddleware(app, **options)

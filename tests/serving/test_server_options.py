"""server_options: uvicorn.Config defaults change in this process, explicit values win."""

from __future__ import annotations

import uvicorn

from kitchenware.serving.http.server_options import apply_server_options


async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


def test_defaults_change_and_explicit_values_win() -> None:
    apply_server_options(keep_alive_s=75, graceful_shutdown_s=20)
    apply_server_options(keep_alive_s=75, graceful_shutdown_s=20)  # idempotent: one wrapper
    default = uvicorn.Config(app, timeout_keep_alive=5)  # what BentoML's worker passes
    assert default.timeout_keep_alive == 75 and default.timeout_graceful_shutdown == 20
    explicit = uvicorn.Config(app, timeout_keep_alive=30, timeout_graceful_shutdown=3)
    assert explicit.timeout_keep_alive == 30 and explicit.timeout_graceful_shutdown == 3
    wrapper: object = uvicorn.Config.__init__
    assert not hasattr(getattr(wrapper, "__wrapped__"), "__wrapped__")  # noqa: B009


def test_the_header_deadline_replaces_the_auto_protocol_and_an_explicit_one_wins() -> None:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    apply_server_options(keep_alive_s=75, graceful_shutdown_s=20, header_timeout_s=4)
    protocol = uvicorn.Config(app).http
    assert isinstance(protocol, type) and issubclass(protocol, AutoHTTPProtocol)
    assert protocol.__name__ == "HeaderDeadline"
    assert uvicorn.Config(app, http="h11").http == "h11"

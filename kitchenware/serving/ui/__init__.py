"""The upload page at /ui: static HTML + JS + CSS from this folder, no build step, no CDN.

Mounted beside the API with `@bentoml.asgi_app(ui_app(facts), path="/ui")`. `/ui` redirects to
`/ui/` so the page's relative links resolve; `/ui/readme` renders the project README
(with BentoML's bundled marked.js, no network), the target of the Swagger page's links.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

UI_DIR = Path(__file__).resolve().parent
# The README sits beside the kitchenware package in the repo and in a bento's src/.
README = UI_DIR.parents[2] / "README.md"


async def readme_text(_: Request) -> Response:
    if not README.is_file():
        return PlainTextResponse("README.md is not part of this build.", status_code=404)
    return PlainTextResponse(README.read_text(encoding="utf-8"), media_type="text/markdown")


class _SlashRedirect:
    """`/ui` -> `/ui/`, so that `ui.js` and `../classify` resolve from the page."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "") in ("", scope.get("root_path")):
            target = f"{scope.get('root_path', '')}/"
            query = scope.get("query_string", b"").decode("latin-1")
            response = RedirectResponse(target + (f"?{query}" if query else ""), 307)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def ui_app(runtime: Callable[[], dict[str, Any]]) -> _SlashRedirect:
    """The page app; `runtime()` says what answers (model tag, classes, backend)."""

    async def runtime_info(_: Request) -> Response:
        """For the page's footer line."""
        return JSONResponse(runtime())

    app = Starlette(
        routes=[
            Route("/README.md", readme_text),
            Route("/info.json", runtime_info),
            # The Swagger page links to /ui/readme#section (StaticFiles wants readme.html).
            Route("/readme", lambda _: FileResponse(UI_DIR / "readme.html")),
            Mount("/", StaticFiles(directory=UI_DIR, html=True)),
        ]
    )
    return _SlashRedirect(app)

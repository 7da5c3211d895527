"""The Swagger page at / as this service's own, in service.py and in a built bento.

BentoML's page has its title, a "None" version, badges and a tag manager fetched from
the internet, and its own Slack/issue links. `DocsPage` (ASGI middleware) answers `GET /`
with a page that loads only BentoML's bundled Swagger UI files (./static_content/...), and
rewrites the `info` block of `GET /docs.json`: the project's title, version, what it
classifies, which model and backend answer, a curl example and links to /ui and the README.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kitchenware import __version__

TITLE = "Kitchenware classifier"

INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>{title} {version}: API</title>
  <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
  <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" sizes="32x32" />
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "./docs.json",
        dom_id: "#swagger-ui",
        deepLinking: true,
        validatorUrl: null,  // the default asks validator.swagger.io over the internet
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        plugins: [SwaggerUIBundle.plugins.DownloadUrl],
        layout: "StandaloneLayout",
      }});
    }};
  </script>
</body>
</html>
"""

README_SECTIONS = (  # the README's own headings; the details live in docs/*.md, linked from it
    ("Classify with curl", "classify-with-curl"),
    ("Python client", "python-client"),
    ("Which model answers", "which-model-answers"),
    ("Documentation", "documentation"),
)


def description(runtime: dict[str, Any]) -> str:
    classes = ", ".join(
        runtime.get("classes") or ["cup", "fork", "glass", "knife", "plate", "spoon"]
    )
    model = runtime.get("model", "?")
    backend = runtime.get("backend", "?")
    links = " · ".join(f"[{name}](./ui/readme#{anchor})" for name, anchor in README_SECTIONS)
    return f"""\
Send a photo of kitchenware, get its class back: **{classes}**.

- **Model:** `{model}` ({runtime.get("model_note", "see the README for where it comes from")})
- **Backend:** `{backend}`
- **Upload page:** [/ui](./ui/) (pick a photo, see the label, correct it, see a heatmap)

```bash
curl -F image=@photo.jpg http://localhost:3000/classify
curl -F label=cup -F request_id=<request_id from the answer> http://localhost:3000/feedback
```

Every answer carries a `request_id` (body and `X-Request-ID` header). Errors are JSON with
an `error` sentence and a `reason` code.

README: {links}
"""


class DocsPage:
    """ASGI middleware: this project's Swagger page at / and `info` in /docs.json."""

    def __init__(self, app: ASGIApp, runtime: Callable[[], dict[str, Any]]) -> None:
        """`runtime()`: what answers now (model tag, classes, backend), shown in the page."""
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else None
        if path == "/" and scope.get("method") in ("GET", "HEAD"):
            page = HTMLResponse(INDEX_HTML.format(title=TITLE, version=__version__))
            await page(scope, receive, send)
            return
        if path == "/docs.json" and scope.get("method") == "GET":
            await self.app(scope, receive, self._rewriting(send))
            return
        await self.app(scope, receive, send)

    def _rewriting(self, send: Send) -> Send:
        held: list[Message] = []
        chunks: list[bytes] = []

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if message["type"] == "http.response.body" and held:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                start = held.pop()
                body = b"".join(chunks)
                if start["status"] == 200:
                    body = self._branded(body)
                start["headers"] = [
                    (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
                ] + [(b"content-length", str(len(body)).encode())]
                await send(start)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        return rewrite

    def _branded(self, body: bytes) -> bytes:
        try:
            spec = json.loads(body)
        except ValueError:
            return body
        runtime = self.runtime()
        spec["info"] = {
            "title": TITLE,
            "version": __version__,
            "description": description(runtime),
            "contact": {"name": "Kitchenware classifier maintainers"},
        }
        return json.dumps(spec).encode()

"""`GET /docs` (Swagger UI) and `GET /redoc` (ReDoc) from files shipped in the package, under a CSP.

FastAPI's own pages load both from a CDN: blank in a cluster without internet access, and a third party
told of every visit. These pages load the same tools from `static/vendor/` (copied from their npm
packages by `make vendor`; a test compares them byte for byte) and start them from `static/docs.js`
and a `<redoc>` element, so no inline script is needed. Both render in a browser with the network cut.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

TITLE = "cats-dogs-other"

# The tools' own needs and nothing more: their scripts from here, the inline styles both set on elements
# (and ReDoc's styled-components), icons as data: URIs, ReDoc's search in a blob: worker, requests (the
# OpenAPI document, "Try it out") to this service only.
DOCS_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
DOCS_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}

# Relative URLs: the pages work behind a reverse proxy's path prefix, like the page at `/`.
SWAGGER_UI_HTML = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{TITLE} - Swagger UI</title>
  <link rel="icon" href="static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="static/vendor/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="static/vendor/swagger-ui-bundle.js"></script>
  <script src="static/docs.js"></script>
</body>
</html>
"""

REDOC_HTML = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{TITLE} - ReDoc</title>
  <link rel="icon" href="static/favicon.svg" type="image/svg+xml">
</head>
<body>
  <redoc spec-url="openapi.json"></redoc>
  <script src="static/vendor/redoc.standalone.js"></script>
</body>
</html>
"""


def install_docs(app: Starlette) -> None:
    """Add `/docs` and `/redoc` to an app built with FastAPI's own docs off (`docs_url=None`,
    `redoc_url=None`); neither is part of the OpenAPI document, as FastAPI's are not."""

    async def swagger_ui(request: Request) -> Response:
        return HTMLResponse(SWAGGER_UI_HTML, headers=DOCS_HEADERS)

    async def redoc(request: Request) -> Response:
        return HTMLResponse(REDOC_HTML, headers=DOCS_HEADERS)

    app.router.routes.append(Route("/docs", swagger_ui, methods=["GET", "HEAD"], name="swagger_ui"))
    app.router.routes.append(Route("/redoc", redoc, methods=["GET", "HEAD"], name="redoc"))

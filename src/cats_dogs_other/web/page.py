"""`GET /` and `/static/…`: plain HTML, CSS and ES modules, no build step, no external request.

The page is a client of the JSON API like any other (`/version`, `/predict`): it gets its configuration
from `/version` and its token from the person's OpenID provider, so nothing here is secret. Its headers
confine it: scripts and styles from this service only, network requests to this service and the token
issuer only, never framed (clickjacking), no referrer (the sign-in callback URL carries a one-time code).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cats_dogs_other.settings import AuthSettings

STATIC_DIR = Path(__file__).parent / "static"


def page_headers(settings: AuthSettings) -> dict[str, str]:
    """The page's security headers; `connect-src` names the issuer only when sign-in may use it."""
    connect = ["'self'"]
    if not settings.auth_disabled and settings.oauth2_issuer:
        issuer = urlsplit(settings.oauth2_issuer)
        connect.append(f"{issuer.scheme}://{issuer.netloc}")
    policy = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",  # local previews (blob:) and the API's thumbnails (data:)
        f"connect-src {' '.join(connect)}",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return {
        "Content-Security-Policy": "; ".join(policy),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Cross-Origin-Opener-Policy": "same-origin",
    }


class _WithHeaders:
    """Adds fixed headers to every response of an ASGI app (here: the static files)."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_page(app: Starlette, settings: AuthSettings) -> None:
    """Add the page (`/` and `/static/…`) to an app; neither is part of its OpenAPI document."""
    # File names carry no hash, so every file is revalidated (ETag) and a new release is never mixed
    # with a cached older module.
    headers = {**page_headers(settings), "Cache-Control": "no-cache"}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=headers)

    app.router.routes.append(Route("/", index, methods=["GET", "HEAD"], name="page"))
    app.router.routes.append(
        Mount("/static", app=_WithHeaders(StaticFiles(directory=STATIC_DIR), headers), name="static")
    )

"""URL helpers shared by configuration, key fetching and model loading."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

# user:password@ (or a token as the user) in any URL-like text, as MLflow tracking URIs may carry.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is localhost or a loopback address (127.0.0.0/8, ::1), and nothing else."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: 127.0.0.1.example.org is not loopback
        return False


def require_https_unless_loopback(url: str) -> None:
    """Keys fetched over plain HTTP could be swapped by anyone on the path: https, or http on a
    loopback address only (local work and tests). ValueError otherwise."""
    scheme = urlsplit(url).scheme
    if scheme != "https" and not (scheme == "http" and is_loopback_url(url)):
        raise ValueError(f"{url} must use https (plain http is accepted only on a loopback address)")


def redact_credentials(text: str) -> str:
    """`https://user:secret@host/…` → `https://***@host/…`, wherever it appears in `text`."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)

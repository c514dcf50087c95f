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


def redact_credentials(text: str) -> str:
    """`https://user:secret@host/…` → `https://***@host/…`, wherever it appears in `text`."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)

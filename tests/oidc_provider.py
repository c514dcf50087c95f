"""The real OpenID Connect provider the end-to-end tests run: node-oidc-provider on a loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import free_port

PROVIDER_DIR = Path(__file__).parent / "auth" / "oidc_provider"
AUDIENCE = "https://api.cats-dogs-other.test"


def provider_issuer(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextmanager
def oidc_provider(port: int | None = None, page_urls: tuple[str, ...] = ()) -> Iterator[str]:
    """Run the provider (see provider.mjs) and yield its issuer URL. With `page_urls`, it also knows the
    web page's public clients (`web-page`, `web-page-no-scope`, redirected to those URLs) and shows its
    own login and consent pages."""
    node = shutil.which("node")
    if node is None:
        pytest.skip(reason="Node.js is not installed: the real OpenID provider (oidc-provider) cannot run")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PROVIDER_DIR,
            check=True,
            timeout=300,
            capture_output=True,
        )
    command = [node, "provider.mjs", str(port or free_port()), AUDIENCE, *page_urls]
    process = subprocess.Popen(
        command, cwd=PROVIDER_DIR, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # one JSON line once it listens
        if not line:
            raise RuntimeError("oidc-provider exited before listening")
        yield json.loads(line)["issuer"]
    finally:
        process.terminate()
        process.wait(timeout=10)

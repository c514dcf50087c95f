"""The Bruno collection (the course's API client), run with its CLI against live servers."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from cats_dogs_other.api import create_app
from cats_dogs_other.inference.classifier import ImageClassifier
from cats_dogs_other.settings import Settings
from tests.auth.conftest import AUDIENCE, FakeProvider
from tests.conftest import REPO_ROOT
from tests.servers import ready_server

COLLECTION = REPO_ROOT / "bruno"


@pytest.fixture(scope="module")
def bru() -> list[str]:
    if shutil.which("npx") is None:
        pytest.skip(reason="Node.js/npm is not installed: the Bruno CLI cannot run")
    if not (COLLECTION / "node_modules" / "@usebruno" / "cli").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=COLLECTION,
            check=True,
            timeout=600,
            capture_output=True,
        )
    # The developer sandbox: the safe one (QuickJS) is loaded asynchronously in CLI 4.1.0, and the
    # first assertion of a run can come before it is ("Cannot read properties of undefined (reading
    # 'newContext')", usebruno/bruno#7373). The collection holds only declarative assertions.
    return ["npx", "@usebruno/cli", "run", "--sandbox", "developer"]


def run_collection(
    bru: list[str], base_url: str, token: str, *requests: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*bru, *requests, "--env", "local", "--env-var", f"baseUrl={base_url}"],
        cwd=COLLECTION,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CDO_ACCESS_TOKEN": token},
    )


def test_collection_passes_against_the_demo_server(bru: list[str], classifier: ImageClassifier) -> None:
    app = create_app(Settings(auth_disabled=True), classifier)
    with ready_server(app) as base_url:
        done = run_collection(bru, base_url, "unused-when-auth-is-off")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 (4 Passed)" in done.stdout


def test_token_request_uses_the_environment_variable(
    bru: list[str], provider: FakeProvider, classifier: ImageClassifier
) -> None:
    app = create_app(Settings(oauth2_issuer=provider.issuer, oauth2_audience=AUDIENCE), classifier)
    with ready_server(app) as base_url:
        accepted = run_collection(
            bru, base_url, provider.token(), "upload-with-token.bru", "not-an-image.bru"
        )
        refused = run_collection(bru, base_url, "not-a-valid-token", "upload-with-token.bru")
    assert accepted.returncode == 0, accepted.stdout[-3000:]
    assert "2 (2 Passed)" in accepted.stdout
    assert refused.returncode != 0
    assert "401" in refused.stdout

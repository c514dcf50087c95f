"""The vendored browser libraries (the page's sign-in library, Swagger UI and ReDoc for the API docs) are,
byte for byte, the npm packages pinned in vendor/package-lock.json."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cats_dogs_other.web.page import STATIC_DIR
from tests.conftest import REPO_ROOT

VENDOR = REPO_ROOT / "vendor"
COPIES = {  # vendored file -> its source in node_modules (what `make vendor` copies)
    "oidc-client-ts.min.js": "oidc-client-ts/dist/browser/oidc-client-ts.min.js",
    "oidc-client-ts.LICENSE": "oidc-client-ts/LICENSE",
    "jwt-decode.LICENSE": "jwt-decode/LICENSE",
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-bundle.js.LICENSE.txt": "swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui.LICENSE": "swagger-ui-dist/LICENSE",
    "swagger-ui.NOTICE": "swagger-ui-dist/NOTICE",
    "redoc.standalone.js": "redoc/bundles/redoc.standalone.js",
    "redoc.standalone.js.LICENSE.txt": "redoc/bundles/redoc.standalone.js.LICENSE.txt",
    "redoc.LICENSE": "redoc/LICENSE",
}


@pytest.fixture(scope="module")
def node_modules() -> Path:
    modules = VENDOR / "node_modules"
    if not all((modules / source).is_file() for source in COPIES.values()):
        if shutil.which("npm") is None:
            pytest.skip(reason="npm is not installed: the vendored files cannot be compared with npm's")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=VENDOR, check=True, timeout=300, capture_output=True
        )
    return modules


def test_vendored_files_are_the_pinned_packages_files(node_modules: Path) -> None:
    for copy, source in COPIES.items():
        assert (STATIC_DIR / "vendor" / copy).read_bytes() == (node_modules / source).read_bytes(), copy
    shipped = {path.name for path in (STATIC_DIR / "vendor").iterdir()} - {"README.md"}
    assert shipped == set(COPIES), "every vendored file comes from a pinned package"


def test_the_recorded_versions_are_the_locked_ones() -> None:
    lock = json.loads((VENDOR / "package-lock.json").read_text())["packages"]
    readme = (STATIC_DIR / "vendor" / "README.md").read_text()
    for package in ("oidc-client-ts", "jwt-decode", "swagger-ui-dist", "redoc"):
        version = lock[f"node_modules/{package}"]["version"]
        assert re.search(rf"\[{package}\]\([^)]*\)[^|]*\| {re.escape(version)} \|", readme), package
    marker = (STATIC_DIR / "vendor" / "oidc-client-ts.min.js").read_text()
    assert f'"{lock["node_modules/oidc-client-ts"]["version"]}"' in marker  # the bundle's own Version

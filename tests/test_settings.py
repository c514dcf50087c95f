"""Configuration: grouped by concern under flat names, every setting documented, limits derived from the
memory budget, safe URLs only."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from cats_dogs_other.inference.decode import decode_cost
from cats_dogs_other.inference.limits import DEFAULT_DECODE_MEMORY_BYTES, DEFAULT_MAX_PIXELS
from cats_dogs_other.memory import cgroup_memory_limit
from cats_dogs_other.settings import SETTINGS_GROUPS, LimitSettings, Settings
from tests.conftest import REPO_ROOT


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in readme]
    assert not missing, f"settings missing from README's tables: {missing}"


def test_every_setting_belongs_to_exactly_one_group_under_its_flat_name() -> None:
    grouped = [name for group in SETTINGS_GROUPS.values() for name in group.model_fields]
    assert len(grouped) == len(set(grouped)), "a setting in two groups"
    assert grouped == list(Settings.model_fields)  # and `serve --help` lists them in that order


def test_a_group_reads_its_own_variables_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cats-dogs-other extract` and `train` need the document limits only: a bad value elsewhere (an
    http issuer) does not stop them, and the limits come from the same flat variables."""
    monkeypatch.setenv("MAX_PDF_PAGES", "7")
    monkeypatch.setenv("OAUTH2_ISSUER", "http://idp.example.org/")
    assert LimitSettings().document_limits().max_pages == 7
    with pytest.raises(ValidationError, match="must use https"):
        Settings()


def test_the_decode_budget_derives_from_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is left of a worker's share after the process (256 MiB), three bodies and 64 MiB of slack."""
    assert (
        Settings(memory_limit_bytes=768 << 20).decode_memory_bytes == DEFAULT_DECODE_MEMORY_BYTES == 256 << 20
    )
    assert Settings(memory_limit_bytes=1 << 30).decode_memory_bytes == 512 << 20
    assert Settings(memory_limit_bytes=1 << 30, body_memory_bytes=32 << 20).decode_memory_bytes == 608 << 20
    assert Settings(memory_limit_bytes=1536 << 20, workers=2).decode_memory_bytes == 256 << 20
    assert Settings(memory_limit_bytes=512 << 20).decode_memory_bytes == 64 << 20  # too small: the floor
    # OpenVINO holds ~100 MiB more than ONNX Runtime: 128 MiB more is kept for it.
    assert (
        Settings(memory_limit_bytes=768 << 20, inference_runtime="openvino").decode_memory_bytes == 128 << 20
    )
    # ... so the manifests tell an OpenVINO pod to take 896 MiB: the same 256 MiB of decodes as 768 on ORT.
    assert (
        Settings(memory_limit_bytes=896 << 20, inference_runtime="openvino").decode_memory_bytes == 256 << 20
    )
    assert (
        Settings(memory_limit_bytes=1 << 30, decode_memory_bytes=100 << 20).decode_memory_bytes == 100 << 20
    )
    # Without a setting: the container's limit, or the Deployment's 768 MiB where there is none.
    monkeypatch.delenv("MEMORY_LIMIT_BYTES")
    assert Settings().memory_limit_bytes == (cgroup_memory_limit() or 768 << 20)


def test_max_pixels_derives_from_the_decode_budget() -> None:
    assert Settings(memory_limit_bytes=768 << 20).max_pixels == DEFAULT_MAX_PIXELS == 64_000_000
    assert Settings(decode_memory_bytes=64 << 20).max_pixels == 14_000_000
    assert Settings(decode_memory_bytes=64 << 20, max_pixels=5).max_pixels == 5


def test_the_largest_image_allowed_fits_the_decode_budget_alone() -> None:
    side = int(DEFAULT_MAX_PIXELS**0.5)
    # What decode_cost reads of an opened image, without allocating 64 million pixels.
    worst = SimpleNamespace(size=(side, side), format="PNG", info={}, getbands=lambda: ("R", "G", "B", "A"))
    assert decode_cost(worst, worst.size) <= DEFAULT_DECODE_MEMORY_BYTES  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["oauth2_issuer", "oauth2_jwks_uri"])
def test_provider_urls_need_https_except_on_loopback(name: str) -> None:
    with pytest.raises(ValidationError, match="must use https"):
        Settings(**{name: "http://idp.example.org/"})  # type: ignore[arg-type]
    for allowed in ("https://idp.example.org/", "http://127.0.0.1:8000/", "http://localhost:8000/"):
        assert getattr(Settings(**{name: allowed}), name) == allowed  # type: ignore[arg-type]
    assert Settings(oauth2_jwks_uri=".well-known/jwks.json").oauth2_jwks_uri == ".well-known/jwks.json"


def test_loading_the_settings_imports_no_image_or_pdf_library() -> None:
    """The settings (and the CLI's flags, built from them) load without the decoders: their defaults
    come from `inference.limits`, which holds the numbers and not the libraries."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cats_dogs_other.settings; "
            "print(sorted(m for m in ('PIL', 'pypdf', 'onnxruntime') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"

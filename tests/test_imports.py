"""Every module imports on its own, in a fresh interpreter: no import cycle waits for a lucky order."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cats_dogs_other


def all_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(cats_dogs_other.__path__, prefix="cats_dogs_other.")
        if info.name != "cats_dogs_other.__main__"
    )


def import_alone(module: str) -> tuple[str, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    return module, done.returncode, done.stderr[-2000:]


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    modules = all_modules()
    assert "cats_dogs_other.api.dependencies" in modules  # the one the circular import used to break
    assert len(modules) > 40
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [(m, err) for m, code, err in pool.map(import_alone, modules) if code != 0]
    assert not failures, "\n\n".join(f"{module}:\n{error}" for module, error in failures)

"""What the service's image costs: its layers, the venv's largest packages, how long a build takes cold,
again unchanged, and after a change under src/, and how long a container takes to answer /ready.

    .venv/bin/python benchmarks/image.py [--context DIR] [--runs 5]

`--context` builds another checkout's Dockerfile (e.g. a `git worktree` of an older commit) for a before
and after. Podman as in the tests (tests/containers.py: tests/deploy/containers.conf; the official base, or
the stand-in built from Debian's packages where Docker Hub cannot be reached). The container runs hardened
as the Deployment runs it. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from tests.containers import (  # noqa: E402
    HARDENED,
    REPO_ROOT,
    Container,
    Podman,
    base_image,
    build_image,
)

from machine import describe  # noqa: E402

TAG = "localhost/cats-dogs-other:bench"
MB = 1_000_000
SITE_PACKAGES = "/opt/venv/lib/python3.11/site-packages"


def copy_context(source: Path, target: Path) -> Path:
    """What .dockerignore lets in, and the Dockerfile."""
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy(source / name, target / name)
    shutil.copytree(source / "deploy" / "docker", target / "deploy" / "docker")
    shutil.copytree(
        source / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return target


def layers(podman: Podman, image: str, base: str) -> list[tuple[str, int]]:
    def history(name: str) -> list[tuple[str, int]]:
        return [
            ((entry.get("CreatedBy") or "")[:70], int(entry["size"]))
            for entry in json.loads(podman("history", "--format=json", name))
        ]

    ours, theirs = history(image), history(base)
    return [(what, size) for what, size in ours[: len(ours) - len(theirs)] if size > 0]


def largest_packages(podman: Podman, image: str, count: int = 12) -> list[tuple[str, int]]:
    listed = podman(
        "run",
        "--rm",
        "--entrypoint=sh",
        image,
        "-c",
        f"cd {SITE_PACKAGES} && du -s --block-size=1 * | sort -rn | head -{count}",
    )
    return [(line.split()[1], int(line.split()[0])) for line in listed.splitlines()]


def seconds_to_ready(podman: Podman, image: str) -> float:
    container = Container(podman, image, HARDENED, env={"AUTH_DISABLED": "true"})
    started = time.monotonic()
    try:
        container.start(timeout=120)
        return time.monotonic() - started
    finally:
        container.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=Path, default=REPO_ROOT, help="the checkout to build")
    parser.add_argument("--runs", type=int, default=5, help="containers started to time /ready")
    args = parser.parse_args()
    podman = Podman(shutil.which("podman") or "podman")
    base = base_image(podman)
    with tempfile.TemporaryDirectory() as folder:
        context = copy_context(args.context, Path(folder))
        cold = build_image(podman, base, TAG, context, no_cache=True)
        build_image(podman, base, TAG, context)  # a --no-cache build leaves no cache to reuse
        again = build_image(podman, base, TAG, context)
        with (context / "src" / "cats_dogs_other" / "__init__.py").open("a") as source:
            source.write(f"\n# changed by the benchmark: {uuid.uuid4()}\n")  # never in a cache
        changed = build_image(podman, base, TAG, context)
    above = layers(podman, TAG, base)
    packages = largest_packages(podman, TAG)
    ready = [seconds_to_ready(podman, TAG) for _ in range(args.runs)]
    print(f"Machine: {describe()}")
    print(f"Command: `.venv/bin/python benchmarks/image.py --context {args.context} --runs {args.runs}`")
    print(f"Base: `{base}`\n")
    print("| build | seconds |\n|---|---:|")
    print(f"| cold (`--no-cache`, the base present) | {cold:.1f} |")
    print(f"| again, nothing changed | {again:.1f} |")
    print(f"| after a change under `src/` | {changed:.1f} |\n")
    print("| layer above the base | MB |\n|---|---:|")
    for what, size in above:
        print(f"| `{what}` | {size / MB:.1f} |")
    print(f"| **total** | **{sum(size for _, size in above) / MB:.1f}** |\n")
    print("| venv package | MB |\n|---|---:|")
    for name, size in packages:
        print(f"| {name} | {size / MB:.1f} |")
    print(
        f"\n`podman run` (hardened) to `/ready` 200: median {statistics.median(ready):.2f} s "
        f"(min {min(ready):.2f}, max {max(ready):.2f}, {args.runs} runs)"
    )
    podman("rmi", "--force", TAG, check=False)


if __name__ == "__main__":
    main()

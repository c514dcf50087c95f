"""What loading a second model beside the served one costs (issue 32: following an alias loads the new
version beside the old): the resident memory it adds and the seconds to load and warm it.

    .venv/bin/python benchmarks/model_load.py [MODEL] [--repeat N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    from cats_dogs_other.inference.classifier import ImageClassifier

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="a model path (default: the built-in one)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8, help="warm-up batch size (BATCH_MAX_SIZE)")
    args = parser.parse_args()
    served = ImageClassifier.load(args.model)
    served.warm_up(args.batch)
    seconds, added = [], []
    for _ in range(args.repeat):
        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        beside = ImageClassifier.load(args.model)
        beside.warm_up(args.batch)
        seconds.append(time.perf_counter() - started)
        added.append(rss_bytes() - before)
        del beside
    print(f"| load + warm-up (s), median of {args.repeat} | RSS added (MiB), median | max |")
    print("|---:|---:|---:|")
    print(
        f"| {statistics.median(seconds):.2f} | {statistics.median(added) / 2**20:.1f} | "
        f"{max(added) / 2**20:.1f} |"
    )


if __name__ == "__main__":
    main()

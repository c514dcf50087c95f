"""A picture of the dashboard drawn from real data: no Grafana runs here, so this script runs what Grafana
would look at and draws each panel of cats-dogs-other.json from Prometheus's answers.

It starts `cats-dogs-other serve` and Debian's `prometheus` with the shipped rules, sends traffic in three
phases (the course's images in their own mix with feedback; then mostly cats and noise photos, which the
model is unsure of, with corrections; then an overload burst against a small QUEUE_MAX), then asks
Prometheus for every panel's queries over the run (query_range) and draws them in the dashboard's grid.

    .venv/bin/python deploy/grafana/preview.py --out docs/dashboard.png     (about 7 minutes)
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.api.conftest import ServeProcess, serve_command  # noqa: E402
from tests.prometheus import PrometheusServer  # noqa: E402

DASHBOARD = Path(__file__).with_name("cats-dogs-other.json")
DATASET = REPO.parent / "shared" / "datasets" / "cats-dogs-other" / "images"
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval is at this scrape interval and zoom


def noise_photo(rng: np.random.Generator) -> bytes:
    """An image unlike any the model learned from: the model is unsure of these (top value ~0.55)."""
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


Pick = Callable[[random.Random], tuple[str, bytes]]


def run_clients(base: str, sha256: str, seconds: float, clients: int, pick: Pick) -> None:
    """`clients` threads posting what `pick` chooses to /upload for `seconds`; some answers get feedback."""
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        chooser = random.Random(seed)
        with httpx.Client(base_url=base, timeout=10) as http:
            while time.monotonic() < stop:
                truth, data = pick(chooser)
                try:
                    answer = http.post("/upload", files={"file": ("photo.png", data)})
                except httpx.HTTPError:
                    continue
                if answer.status_code == 200 and truth and chooser.random() < 0.1:
                    predicted = answer.json()["prediction"]
                    http.post(
                        "/feedback",
                        files={"file": ("photo.png", data)},
                        data={"label": truth, "predicted": predicted, "model_sha256": sha256},
                    )
                time.sleep(chooser.uniform(0.02, 0.08))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def traffic(base: str, sha256: str, minutes: float) -> None:
    by_label = {
        label.capitalize(): [path.read_bytes() for path in sorted((DATASET / label).glob("*.png"))]
        for label in ("cat", "dog", "other")
    }
    everything = [(label, data) for label, images in by_label.items() for data in images]
    rng = np.random.default_rng(0)
    noise = [noise_photo(rng) for _ in range(20)]
    phase = minutes * 60 / 3

    def as_trained(chooser: random.Random) -> tuple[str, bytes]:
        return chooser.choice(everything)

    def drifted(chooser: random.Random) -> tuple[str, bytes]:
        if chooser.random() < 0.4:
            return "Other", chooser.choice(noise)  # people say: that is not a dog
        return "Cat", chooser.choice(by_label["Cat"])

    run_clients(base, sha256, phase * 0.75, 4, as_trained)
    run_clients(base, sha256, phase * 1.5, 4, drifted)
    run_clients(base, sha256, phase * 0.45, 4, as_trained)
    run_clients(base, sha256, phase * 0.3, 48, as_trained)  # overload: QUEUE_MAX is 16 here


def unit_format(unit: str) -> Callable[[float], str]:
    def percent(v: float) -> str:
        return f"{v:.0%}" if abs(v) >= 0.1 or v == 0 else f"{v:.1%}"

    def seconds(v: float) -> str:
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"

    def short(v: float) -> str:  # Grafana's "short": 225 K, 1.2 Mil
        for size, suffix in ((1e6, " Mil"), (1e3, " K")):
            if abs(v) >= size:
                return f"{v / size:.3g}{suffix}"
        return f"{v:.3g}"

    formats: dict[str, Callable[[float], str]] = {"percentunit": percent, "s": seconds}
    return formats.get(unit, short)


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def draw(board: dict[str, Any], prometheus: PrometheusServer, start: float, end: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plt.rcParams.update({"font.size": 7, "axes.titlesize": 8})
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig = plt.figure(figsize=(16, bottom * 0.27), facecolor="#111217")
    grid = fig.add_gridspec(bottom, 24, hspace=2.5, wspace=1.2, left=0.03, right=0.99, top=0.97, bottom=0.03)
    for panel in board["panels"]:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            ax = fig.add_subplot(grid[pos["y"] : pos["y"] + 1, :])
            ax.axis("off")
            ax.text(0, 0.5, panel["title"], color="#d8d9da", fontsize=10, weight="bold", va="center")
            continue
        # The title takes the panel's first grid row, the tick labels its last.
        ax = fig.add_subplot(grid[pos["y"] + 1 : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"]])
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.tick_params(colors="#8e8e8e")
        ax.set_title(panel["title"], color="#d8d9da", loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        fmt = unit_format(unit)
        if panel["type"] == "stat":
            ax.axis("off")
            rows = []
            for target in panel["targets"]:
                for series in prometheus.query(target["expr"]):
                    rows.append(
                        f"{legend(target['legendFormat'], series['metric'])}: {float(series['value'][1]):g}"
                    )
            ax.text(
                0.5, 0.5, "\n".join(rows) or "no data", color="#73bf69", ha="center", va="center", fontsize=11
            )
            continue
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            data = prometheus.api("query_range", query=expr, start=str(start), end=str(end), step="5")
            dashed = "training" in target["legendFormat"] or "validation" in target["legendFormat"]
            for series in data["result"]:
                points = [
                    (float(t) - start, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(
                        [x / 60 for x in xs],
                        ys,
                        linewidth=1.2,
                        linestyle="--" if dashed else "-",
                        label=legend(target["legendFormat"], series["metric"]),
                    )
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        for step in steps:
            if step.get("value") is not None:
                ax.axhline(step["value"], color="#f2495c", linestyle=":", linewidth=1)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, fmt=fmt: fmt(v)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v)}:{round(v * 60) % 60:02d}"))
        ax.grid(color="#2c3235", linewidth=0.5)
        if ax.lines:
            ax.legend(
                fontsize=6, loc="upper left", facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#d8d9da"
            )
    picture = io.BytesIO()
    fig.savefig(picture, dpi=100, facecolor=fig.get_facecolor())
    # A palette of 128 colours: the same picture at about a third of the bytes, for the repository.
    Image.open(picture).convert("RGB").quantize(128).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--minutes", type=float, default=6.0, help="traffic, in all (three phases)")
    args = parser.parse_args()
    board = json.loads(DASHBOARD.read_text())
    folder = Path(tempfile.mkdtemp(prefix="cdo-preview-"))
    command = serve_command(
        "--feedback-database-url", f"sqlite:///{folder / 'feedback.db'}", "--queue-max", "16"
    )
    server = ServeProcess(command, folder / "serve.log").start()
    prometheus = PrometheusServer([f"127.0.0.1:{server.port}"]).start()
    try:
        sha256 = httpx.get(f"{server.base_url}/version").json()["model"]["sha256"]
        prometheus.wait_for("count_over_time(cdo_predictions_total[1m]) >= 2")
        start = time.time()
        traffic(server.base_url, sha256, args.minutes)
        time.sleep(5)  # the last scrapes and rule evaluations
        draw(board, prometheus, start, time.time(), args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    finally:
        prometheus.stop()
        server.stop()


if __name__ == "__main__":
    main()

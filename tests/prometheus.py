"""A real Prometheus server for tests: Debian's `prometheus` (`make test` installs it when missing), with
the shipped rules, scraping given targets every second, on a free loopback port, its data in a
temporary folder. Results are read back through its HTTP API, as Grafana would."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "cats-dogs-other.rules.yml"
# Fast enough for a test to see its requests in recorded series within seconds.
INTERVAL = "1s"


def promtool() -> str | None:
    return shutil.which("promtool")


class PrometheusServer:
    def __init__(self, targets: list[str], rule_files: list[Path] | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise FileNotFoundError(
                "prometheus is not installed: `make test` installs it (Debian prometheus)"
            )
        self.binary = binary
        self.folder = Path(tempfile.mkdtemp(prefix="cdo-prometheus-"))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
            "rule_files": [str(path) for path in (rule_files if rule_files is not None else [RULES])],
            "scrape_configs": [
                {
                    "job_name": "cats-dogs-other",
                    "scrape_timeout": INTERVAL,
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        self.config = self.folder / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> PrometheusServer:
        self.log = (self.folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.logs()}")
            try:
                if httpx.get(f"{self.base_url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus never became ready:\n{self.logs()}")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful API answer; AssertionError with Prometheus's error otherwise."""
        answer = httpx.get(f"{self.base_url}/api/v1/{path}", params=params, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [time, "text"]}, ...]."""
        data = self.api("query", query=expression)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expression: str, by: str) -> dict[str, float]:
        """An instant query as {value of label `by`: number}."""
        return {row["metric"].get(by, ""): float(row["value"][1]) for row in self.query(expression)}

    def wait_for(self, expression: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The first non-empty result of `expression` within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expression)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.25)

    def logs(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None) is not None:
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "Inf", "NaN"}
)


def metric_names(expression: str) -> set[str]:
    """The metric (or recorded series) names a PromQL expression reads: what is left once strings,
    label matchers, ranges, label lists, functions and keywords are taken out."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


def recorded_rules(path: Path = RULES) -> dict[str, str]:
    """Recorded series name -> its expression, from a rules file."""
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"] if "record" in rule}


def alert_rules(path: Path = RULES) -> dict[str, str]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}

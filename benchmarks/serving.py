"""The service under HTTP load, beside a course-style baseline and the in-process limit, in one run.

    .venv/bin/python benchmarks/serving.py [--duration 10] [--concurrency 1 4 16 64] [--out DIR]

Needs `wrk` (Debian package; `make benchmark` installs it, and LitServe). Runs, on this machine, in order:
1. the in-process limit: decode + infer one image at a time in a plain loop, no HTTP;
2. this service (`cats-dogs-other serve`) with auth off, then on (a real RS256 token, keys cached);
3. LitServe serving the same model file with its own batching (`benchmarks/litserve_server.py`), as
   it comes (one inference worker) and with a worker per core;
4. the course-style baseline (`benchmarks/baseline_server.py`);
each under wrk at every concurrency, with `/health` probed every 50 ms during the load. Then this service
at concurrency 256 with wrk's default 2 s timeout, where every answer must be a 200 or a fast 503, and a
separate client times its own 503s. The bodies are 16 dataset images as small JPEGs (quality 90, about
the 36 KB of a web photo), or the dataset's PNGs with `--body-format png`. Prints Markdown for
BENCHMARKS.md, writes the raw numbers as JSON and a latency-vs-throughput chart as PNG.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.classifier import ImageClassifier
from machine import describe

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parents[1] / "shared" / "datasets" / "cats-dogs-other" / "images"
BOUNDARY = "catsDogsOtherBenchBoundary"
AUDIENCE = "https://bench.cats-dogs-other.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def encoded(path: Path, body_format: str) -> bytes:
    """The image file as sent: the dataset's PNG, or the same picture as a quality-90 JPEG."""
    if body_format == "png":
        return path.read_bytes()
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def multipart_body(name: str, data: bytes, field: str = "file") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def write_bodies(images: list[Path], folder: Path, body_format: str = "jpeg") -> int:
    for i, path in enumerate(images):
        (folder / f"body_{i}.bin").write_bytes(multipart_body(path.name, encoded(path, body_format)))
    return len(images)


def in_process_limit(images: list[Path], seconds: float, body_format: str = "jpeg") -> float:
    """Images per second, decode + infer one at a time, as a plain loop would (the model on every core)."""
    classifier = ImageClassifier.load(threads_per_call=available_cores())
    blobs = [encoded(p, body_format) for p in images]
    classifier.predict(blobs[:1])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        classifier.predict([blobs[done % len(blobs)]])
        done += 1
    return done / (time.perf_counter() - start)


class JwksServer:
    """A static JWKS on loopback and a token signed by its key, for the auth-on runs."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = {**RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True), "kid": "bench", "alg": "RS256"}
        body = json.dumps({"keys": [jwk]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=3600")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, subject: str = "bench", key: rsa.RSAPrivateKey | None = None) -> str:
        """A valid access token for `subject`; signed by another `key` (same kid), a forged one."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": now + 3600,
            "scope": "get::prediction",
        }
        signer = key or self.key
        return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "bench", "typ": "at+jwt"})


def token_check_cost_us(provider: JwksServer, calls: int = 2000) -> float:
    """CPU cost of one token check with the keys cached: what auth adds to each request."""
    import asyncio

    from cats_dogs_other.auth import JwksCache, TokenValidator
    from cats_dogs_other.settings import Settings

    async def measure() -> float:
        async with httpx.AsyncClient() as client:
            settings = Settings()
            keys = JwksCache(
                provider.issuer,
                f"{provider.issuer}/jwks.json",
                client,
                default_ttl=settings.oauth2_jwks_cache_seconds,
                min_refresh_interval=settings.oauth2_jwks_min_refresh_seconds,
                fetch_deadline=settings.oauth2_fetch_timeout_seconds,
            )
            validator = TokenValidator(keys, provider.issuer, AUDIENCE, "get::prediction")
            token = provider.token()
            await validator.validate(token)
            start = time.perf_counter()
            for _ in range(calls):
                await validator.validate(token)
            return (time.perf_counter() - start) / calls * 1e6

    return asyncio.run(measure())


@contextmanager
def server(
    command: list[str], port: int, env: dict[str, str] | None = None, ready_path: str = "/ready"
) -> Iterator[subprocess.Popen[bytes]]:
    # A session of its own: stopping it stops its whole process group. LitServe's inference workers
    # (multiprocessing children) outlive a SIGTERM to their parent and keep polling, a third of a core
    # or more taken from every later row of the run.
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with httpx.Client(timeout=2) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get(f"http://127.0.0.1:{port}{ready_path}").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"server did not start: {command}")
                time.sleep(0.1)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever is left of it after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process and its children (workers), from /proc."""
    total = 0.0
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def probe_health(base_url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get("/health")
                out.append((time.perf_counter() - started) * 1000)
            except httpx.TransportError:
                out.append(float("inf"))
            stop.wait(0.05)


def probe_uploads(base_url: str, body: bytes, stop: threading.Event, out: list[tuple[int, float]]) -> None:
    """During overload: one more client, timing its own answers by status (wrk cannot split them)."""
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = client.post("/upload", content=body, headers=headers).status_code
            except httpx.TransportError:
                status = 0
            out.append((status, (time.perf_counter() - started) * 1000))
            stop.wait(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def run_wrk(
    base_url: str,
    bodies: Path,
    count: int,
    concurrency: int,
    seconds: float,
    token: str | None = None,
    timeout_s: int = 10,
) -> dict[str, Any]:
    health: list[float] = []
    uploads: list[tuple[int, float]] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe_health, args=(base_url, stop, health), daemon=True)
    uploader = threading.Thread(
        target=probe_uploads,
        daemon=True,
        args=(base_url, (bodies / "body_0.bin").read_bytes(), stop, uploads),
    )
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{int(seconds)}s",
        "--timeout",
        f"{timeout_s}s",
        "-s",
        str(HERE / "multipart.lua"),
        base_url,
        "--",
        str(bodies),
        str(count),
        "/upload",
    ]
    prober.start()
    if concurrency >= 256:
        uploader.start()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "BENCH_TOKEN": token or ""}, check=True
    )
    stop.set()
    prober.join()
    if uploader.is_alive() or uploads:
        uploader.join()
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["concurrency"] = concurrency
    result["health_p50_ms"] = percentile(health, 50)
    result["health_p99_ms"] = percentile(health, 99)
    result["health_max_ms"] = max(health) if health else float("nan")
    refused = [ms for status, ms in uploads if status == 503]
    result["probe_503"] = {
        "count": len(refused),
        "of": len(uploads),
        "p50_ms": percentile(refused, 50),
        "p99_ms": percentile(refused, 99),
    }
    ok = result["statuses"].get("200", 0)
    result["non_200"] = result["requests"] - ok
    return result


def measure_server(
    label: str,
    command: list[str],
    port: int,
    bodies: Path,
    count: int,
    levels: list[int],
    seconds: float,
    env: dict[str, str] | None = None,
    token: str | None = None,
    ready_path: str = "/ready",
    timeout_s: int = 10,
) -> dict[str, Any]:
    base_url = f"http://127.0.0.1:{port}"
    with server(command, port, env, ready_path) as process:
        runs = []
        for concurrency in levels:
            runs.append(run_wrk(base_url, bodies, count, concurrency, seconds, token, timeout_s))
            print(f"  {label} c={concurrency}: {runs[-1]['rps']:.1f} req/s", file=sys.stderr, flush=True)
        rss = peak_rss_mib(process.pid)
    return {"label": label, "runs": runs, "peak_rss_mib": rss}


def service_command(port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cats_dogs_other.cli",
        "--log-level",
        "warning",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| server | conc. | req/s | p50 ms | p95 ms | p99 ms | max ms | p99/p50 | errors | non-200 | "
        "/health p50 ms | /health p99 ms | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for run in result["runs"]:
            errors = sum(run["errors"][k] for k in ("connect", "read", "write", "timeout"))
            lines.append(
                f"| {result['label']} | {run['concurrency']} | {run['rps']:.1f} | "
                f"{run['p50_us'] / 1000:.1f} | "
                f"{run['p95_us'] / 1000:.1f} | {run['p99_us'] / 1000:.1f} | {run['max_us'] / 1000:.0f} | "
                f"{run['p99_us'] / max(run['p50_us'], 1):.2f} | "
                f"{errors} | {run['non_200']} | {run['health_p50_ms']:.1f} | {run['health_p99_ms']:.1f} | "
                f"{result['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines)


def chart(results: list[dict[str, Any]], limit: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for result in results:
        rps = [r["rps"] for r in result["runs"]]
        axis.plot(
            rps, [r["p50_us"] / 1000 for r in result["runs"]], marker="o", label=f"{result['label']} p50"
        )
        axis.plot(
            rps,
            [r["p99_us"] / 1000 for r in result["runs"]],
            marker="x",
            linestyle="--",
            label=f"{result['label']} p99",
        )
        for run in result["runs"]:
            axis.annotate(f"c{run['concurrency']}", (run["rps"], run["p50_us"] / 1000), fontsize=7)
    axis.axvline(limit, color="grey", linestyle=":", label=f"in-process limit {limit:.0f}/s")
    axis.set_xlabel("throughput (requests/s)")
    axis.set_ylabel("latency (ms, log)")
    axis.set_yscale("log")
    axis.set_title("POST /upload on 2 cores: latency against throughput")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--only-service", action="store_true", help="skip the baseline and auth-on runs")
    parser.add_argument("--serve-args", default="", help="extra `serve` flags, e.g. '--workers 2'")
    parser.add_argument("--body-format", choices=["jpeg", "png"], default="jpeg")
    parser.add_argument("--no-litserve", action="store_true", help="skip the LitServe row")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk (or make benchmark)")
    args.out.mkdir(parents=True, exist_ok=True)
    images = sorted(args.images.rglob("*.png"))[::9][:16]
    extra = args.serve_args.split()

    with tempfile.TemporaryDirectory() as folder:
        bodies = Path(folder)
        count = write_bodies(images, bodies, args.body_format)
        sizes = [len(path.read_bytes()) for path in bodies.glob("body_*.bin")]
        print(f"Machine: {describe()}", file=sys.stderr)
        limit = in_process_limit(sorted(args.images.rglob("*.png")), args.duration, args.body_format)
        print(f"  in-process limit: {limit:.1f} images/s", file=sys.stderr)
        results = []
        port = free_port()
        results.append(
            measure_server(
                "service, auth off",
                service_command(port, "--no-auth", *extra),
                port,
                bodies,
                count,
                args.concurrency,
                args.duration,
            )
        )
        check_us = None
        if not args.only_service:
            provider = JwksServer()
            check_us = token_check_cost_us(provider)
            port = free_port()
            env = {
                "OAUTH2_ISSUER": provider.issuer,
                "OAUTH2_AUDIENCE": AUDIENCE,
                "OAUTH2_JWKS_URI": f"{provider.issuer}/jwks.json",
            }
            results.append(
                measure_server(
                    "service, auth on",
                    service_command(port, *extra),
                    port,
                    bodies,
                    count,
                    args.concurrency,
                    args.duration,
                    env,
                    provider.token(),
                )
            )
            # LitServe as it comes (one inference worker, the model on every core), and tuned for this
            # machine (a worker per core: two processes, so two GILs).
            for label, workers in (
                [] if args.no_litserve else [("LitServe", "1"), ("LitServe, 2 workers", "2")]
            ):
                port = free_port()
                results.append(
                    measure_server(
                        label,
                        [sys.executable, str(HERE / "litserve_server.py"), str(port), "--workers", workers],
                        port,
                        bodies,
                        count,
                        args.concurrency,
                        args.duration,
                        ready_path="/health",
                    )
                )
            port = free_port()
            results.append(
                measure_server(
                    "course baseline",
                    [sys.executable, str(HERE / "baseline_server.py"), str(port)],
                    port,
                    bodies,
                    count,
                    args.concurrency,
                    args.duration,
                )
            )
        port = free_port()
        overload = measure_server(
            "service, overload",
            service_command(port, "--no-auth", *extra),
            port,
            bodies,
            count,
            [256],
            args.duration,
            timeout_s=2,  # wrk's default: a client that gives up after 2 s
        )

    print(f"Machine: {describe()}\n")
    print(
        f"Bodies: 16 dataset images as {args.body_format.upper()}, "
        f"{statistics.median(sizes) / 1000:.0f} KB median multipart body\n"
    )
    print(f"In-process limit (decode + infer, one image at a time, no HTTP): **{limit:.1f} images/s**\n")
    print(table([*results, overload]))
    by_label = {r["label"]: {run["concurrency"]: run for run in r["runs"]} for r in results}
    if 16 in args.concurrency:
        service = by_label["service, auth off"][16]
        print("\nAt concurrency 16:")
        print(f"- service / in-process limit: {service['rps'] / limit:.2f}x")
        print(f"- service p99 / p50: {service['p99_us'] / service['p50_us']:.2f}")
        if not args.only_service:
            baseline = by_label["course baseline"][16]
            auth_on = by_label["service, auth on"][16]
            print(f"- service / course baseline: {service['rps'] / baseline['rps']:.2f}x")
            for label in ("LitServe", "LitServe, 2 workers"):
                if label in by_label:
                    print(f"- service / {label}: {service['rps'] / by_label[label][16]['rps']:.2f}x")
            print(
                f"- auth on / auth off: {auth_on['rps'] / service['rps']:.3f}x "
                f"(cost {100 * (1 - auth_on['rps'] / service['rps']):.1f}%; run-to-run noise here is ~10%)"
            )
            if check_us is not None:
                print(
                    f"- one token check (keys cached) costs {check_us:.0f} us of CPU: "
                    f"{100 * check_us / (1e6 / service['rps']):.1f}% of a request's time at this throughput"
                )
    run = overload["runs"][0]
    other_errors = sum(run["errors"][k] for k in ("connect", "read", "write"))
    fast_503 = statistics.fmean([run["p99_us"] / 1000])
    probe = run["probe_503"]
    print(
        f"\nAt concurrency 256 (wrk timeout 2 s): statuses {run['statuses']}, timeouts "
        f"{run['errors']['timeout']}, other errors {other_errors}, "
        f"p99 of all answers {fast_503:.0f} ms, slowest {run['max_us'] / 1000:.0f} ms, "
        f"/health p99 {run['health_p99_ms']:.1f} ms; a probing client "
        f"got {probe['count']} 503s out of {probe['of']} uploads, answered in "
        f"{probe['p50_ms']:.1f} ms (p50) / "
        f"{probe['p99_ms']:.1f} ms (p99)"
    )
    (args.out / "serving.json").write_text(
        json.dumps({"limit": limit, "results": [*results, overload]}, indent=1)
    )
    chart(results, limit, args.out / "serving.png")


if __name__ == "__main__":
    main()

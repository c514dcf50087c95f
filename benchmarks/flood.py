"""Token holders during a flood: one `serve`, a legitimate client at 4 requests/s beside wrk's flood.

    .venv/bin/python benchmarks/flood.py [--seconds 30] [--src DIR] [--only NAME ...]

Needs `wrk` (`make benchmark` installs it). With auth on (a static JWKS on loopback, RS256 tokens) the
flood is, in turn: 256 connections without any token (against /upload, then /predict); 256 connections
with a badly signed token (right `kid`, another key); 256 connections with a valid token of one subject.
Meanwhile another subject's client sends one small JPEG every 250 ms (open loop: the next is due 250 ms
after the last was due, or at once if late) and times its answers. With auth off, wrk alone at 16 and
then 256 connections that ask again as soon as they are answered (wrk ignores `Retry-After`), with wrk's
default 2 s timeout: the answers per second at 256 against those at 16. `--src` runs another checkout's
`src/` (a `git worktree` of an older commit) with this venv, for before/after rows in one session.
Prints Markdown for BENCHMARKS.md and writes benchmarks/results/flood.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import describe  # noqa: E402
from serving import (  # noqa: E402
    AUDIENCE,
    BOUNDARY,
    DEFAULT_IMAGES,
    JwksServer,
    free_port,
    multipart_body,
    percentile,
    server,
    service_command,
    write_bodies,
)

FLOOD_CONNECTIONS = 256
LEGIT_INTERVAL_SECONDS = 0.25


def legitimate_client(
    base_url: str,
    path: str,
    body: bytes,
    token: str | None,
    stop: threading.Event,
    out: list[Any],
    failures: list[dict[str, Any]],
) -> None:
    """One client with a valid token, a request due every 250 ms; each answer's status and time."""
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=base_url, timeout=10) as client:
        due = first = time.monotonic()
        while not stop.is_set():
            started = time.perf_counter()
            try:
                response = client.post(path, content=body, headers=headers)
                status, detail = response.status_code, response.text[:300]
            except httpx.TransportError as exc:
                status, detail = 0, repr(exc)
            out.append((status, (time.perf_counter() - started) * 1000))
            if status != 200:
                failures.append(
                    {"at_s": round(time.monotonic() - first, 2), "status": status, "detail": detail}
                )
            due += LEGIT_INTERVAL_SECONDS
            stop.wait(max(0.0, due - time.monotonic()))


def wrk(
    base_url: str,
    bodies: Path,
    count: int,
    connections: int,
    seconds: float,
    path: str,
    token: str,
    timeout_s: int,
) -> dict[str, Any]:
    command = [
        *["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", f"{timeout_s}s"],
        *["-s", str(HERE / "multipart.lua"), base_url, "--", str(bodies), str(count), path],
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "BENCH_TOKEN": token}, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = result["duration_us"] / 1e6
    result["answers_per_s"] = result["statuses"].get("200", 0) / result["seconds"]
    return result


def flood_with_client(
    base_url: str, bodies: Path, count: int, seconds: float, path: str, flood_token: str, token: str
) -> dict[str, Any]:
    field = "files" if path == "/predict" else "file"
    legit_body = multipart_body("legit.jpg", (bodies / "image_0.jpg").read_bytes(), field)
    answers: list[tuple[int, float]] = []
    failures: list[dict[str, Any]] = []
    stop = threading.Event()
    client = threading.Thread(
        target=legitimate_client, args=(base_url, path, legit_body, token, stop, answers, failures)
    )
    client.start()
    flood = wrk(base_url, bodies, count, FLOOD_CONNECTIONS, seconds, path, flood_token, timeout_s=10)
    stop.set()
    client.join()
    ok = [ms for status, ms in answers if status == 200]
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "flood": flood,
        "client": {
            "sent": len(answers),
            "success": len(ok) / len(answers) if answers else float("nan"),
            "statuses": statuses,
            "p50_ms": percentile([ms for _, ms in answers], 50),
            "p99_ms": percentile([ms for _, ms in answers], 99),
            "failures": failures,
        },
    }


def start(src: Path | None, port: int, env: dict[str, str], *extra: str) -> Any:
    if src is not None:
        env = {**env, "PYTHONPATH": str(src)}
    return server(service_command(port, *extra), port, env)


def metrics_of(base_url: str, prefixes: tuple[str, ...]) -> dict[str, float]:
    lines = httpx.get(f"{base_url}/metrics").text.splitlines()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in lines)
        if name.startswith(prefixes)
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per flood")
    parser.add_argument("--src", type=Path, default=None, help="a checkout's src/ folder to run instead")
    parser.add_argument("--only", nargs="*", default=None, help="scenarios whose name contains one of these")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "flood.json")
    args = parser.parse_args()
    images = sorted(DEFAULT_IMAGES.rglob("*.png"))[::9][:16]
    provider = JwksServer()
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    floods = [
        ("no token, /upload", "/upload", ""),
        ("no token, /predict", "/predict", ""),
        ("badly signed token, /upload", "/upload", provider.token("flooder", key=forger)),
        ("one subject's valid token, /upload", "/upload", provider.token("flooder")),
    ]
    wanted = [f for f in floods if args.only is None or any(o in f[0] for o in args.only)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        bodies = Path(folder)
        count = write_bodies(images, bodies)
        from serving import encoded

        (bodies / "image_0.jpg").write_bytes(encoded(images[0], "jpeg"))
        if wanted:
            port = free_port()
            env = {
                "OAUTH2_ISSUER": provider.issuer,
                "OAUTH2_AUDIENCE": AUDIENCE,
                "OAUTH2_JWKS_URI": f"{provider.issuer}/jwks.json",
            }
            with start(args.src, port, env):
                base_url = f"http://127.0.0.1:{port}"
                for name, path, flood_token in wanted:
                    # The last flood's connections are left unread for up to a second (pacing) and
                    # closed lingering for two: let them go before the next flood, or its connections
                    # meet MAX_CONNECTIONS.
                    time.sleep(3)
                    before = metrics_of(base_url, ("cdo_http_requests_total", "cdo_refusals_total"))
                    row = flood_with_client(
                        base_url, bodies, count, args.seconds, path, flood_token, provider.token("legit")
                    )
                    after = metrics_of(base_url, ("cdo_http_requests_total", "cdo_refusals_total"))
                    row["metrics"] = {
                        k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)
                    }
                    row["name"] = name
                    rows.append(row)
                    client = row["client"]
                    print(
                        f"  {name}: {client['success']:.1%}, p99 {client['p99_ms']:.0f} ms", file=sys.stderr
                    )
        storm: dict[int, dict[str, Any]] = {}
        if args.only is None or any("retry" in o for o in args.only):
            port = free_port()
            with start(args.src, port, {}, "--no-auth"):
                base_url = f"http://127.0.0.1:{port}"
                for connections in (16, FLOOD_CONNECTIONS):
                    storm[connections] = wrk(
                        base_url, bodies, count, connections, args.seconds, "/upload", "", timeout_s=2
                    )
                    print(
                        f"  auth off, {connections}: {storm[connections]['answers_per_s']:.0f}/s",
                        file=sys.stderr,
                    )

    print(f"Machine: {describe()}\n")
    print(f"Command: `{' '.join(sys.argv)}`\n")
    if rows:
        print(
            "| flood (256 connections) | legitimate client: success | p50 ms | p99 ms | its statuses | "
            "flood's statuses |"
        )
        print("|---|---:|---:|---:|---|---|")
        for row in rows:
            client, flood = row["client"], row["flood"]
            print(
                f"| {row['name']} | {client['success']:.1%} of {client['sent']} | {client['p50_ms']:.0f} | "
                f"{client['p99_ms']:.0f} | {_counts(client['statuses'])} | {_counts(flood['statuses'])} |"
            )
    if storm:
        few, many = storm[16], storm[FLOOD_CONNECTIONS]
        print("\n| auth off, clients retrying at once | answers/s | statuses | timeouts | p99 ms |")
        print("|---|---:|---|---:|---:|")
        for connections, run in storm.items():
            print(
                f"| {connections} | {run['answers_per_s']:.0f} | {_counts(run['statuses'])} | "
                f"{run['errors']['timeout']} | {run['p99_us'] / 1000:.0f} |"
            )
        print(f"\n256 / 16: **{many['answers_per_s'] / few['answers_per_s']:.2f}x** answers per second")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"floods": rows, "storm": storm}, indent=1))


def _counts(statuses: dict[str, int]) -> str:
    return ", ".join(f"{n:,} x {s}" for s, n in sorted(statuses.items()))


if __name__ == "__main__":
    main()

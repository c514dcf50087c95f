"""Where a request's time goes at saturation: py-spy on a live `serve` under wrk, stacks sorted by stage.

    .venv/bin/python benchmarks/profile.py [--seconds 10] [--concurrency 16] [--serve-args "..."] [--src DIR]

Samples every thread of the server 250 times a second (py-spy, non-blocking) while wrk keeps it busy
with the small JPEGs of benchmarks/serving.py, and reads the process's CPU time from /proc over the same
window. Each sample is put in the first stage whose function it is inside, from the innermost frame out
(`STAGES`); a stage's share of the busy samples times the CPU time per answer is its CPU-ms per answer.
Samples whose innermost frame waits (a lock, a queue, or the event loop's own C code, which is where
it waits for the network: py-spy cannot tell waiting from I/O there) are set apart, not counted as
busy; a thread inside a C call that gives up the GIL (ONNX Runtime, Pillow's decoders) is counted.
Writes the raw stacks to benchmarks/results/profile.txt (py-spy's collapsed format, for a flame graph).
CPU-ms are per answer (a 200): at 256 clients most requests are refusals, whose cost is what the
answers pay for. `--src` profiles another checkout's `src/` (a `git worktree`) with this venv.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cost import cpu_seconds  # noqa: E402
from machine import describe  # noqa: E402
from serving import DEFAULT_IMAGES, free_port, server, service_command, write_bodies  # noqa: E402

# (stage, function names that put a sample in it), matched from the innermost frame outwards.
STAGES = [
    ("model (ONNX Runtime)", ("InferenceSession.run", "Session.run")),
    ("decode (Pillow)", ("decode_image", "_decode", "reduced_rgb", "_open")),
    ("resize to the model's input (Pillow)", ("to_input_array",)),
    ("multipart parsing", ("read_form", "_get_form", "MultiPartParser.parse")),
    ("token check", ("TokenValidator.validate",)),
    ("answer encoding (pydantic, JSON)", ("serialize_response", "jsonable_encoder", "JSONResponse.render")),
    (
        "FastAPI dependencies and routing",
        ("solve_dependencies", "APIRoute.matches", "_IncludedRouter._match"),
    ),
    ("metrics", ("observe_prediction", "observe_image", "observe_batch", "MetricWrapperBase.labels")),
    ("access log", ("Logger._log", "Logger.info")),
    ("micro-batcher", ("MicroBatcher._work", "MicroBatcher._run_batch", "MicroBatcher.submit_timed")),
    ("thread hand-offs (anyio)", ("run_sync_in_worker_thread", "WorkerThread.run", "Queue.put")),
    (
        "refusing in the protocol (admission, token, answer)",
        ("LoadShedder.admit", "_answered_before_the_app", "_problem_bytes", "LimitedHttpProtocol._answer"),
    ),
    ("HTTP protocol (Uvicorn, httptools)", ("data_received", "connection_made", "RequestResponseCycle.send")),
    (
        "middleware (request ids, limits)",
        ("RequestContextMiddleware.__call__", "BodyLimitMiddleware.__call__"),
    ),
    ("event loop", ("Runner.run", "run_forever", "_run_once")),
]


# Innermost frames that mean the thread is waiting, not working.
WAITING = frozenset({"Condition.wait", "Event.wait", "Queue.get", "Runner.run", "run_forever", "select"})


def stage_of(frames: list[str]) -> str | None:
    if frames[-1].split(" (")[0] in WAITING:
        return None
    for frame in reversed(frames):
        name = frame.split(" (")[0]
        for stage, functions in STAGES:
            if name in functions:
                return stage
    return "other Python"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve-args", default="")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "profile.txt")
    parser.add_argument("--src", type=Path, default=None, help="a checkout's src/ folder to run instead")
    parser.add_argument("--wrk-timeout", type=int, default=10, help="wrk's --timeout in seconds")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if shutil.which("wrk") is None or not Path(py_spy).exists():
        sys.exit("needs wrk and py-spy: make benchmark installs both")
    images = sorted(DEFAULT_IMAGES.rglob("*.png"))[::9][:16]
    port = free_port()
    with (
        tempfile.TemporaryDirectory() as folder,
        server(
            service_command(port, "--no-auth", *args.serve_args.split()),
            port,
            {"PYTHONPATH": str(args.src)} if args.src else None,
        ) as process,
    ):
        count = write_bodies(images, Path(folder))
        base = f"http://127.0.0.1:{port}"
        wrk = subprocess.Popen(
            [
                *["wrk", "-t1", f"-c{args.concurrency}", f"-d{int(args.seconds) + 4}s"],
                *["--timeout", f"{args.wrk_timeout}s"],
                *["-s", str(HERE / "multipart.lua"), base, "--", folder, str(count), "/upload"],
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        before, started = cpu_seconds(process.pid), time.monotonic()
        raw = Path(folder) / "profile.txt"
        subprocess.run(
            [
                *[py_spy, "record", "-p", str(process.pid), "-d", str(int(args.seconds)), "-r", "250"],
                *["--nonblocking", "-f", "raw", "-o", str(raw)],
            ],
            capture_output=True,
            check=True,
        )
        used, wall = cpu_seconds(process.pid) - before, time.monotonic() - started
        output, _ = wrk.communicate()
        stacks = raw.read_text()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(stacks)
    import json

    result = json.loads(output.strip().splitlines()[-1])
    rps = result["statuses"].get("200", 0) / (result["duration_us"] / 1e6)
    asked = result["requests"] / (result["duration_us"] / 1e6)
    samples: collections.Counter[str] = collections.Counter()
    waiting = 0
    for line in stacks.splitlines():
        stack, _, n = line.rpartition(" ")
        stage = stage_of(stack.split(";"))
        if stage is None:
            waiting += int(n)
        else:
            samples[stage] += int(n)
    busy = sum(samples.values())
    cpu_ms = 1000 * used / (rps * wall)
    print(f"Machine: {describe()}\n")
    print(
        f"{args.concurrency} clients, small JPEGs: {rps:.0f} answers/s ({asked:.0f} requests/s, "
        f"{result['errors']['timeout']} timeouts), the server busy {used / wall:.2f} "
        f"cores, **{cpu_ms:.2f} CPU-ms per answer**; {busy} busy samples ({waiting} waiting, not counted).\n"
    )
    print("| stage | share of busy samples | CPU-ms per answer |")
    print("|---|---:|---:|")
    for stage, n in samples.most_common():
        print(f"| {stage} | {100 * n / busy:.1f}% | {cpu_ms * n / busy:.2f} |")


if __name__ == "__main__":
    main()

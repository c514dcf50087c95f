"""LitServe serving the same model file, for comparison: its own batching, its own worker process.

    python benchmarks/litserve_server.py PORT [--max-batch-size 4] [--batch-timeout-ms 2] [--workers 1]

The course's contract on LitServe (`POST /upload`, multipart part `file`, the course's answer): the same
ONNX model and the same decoding code as the service (`ImageClassifier.decode`, `run`); LitServe's
design does the rest: the event loop parses the request and puts it on a queue, an inference worker
process (`workers_per_device` of them on the CPU) decodes each request of a batch and runs the model once
per batch of up to `max_batch_size`, waiting at most `batch_timeout` for it to fill, and sends the
answers back. Each worker's ONNX Runtime calls use cores / workers threads: one worker calls the model
on every core (LitServe's default), two workers call it side by side on one thread each.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation (a real
# `fastapi.Request`) to know it must parse a form.
import argparse

import litserve as ls
import numpy as np
from fastapi import Request

from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.classifier import ImageClassifier


class CatsDogsOtherAPI(ls.LitAPI):  # type: ignore[misc]
    def __init__(self, threads_per_call: int, **options: object) -> None:
        super().__init__(**options)
        self.threads_per_call = threads_per_call

    def setup(self, device: str) -> None:
        threads = self.threads_per_call
        self.classifier = ImageClassifier.load(threads=threads, threads_per_call=threads)
        self.classifier.warm_up(self.max_batch_size)

    def decode_request(self, request: Request) -> np.ndarray:
        data = request["file"].file.read()  # LitServe passes the parsed form, not the Request
        decoded: np.ndarray = self.classifier.decode(data)
        return decoded

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        scores: np.ndarray = self.classifier.run(batch)
        return scores

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, object]:
        return self.classifier.to_prediction(output).as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("port", type=int)
    parser.add_argument("--max-batch-size", type=int, default=4)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=1, help="LitServe's workers_per_device")
    args = parser.parse_args()
    api = CatsDogsOtherAPI(
        threads_per_call=max(1, available_cores() // args.workers),
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
        api_path="/upload",
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()

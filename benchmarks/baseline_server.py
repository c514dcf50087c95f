"""The course-style server, for comparison: FastAPI, an `async def` route calling the model directly.

    python benchmarks/baseline_server.py PORT

Same model and same decoding code as the service; the difference is the design: inference runs on the
event loop, one request at a time, blocking everything else (health checks included).
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, File, UploadFile

from cats_dogs_other.cpu import available_cores
from cats_dogs_other.inference.classifier import ImageClassifier

app = FastAPI()
# As the course does it: one model call at a time, ONNX Runtime's threads on every core.
classifier = ImageClassifier.load(threads_per_call=available_cores())


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "OK"}


@app.get("/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/upload")
async def upload(file: UploadFile = File(...)) -> dict[str, object]:  # noqa: B008 (the course's style)
    (prediction,) = classifier.predict([await file.read()])
    return prediction.as_dict()


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

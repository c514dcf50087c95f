"""The `cats-dogs-other` command: train, predict, serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.training.train import TrainConfig, train

    config = TrainConfig(
        data_dir=args.data,
        out_dir=args.out,
        folds=args.folds,
        weight_decay=args.weight_decay,
        seed=args.seed,
        quantize=args.quantize,
        command=shlex.join(["cats-dogs-other", *argv]),
    )
    result = train(config)
    card = result.card
    validation = card.metrics["validation"]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        from cats_dogs_other.training.tracking import log_to_mlflow

        uri = log_to_mlflow(result, config, register_as=args.register)
        print(f"logged to MLflow: {uri}")
    elif args.register:
        print("error: --register needs MLFLOW_TRACKING_URI", file=sys.stderr)
        return 2
    print(f"validation accuracy {validation['accuracy']:.4f} ({validation['scheme']})")
    print(f"wrote {args.out / 'model.onnx'} and {args.out / 'model.json'}")
    return 0


def _predict(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.inference.classifier import ImageClassifier
    from cats_dogs_other.inference.decode import InvalidImageError

    classifier = ImageClassifier.load(args.model, max_pixels=args.max_pixels)
    failed = False
    for name in args.files:
        try:
            data = Path(name).read_bytes()
            (result,) = classifier.predict([data])
            line = {"file": name, **result.as_dict()}
        except (InvalidImageError, OSError) as exc:
            failed = True
            line = {
                "file": name,
                "error": exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc),
            }
        if args.json:
            print(json.dumps(line), flush=True)
        elif "error" in line:
            print(f"{name}: error: {line['error']}", flush=True)
        else:
            values = ", ".join(
                f"{lb} {v:.3f}" for lb, v in zip(classifier.labels, line["values"], strict=True)
            )
            print(f"{name}: {line['prediction']} ({values})", flush=True)
    return 1 if failed else 0


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import uvicorn
    from pydantic import ValidationError

    from cats_dogs_other.api.app import create_app, load_classifier
    from cats_dogs_other.api.server import DrainingServer, LimitedHttpProtocol, ProtocolLimits
    from cats_dogs_other.logs import configure_logging
    from cats_dogs_other.memory import configure_malloc
    from cats_dogs_other.settings import Settings

    overrides = {
        "host": args.host,
        "port": args.port,
        "model_uri": args.model,
        "max_upload_bytes": args.max_upload_bytes,
        "max_pixels": args.max_pixels,
        "cors_origins": args.cors_origins,
        "auth_disabled": True if args.no_auth else None,
        "workers": args.workers,
        "batch_max_size": args.batch_max_size,
        "batch_max_wait_ms": args.batch_max_wait_ms,
        "queue_max": args.queue_max,
        "log_level": args.log_level.lower() if args.log_level_given else None,
    }
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    configure_malloc()  # before any thread exists: flat memory, peaks given back (memory.py)
    problem = settings.auth_configuration_error()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    # Load before listening: a bad model stops here (main() prints why), not on the first request.
    classifier, source = load_classifier(settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # our JSON logging, configured above
        "access_log": False,  # RequestContextMiddleware writes access lines with request ids
        "server_header": False,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        "http": "cats_dogs_other.api.server:LimitedHttpProtocol",
    }
    LimitedHttpProtocol.limits = ProtocolLimits.from_settings(settings)
    if settings.workers == 1:
        app = create_app(settings, classifier, source)
        DrainingServer(
            uvicorn.Config(app, **options), app.state.runtime, settings.shutdown_drain_seconds
        ).run()
        return 0
    # Several processes: each worker imports the factory and reads its settings from the environment,
    # so the flags given here are handed down as environment variables. Uvicorn's supervisor has no
    # drain phase: SIGTERM goes straight to the graceful shutdown of every worker.
    del classifier
    os.environ.update(
        {
            name.upper(): _env_value(value)
            for name, value in settings.model_dump().items()
            if value is not None
        }
    )
    uvicorn.run(
        "cats_dogs_other.api.app:create_app_from_env", factory=True, workers=settings.workers, **options
    )
    return 0


def _env_value(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _convert(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.models.convert import convert_keras

    card = convert_keras(args.model, args.out)
    kind = "probabilities" if card.outputs_are_probabilities else "scores (not probabilities)"
    print(f"wrote {args.out / 'model.onnx'} and {args.out / 'model.json'}; outputs are {kind}")
    return 0


def _fetch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.models.convert import fetch_model

    path = fetch_model(args.uri, args.out)
    print(f"wrote {path} and {path.with_name('model.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cats_dogs_other.inference.decode import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(prog="cats-dogs-other", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a folder of labelled images")
    train.add_argument(
        "--data", type=Path, required=True, help="folder with cat/, dog/ and other/ sub-folders"
    )
    train.add_argument("--out", type=Path, required=True, help="where to write model.onnx and model.json")
    train.add_argument(
        "--folds", type=int, default=5, help="validation folds, split by source PDF (default 5)"
    )
    train.add_argument(
        "--weight-decay", type=float, default=1e-3, help="L2 penalty of the head (default 1e-3)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quantize", action="store_true", help="ship a static int8 backbone (faster on CPU)")
    train.add_argument(
        "--register",
        metavar="NAME",
        default=None,
        help="with MLFLOW_TRACKING_URI set: register the model under this name",
    )
    train.set_defaults(handler=_train)

    predict = commands.add_parser("predict", help="classify image files")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument(
        "--model", default=None, help="model path or URI, as for serve (default: the built-in one)"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default 47000000)"
    )
    predict.set_defaults(handler=_predict)

    convert = commands.add_parser("convert", help="convert a Keras model (.keras, .h5) to ONNX + model card")
    convert.add_argument("model", type=Path, metavar="MODEL")
    convert.add_argument("--out", type=Path, required=True, help="where to write model.onnx and model.json")
    convert.set_defaults(handler=_convert)

    fetch = commands.add_parser("fetch", help="resolve a model URI into a folder as ONNX + card (for images)")
    fetch.add_argument(
        "uri", metavar="URI", help="a path, models:/NAME/VERSION, models:/NAME@ALIAS or runs:/..."
    )
    fetch.add_argument("--out", type=Path, required=True, help="where to write model.onnx and model.json")
    fetch.set_defaults(handler=_fetch)

    serve = commands.add_parser("serve", help="start the HTTP service (settings also from the environment)")
    serve.add_argument("--host", default=None, help="interface to listen on (HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (PORT, default 8080)")
    serve.add_argument(
        "--model", default=None, help="model path or URI (MODEL_URI; default: the built-in one)"
    )
    serve.add_argument("--no-auth", action="store_true", help="serve without tokens (AUTH_DISABLED=true)")
    serve.add_argument("--max-upload-bytes", type=int, default=None, help="MAX_UPLOAD_BYTES (default 10 MiB)")
    serve.add_argument(
        "--max-pixels", type=int, default=None, help="MAX_PIXELS (default: from DECODE_MEMORY_BYTES)"
    )
    serve.add_argument(
        "--cors-origins", default=None, help="CORS_ORIGINS, comma-separated (default: CORS off)"
    )
    serve.add_argument("--workers", type=int, default=None, help="server processes (WORKERS, default 1)")
    serve.add_argument("--batch-max-size", type=int, default=None, help="BATCH_MAX_SIZE (default 4)")
    serve.add_argument("--batch-max-wait-ms", type=float, default=None, help="BATCH_MAX_WAIT_MS (default 2)")
    serve.add_argument(
        "--queue-max", type=int, default=None, help="QUEUE_MAX requests in progress (default 128)"
    )
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.log_level_given = any(a == "--log-level" or a.startswith("--log-level=") for a in argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("onnxscript", "onnx_ir", "torch"):  # the ONNX exporter narrates every pass at INFO
        logging.getLogger(chatty).setLevel(logging.ERROR)
    from cats_dogs_other.models.errors import ModelLoadError

    try:
        code: int = args.handler(args, argv)
    except ModelLoadError as exc:  # every command: a model that cannot be used stops with what to fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

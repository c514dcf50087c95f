"""The `cats-dogs-other` command: train, predict, serve."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `serve` and `predict` need different stacks
    from cats_dogs_other.inference.files import FileOutcome, Outcome
    from cats_dogs_other.inference.service import InferenceService
    from cats_dogs_other.training.comparison import Comparison


def _train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.training.train import AUGMENTATIONS, TrainConfig, train

    _data_arguments(args, "train")
    unknown = sorted(set(args.augment or ()) - set(AUGMENTATIONS))
    if unknown:
        raise UsageError(f"no augmentation {', '.join(unknown)} (there are {', '.join(AUGMENTATIONS)})")
    config = TrainConfig(
        data_dirs=tuple(args.data or ()),
        pdfs_dir=args.pdfs,
        annotations=args.annotations,
        out_dir=args.out,
        folds=args.folds,
        weight_decay=args.weight_decay,
        seed=args.seed,
        quantize=args.quantize,
        hold_out=args.hold_out,
        **({} if args.augment is None else {"augmentation": tuple(args.augment)}),
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
    held_out = card.metrics.get("held_out")
    if held_out:
        print(
            f"held-out accuracy {held_out['accuracy']:.4f}, grayscale {held_out['grayscale_accuracy']:.4f} "
            f"({held_out['images']} images of {len(card.training['evaluation_split']['groups'])} documents "
            "never trained on: what evaluate and promote judge on)"
        )
    print(f"wrote {args.out / 'model.onnx'} and {args.out / 'model.json'}")
    return 0


class UsageError(Exception):
    """A command given what it cannot work with: main() prints it and exits 2, as argparse does."""


def _data_arguments(args: argparse.Namespace, command: str) -> None:
    if (args.pdfs is None) != (args.annotations is None) or (args.data is None) == (args.pdfs is None):
        raise UsageError(f"{command} needs --data DIR, or --pdfs DIR with --annotations FILE")


def _comparison(args: argparse.Namespace, command: str) -> Callable[[dict[str, str | None]], Comparison]:
    """What `evaluate` and `promote` judge models on, from their shared arguments."""
    from cats_dogs_other.settings import ModelSettings, ObservabilitySettings
    from cats_dogs_other.training.comparison import LabelledData, compare
    from cats_dogs_other.training.evaluation import VARIANTS
    from cats_dogs_other.training.split import EvaluationSplit

    _data_arguments(args, command)
    data = LabelledData(tuple(args.data or ()), args.pdfs, args.annotations)
    split = None if getattr(args, "all_images", False) else EvaluationSplit(args.hold_out)
    unsure_below = (
        args.unsure_below if args.unsure_below is not None else ObservabilitySettings().unsure_below
    )

    def judged(models: dict[str, str | None]) -> Comparison:
        comparison = compare(
            models,
            data,
            split=split,
            variants=args.variants or list(VARIANTS),
            unsure_below=unsure_below,
            out=args.out,
            settings=ModelSettings(),
        )
        for role in models:
            accuracy = comparison.accuracy(role)
            worst = min(accuracy, key=accuracy.__getitem__)
            shown = ", ".join(f"{name} {value}" for name, value in accuracy.items())
            print(f"{role}: {shown} (worst: {worst})")
        json_path, md_path = comparison.files
        print(f"{comparison.report['images']} images; wrote {json_path} and {md_path}")
        return comparison

    return judged


def _evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.settings import ModelSettings
    from cats_dogs_other.training.evaluation import log_to_run

    models = {"candidate": args.model, **({"champion": args.against} if args.against else {})}
    comparison = _comparison(args, "evaluate")(models)
    registry = ModelSettings().mlflow_registry()
    run_id = comparison.sources["candidate"].details.get("run_id")
    if run_id and registry.tracking_uri:
        log_to_run(run_id, comparison.report, comparison.files, registry)
        print(f"logged to MLflow run {run_id} (metrics evaluation_*, artifacts evaluation/)")
    return 0


def _promote(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.settings import ModelSettings
    from cats_dogs_other.training.promotion import promote

    if args.force and not (args.reason or "").strip():
        raise UsageError("--force needs --reason: the version records why the gate was overridden")
    registry = ModelSettings().mlflow_registry()
    if not registry.tracking_uri:
        raise UsageError("promote needs MLFLOW_TRACKING_URI: the registry whose alias it moves")
    unevaluated = args.data is None and args.pdfs is None and args.force
    promotion = promote(
        registry,
        args.name,
        args.version,
        args.alias,
        tolerance_points=args.tolerance,
        compare=None if unevaluated else _comparison(args, "promote"),
        forced_reason=args.reason if args.force else None,
    )
    target = f"models:/{args.name}@{args.alias}"
    if promotion is None:
        print(f"{target} is already version {args.version}")
        return 0
    for refusal in promotion.decision.refusals:
        print(f"gate: {refusal}")
    was = f"version {promotion.previous_version}" if promotion.previous_version else "no version"
    if promotion.moved:
        how = "passed the gate" if promotion.decision.passed else "forced past the gate"
        print(f"{target} -> version {args.version} ({how}; it was {was})")
        return 0
    print(f"refused: {target} stays at {was}", file=sys.stderr)
    return 1


def _predict(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import asyncio

    from cats_dogs_other.inference.classifier import ImageClassifier
    from cats_dogs_other.inference.service import InferenceService
    from cats_dogs_other.settings import Settings

    settings = Settings(max_pixels=args.max_pixels)
    classifier = ImageClassifier.load(
        args.model,
        max_pixels=args.max_pixels,
        registry=settings.mlflow_registry(),
        runtime=settings.inference_runtime,
    )
    engine = InferenceService.configured(classifier, settings)
    return asyncio.run(_predict_files(engine, args.files, as_json=args.json))


async def _predict_files(engine: InferenceService, names: list[str], *, as_json: bool) -> int:
    """Each file through the engine's one path (`classify_files`), as the API's `/predict` does: one
    file at a time, each its own request's budget, its lines printed as soon as it is answered."""
    from cats_dogs_other.inference.files import SentFile

    labels = engine.classifier.labels
    failed = False
    engine.start()
    try:
        for name in names:
            try:
                data = Path(name).read_bytes()
            except OSError as exc:
                lines: list[dict[str, Any]] = [{"file": name, "error": exc.strerror or str(exc)}]
            else:
                (outcome,) = await engine.classify_files([SentFile(name, data)], engine.request_budget())
                lines = _predict_lines(name, outcome)
            for line in lines:
                failed = failed or "error" in line
                print(json.dumps(line) if as_json else _predict_text(name, line, labels), flush=True)
    finally:
        await engine.stop()
    return 1 if failed else 0


def _predict_lines(name: str, outcome: FileOutcome) -> list[dict[str, Any]]:
    """One line for an image, one per embedded image for a PDF (`page`, `index`, `duplicate_of`)."""
    from cats_dogs_other.inference.decode import InvalidImageError
    from cats_dogs_other.inference.files import DocumentOutcome, RefusedFile

    def result(image: Outcome) -> dict[str, Any]:
        return {"error": str(image)} if isinstance(image, InvalidImageError) else image.as_dict()

    if isinstance(outcome, RefusedFile):
        return [{"file": name, "error": str(outcome.error)}]
    if not isinstance(outcome, DocumentOutcome):
        return [{"file": name, **result(outcome.outcome)}]
    lines = []
    for image in outcome.images:
        line = {"file": name, "page": image.position.page, "index": image.position.index}
        line |= result(image.outcome)
        if image.duplicate_of is not None:
            line["duplicate_of"] = {"page": image.duplicate_of.page, "index": image.duplicate_of.index}
        lines.append(line)
    return lines


def _predict_text(name: str, line: dict[str, Any], labels: list[str]) -> str:
    where = f"{name} page {line['page']} image {line['index']}" if "page" in line else name
    if "error" in line:
        return f"{where}: error: {line['error']}"
    values = ", ".join(f"{label} {value:.3f}" for label, value in zip(labels, line["values"], strict=True))
    copy = line.get("duplicate_of")
    same = f" (same image as page {copy['page']} image {copy['index']})" if copy else ""
    return f"{where}: {line['prediction']} ({values}){same}"


def _extract(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.inference.decode import InvalidImageError, decode_image
    from cats_dogs_other.inference.documents import InvalidDocumentError, PdfRaster, read_document
    from cats_dogs_other.settings import LimitSettings

    limits = LimitSettings().document_limits()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for path in args.files:
        try:
            document = read_document(path.read_bytes(), limits)
        except (InvalidDocumentError, OSError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failed = True
            continue
        for image in document.to_classify:
            target = args.out / f"{path.stem}_page{image.position.page}_index{image.position.index}.png"
            data = image.data
            assert data is not None  # to_classify: the images with data
            try:
                pixels = (
                    data.decode() if isinstance(data, PdfRaster) else decode_image(data, limits.max_pixels)
                )
            except InvalidImageError as exc:
                print(f"{target.name}: error: {exc}", file=sys.stderr)
                failed = True
                continue
            pixels.save(target, format="PNG")
            print(target, flush=True)
    return 1 if failed else 0


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import uvicorn
    from pydantic import ValidationError
    from uvicorn.supervisors import Multiprocess

    from cats_dogs_other.api.app import create_app, load_classifier, worker_app
    from cats_dogs_other.logs import configure_logging
    from cats_dogs_other.memory import configure_malloc
    from cats_dogs_other.server import DrainingServer, LimitedHttpProtocol, ProtocolLimits
    from cats_dogs_other.settings import Settings

    given = _given_settings(args)
    if args.log_level_given and "log_level" not in given:
        given["log_level"] = args.log_level.lower()
    try:
        settings = Settings(**given)
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
        "http": LimitedHttpProtocol.with_limits(ProtocolLimits.from_settings(settings)),
        # X-Forwarded-For only from TRUSTED_PROXIES (api.clients), for the access log's client too;
        # Uvicorn's own default trusts it from 127.0.0.1, which any local process can forge.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies or None,
    }
    if settings.workers == 1:
        app = create_app(settings, classifier, source, freeze_heap=True)
        DrainingServer(
            uvicorn.Config(app, **options), app.state.service, settings.shutdown_drain_seconds
        ).run()
        return 0
    # Several processes: each worker builds its own app from these same settings, which Uvicorn's
    # supervisor hands over pickled (not through the environment). The supervisor has no drain phase:
    # SIGTERM goes straight to the graceful shutdown of every worker.
    del classifier
    config = uvicorn.Config(
        functools.partial(worker_app, settings), factory=True, workers=settings.workers, **options
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def _convert(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.models.convert import convert_keras

    card = convert_keras(args.model, args.out)
    kind = "probabilities" if card.outputs_are_probabilities else "scores (not probabilities)"
    print(f"wrote {args.out / 'model.onnx'} and {args.out / 'model.json'}; outputs are {kind}")
    return 0


def _fetch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.models.convert import fetch_model
    from cats_dogs_other.settings import Settings

    settings = Settings()
    path = fetch_model(args.uri, args.out, settings.model_cache_dir, settings.mlflow_registry())
    print(f"wrote {path} and {path.with_name('model.json')}")
    return 0


def _feedback_store(args: argparse.Namespace, **policy: Any) -> Any:
    """The store, with the policy of the FEEDBACK_* variables (as `serve` has it) and `policy` over it."""
    from cats_dogs_other.feedback import FeedbackStore
    from cats_dogs_other.settings import FeedbackSettings

    url = args.database or os.environ.get("FEEDBACK_DATABASE_URL")
    if not url:
        raise SystemExit("error: give --database URL (or set FEEDBACK_DATABASE_URL)")
    settings = FeedbackSettings(**policy)
    return FeedbackStore(url, settings.feedback_policy())


def _feedback_export(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.feedback import FeedbackUnavailableError, export_dataset

    store = _feedback_store(args)
    try:
        report = export_dataset(store, args.out, min_voters=args.min_voters)
    except FeedbackUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    counts = ", ".join(f"{label} {count}" for label, count in sorted(report.per_label.items())) or "none"
    print(f"wrote {report.images} images ({counts}) and {args.out / 'annotations.json'}")
    for sha256, votes in report.ties.items():
        shown = ", ".join(f"{label} {count}" for label, count in sorted(votes.items()))
        print(f"left out (a tie: {shown}): {sha256}")
    if report.too_few_voters:
        print(f"left out: {report.too_few_voters} images labelled by fewer than {args.min_voters} voters")
    return 0


def _feedback_purge(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.feedback import FeedbackUnavailableError

    given = {} if args.retention_days is None else {"feedback_retention_days": args.retention_days}
    store = _feedback_store(args, **given)
    if store.policy.retention is None:
        print("nothing to purge: FEEDBACK_RETENTION_DAYS is 0 (feedback is kept until deleted)")
        store.close()
        return 0
    try:
        removed = store.purge()
    except FeedbackUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    days = store.policy.retention.total_seconds() / 86_400
    print(f"deleted {removed.labels} labels older than {days:g} days and {removed.images} images")
    return 0


def _feedback_erase(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.feedback import FeedbackUnavailableError

    store = _feedback_store(args)
    try:
        removed = store.erase(args.subject)
    except FeedbackUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"erased {removed.labels} labels of that subject and {removed.images} images nobody else labelled")
    return 0


def _feedback_delete(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from cats_dogs_other.feedback import FeedbackUnavailableError

    store = _feedback_store(args)
    try:
        removed = store.delete(args.sha256.lower())
    except FeedbackUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if removed < 0:
        print(f"error: no image {args.sha256} in the feedback database", file=sys.stderr)
        return 1
    print(f"deleted image {args.sha256} and its {removed} label(s)")
    return 0


SETTING_PREFIX = "setting:"
# Flags kept from before the flags were generated: the course's and README's spelling.
FLAG_ALIASES = {"model_uri": ["--model"]}


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `Settings` field, generated: `max_upload_bytes` is `--max-upload-bytes`, listed by
    `--help` in the settings' groups.

    Values go to `Settings` as given (strings), so it validates and converts them exactly as it does
    environment variables; flags not given are left out, and the environment or the default applies.
    """
    from cats_dogs_other.settings import SETTINGS_GROUPS

    for title, group in SETTINGS_GROUPS.items():
        arguments = parser.add_argument_group(title, (group.__doc__ or "").strip())
        for name, field in group.model_fields.items():
            flag = "--" + name.replace("_", "-")
            env = name.upper()
            help_text = f"{field.description or ''} ({env})".strip()
            dest = SETTING_PREFIX + name
            if field.annotation is bool:
                arguments.add_argument(
                    flag,
                    *FLAG_ALIASES.get(name, []),
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=help_text,
                )
            else:
                arguments.add_argument(
                    flag,
                    *FLAG_ALIASES.get(name, []),
                    dest=dest,
                    default=argparse.SUPPRESS,
                    metavar=env,
                    help=help_text,
                )
            if name == "auth_disabled":
                arguments.add_argument(
                    "--no-auth",
                    dest=dest,
                    action="store_const",
                    const=True,
                    default=argparse.SUPPRESS,
                    help="serve without tokens, for local demos (AUTH_DISABLED=true)",
                )


def _given_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        key.removeprefix(SETTING_PREFIX): value
        for key, value in vars(args).items()
        if key.startswith(SETTING_PREFIX)
    }


def build_parser() -> argparse.ArgumentParser:
    from cats_dogs_other.inference.limits import DEFAULT_MAX_PIXELS
    from cats_dogs_other.training.promotion import DEFAULT_TOLERANCE_POINTS
    from cats_dogs_other.training.split import DEFAULT_HOLD_OUT

    parser = argparse.ArgumentParser(prog="cats-dogs-other", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a model on a folder of labelled images, or on labelled PDFs"
    )
    train.add_argument(
        "--data",
        type=Path,
        action="append",
        help="folder with cat/, dog/ and other/ sub-folders (or a dataset root with images/ holding "
        "them, as `feedback export` writes); repeat it to train on several (the card names each one)",
    )
    train.add_argument("--pdfs", type=Path, help="folder of the course's PDF documents (with --annotations)")
    train.add_argument(
        "--annotations", type=Path, help="the labelling tool's export naming {document}_page{p}_index{i}.png"
    )
    train.add_argument("--out", type=Path, required=True, help="where to write model.onnx and model.json")
    train.add_argument(
        "--folds", type=int, default=5, help="validation folds, split by source PDF (default 5)"
    )
    train.add_argument(
        "--weight-decay", type=float, default=1e-3, help="L2 penalty of the head (default 1e-3)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--hold-out",
        type=float,
        default=DEFAULT_HOLD_OUT,
        metavar="SHARE",
        help="share of source documents kept out of training, for evaluate and promote "
        f"(default {DEFAULT_HOLD_OUT}; 0 trains on everything)",
    )
    train.add_argument(
        "--augment",
        nargs="*",
        default=None,
        metavar="VIEW",
        help="views the head is also trained on: mirrored, grayscale, jpeg_quality_30, thumbnail_96px, "
        "crop_80 (default: mirrored grayscale)",
    )
    train.add_argument("--quantize", action="store_true", help="ship a static int8 backbone (faster on CPU)")
    train.add_argument(
        "--register",
        metavar="NAME",
        default=None,
        help="with MLFLOW_TRACKING_URI set: register the model under this name",
    )
    train.set_defaults(handler=_train)

    judged = argparse.ArgumentParser(add_help=False)  # what evaluate and promote judge a model on
    judged.add_argument(
        "--data",
        type=Path,
        action="append",
        help="folder with one sub-folder per label, or a feedback export (repeatable), as for train",
    )
    judged.add_argument("--pdfs", type=Path, help="folder of the course's PDF documents (with --annotations)")
    judged.add_argument("--annotations", type=Path, help="the labelling tool's export, as for train")
    judged.add_argument(
        "--hold-out",
        type=float,
        default=DEFAULT_HOLD_OUT,
        metavar="SHARE",
        help=f"the share of source documents train holds out: evaluate on those (default {DEFAULT_HOLD_OUT})",
    )
    judged.add_argument("--out", type=Path, default=Path("evaluation"), help="where to write the reports")
    judged.add_argument(
        "--unsure-below", type=float, default=None, help="top value counted as unsure (default: UNSURE_BELOW)"
    )
    judged.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="the images as sent, and as they may come in worse (default: all of them, see the README)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        parents=[judged],
        help="accuracy, confusion, calibration and robustness of a model on held-out labelled images",
    )
    evaluate.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="path or URI, as for serve (default: built-in)",
    )
    evaluate.add_argument("--against", metavar="MODEL", help="a second model (the champion) to compare with")
    evaluate.add_argument(
        "--all-images",
        action="store_true",
        help="evaluate on every image given, not only the held-out documents",
    )
    evaluate.set_defaults(handler=_evaluate)

    promote = commands.add_parser(
        "promote",
        parents=[judged],
        help="move a registry alias to a model version, only if the gate finds it no worse than the current",
    )
    promote.add_argument("name", metavar="NAME", help="the registered model's name")
    promote.add_argument("version", metavar="VERSION", help="the version to promote")
    promote.add_argument("--alias", default="champion", help="the alias to move (default champion)")
    promote.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE_POINTS,
        metavar="POINTS",
        help="how many accuracy points worse than the current version, on any variant, still passes "
        f"(default {DEFAULT_TOLERANCE_POINTS:g})",
    )
    promote.add_argument("--force", action="store_true", help="move the alias even if the gate refuses")
    promote.add_argument("--reason", help="why the gate is overridden (required with --force; recorded)")
    promote.set_defaults(handler=_promote)

    predict = commands.add_parser("predict", help="classify image files and the images in PDF documents")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument(
        "--model", default=None, help="model path or URI, as for serve (default: the built-in one)"
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS})",
    )
    predict.set_defaults(handler=_predict)

    extract = commands.add_parser(
        "extract", help="write the images of PDF documents as the course's {stem}_page{p}_index{i}.png files"
    )
    extract.add_argument("files", nargs="+", type=Path, metavar="PDF")
    extract.add_argument("--out", type=Path, required=True, help="the folder to write the PNG files to")
    extract.set_defaults(handler=_extract)

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

    feedback = commands.add_parser(
        "feedback", help="export, delete, purge or erase the corrections people sent"
    )
    actions = feedback.add_subparsers(dest="action", required=True, metavar="ACTION")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database", metavar="URL", help="the feedback database (default: FEEDBACK_DATABASE_URL)"
    )
    export = actions.add_parser(
        "export",
        parents=[database],
        help="write the feedback as a dataset: images/<label>/<sha256>.png and annotations.json",
    )
    export.add_argument("--out", type=Path, required=True, help="the dataset folder to write")
    export.add_argument(
        "--min-voters",
        type=int,
        default=1,
        metavar="N",
        help="leave out images labelled by fewer than N people (all anonymous answers count as one)",
    )
    export.set_defaults(handler=_feedback_export)
    delete = actions.add_parser(
        "delete", parents=[database], help="remove an image and all its labels (a withdrawal)"
    )
    delete.add_argument("sha256", metavar="SHA256", help="the image's sha256, as POST /feedback answered")
    delete.set_defaults(handler=_feedback_delete)
    purge = actions.add_parser(
        "purge",
        parents=[database],
        help="delete labels older than the retention and the images nobody's label refers to any more",
    )
    purge.add_argument(
        "--retention-days", type=float, metavar="DAYS", help="default: FEEDBACK_RETENTION_DAYS (180)"
    )
    purge.set_defaults(handler=_feedback_purge)
    erase = actions.add_parser(
        "erase", parents=[database], help="delete everything one person sent (a request to be forgotten)"
    )
    erase.add_argument(
        "--subject", required=True, help="their token's `sub`, as the identity provider names them"
    )
    erase.set_defaults(handler=_feedback_erase)

    serve = commands.add_parser(
        "serve",
        help="start the HTTP service (settings also from the environment)",
        description="Every setting is a flag and an environment variable (flags win); defaults: README.",
    )
    _add_settings_arguments(serve)
    serve.set_defaults(handler=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.log_level_given = any(a == "--log-level" or a.startswith("--log-level=") for a in argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # The ONNX exporter narrates every pass at INFO, Alembic every plugin it loads.
    for chatty in ("onnxscript", "onnx_ir", "torch", "alembic"):
        logging.getLogger(chatty).setLevel(logging.ERROR)
    from pydantic import ValidationError

    from cats_dogs_other.models.errors import ModelLoadError
    from cats_dogs_other.training.comparison import ComparisonError

    try:
        code: int = args.handler(args, argv)
    except (UsageError, ComparisonError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:  # every command: a model that cannot be used stops with what to fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # a setting from the environment that Settings refuses
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

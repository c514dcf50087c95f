"""The promotion gate: a registered version takes an alias (`champion`) only when, on the evaluation
set its training never saw, it is no worse than the version holding the alias now, overall and on
every variant, beyond a stated tolerance. The decision and its report stay on the version.

Compared against the champion, not a fixed number: what matters is whether serving the candidate
would make answers worse than they are today, and a fixed bar says nothing about the images at hand
(docs/decisions.md).
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cats_dogs_other.models.errors import ModelLoadError
from cats_dogs_other.models.source import MlflowRegistry
from cats_dogs_other.urls import redact_credentials

if TYPE_CHECKING:  # `build_parser` reads this module's default: evaluating is imported when it is done
    from cats_dogs_other.training.comparison import Comparison

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_POINTS = 2.0
# MLflow keeps a model version's description in a bounded column; the full report is an artifact.
DESCRIPTION_LIMIT = 4000


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate may take the alias, and every reason it may not."""

    passed: bool
    tolerance_points: float
    refusals: list[str] = field(default_factory=list)
    allowed_points: float | None = None  # the tolerance, or one image when that is more

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tolerance_points": self.tolerance_points,
            "allowed_points": self.allowed_points,
            "refusals": self.refusals,
        }


def judge(report_json: dict[str, Any], tolerance_points: float) -> GateDecision:
    """The gate on an `evaluation.report`: its `candidate` against its `champion` (when there is one).

    Refused when the evaluation set is empty, when the candidate's card does not say it was trained
    without those images (it would be graded on its own training data), or when on any variant its
    accuracy is lower than the champion's by more than `tolerance_points` and by more than one image:
    on a small set one image is more than the tolerance, and one image is noise, not a regression.
    """
    refusals: list[str] = []
    images = report_json["images"]
    allowed = max(tolerance_points, 100 / images) if images else tolerance_points
    if images == 0:
        refusals.append("the evaluation set is empty: no held-out image to judge the candidate on")
    candidate = report_json["models"]["candidate"]
    if candidate.get("trained_without_these_images") is not True:
        refusals.append(
            "the candidate's model card does not record that its training held out the evaluation set "
            "(train with --hold-out, the default, or give --force --reason)"
        )
    champion = report_json["models"].get("champion")
    if champion is not None and report_json["images"]:
        for variant, numbers in candidate["variants"].items():
            theirs = champion["variants"].get(variant)
            if theirs is None:
                continue
            drop = 100 * (theirs["accuracy"] - numbers["accuracy"])
            if drop > allowed + 0.01:  # accuracies are rounded to 4 places
                refusals.append(
                    f"{variant}: accuracy {100 * numbers['accuracy']:.1f}% against the champion's "
                    f"{100 * theirs['accuracy']:.1f}% ({drop:.1f} points worse, {allowed:.1f} allowed)"
                )
    return GateDecision(not refusals, tolerance_points, refusals, round(allowed, 2))


@dataclass(frozen=True)
class Promotion:
    """What `promote` did: the decision, whether the alias moved, and where it pointed before."""

    decision: GateDecision
    moved: bool
    previous_version: str | None


def promote(
    registry: MlflowRegistry,
    name: str,
    version: str,
    alias: str,
    *,
    tolerance_points: float,
    compare: Callable[[dict[str, str | None]], Comparison] | None,
    forced_reason: str | None = None,
) -> Promotion | None:
    """The gate, then the alias: `compare` (role -> model URI) evaluates the candidate and the current
    version on the held-out images; None only when a person forces the alias without evaluating.
    None when the alias already points to `version`."""
    from cats_dogs_other.training.evaluation import log_to_run, markdown

    previous = alias_version(registry, name, alias)
    if previous == version:
        return None
    if compare is None:
        decision = GateDecision(False, tolerance_points, ["not evaluated: forced without --data"])
        summary, accuracy = "Not evaluated.", {}
    else:
        models: dict[str, str | None] = {"candidate": f"models:/{name}/{version}"}
        if previous is not None:
            models["champion"] = f"models:/{name}/{previous}"
        comparison = compare(models)
        decision = judge(comparison.report, tolerance_points)
        comparison.report["gate"] = decision.as_dict() | {"alias": alias, "forced_reason": forced_reason}
        summary, accuracy = markdown(comparison.report), comparison.accuracy("candidate")
        json_path, md_path = comparison.files
        json_path.write_text(json.dumps(comparison.report, indent=2) + "\n")
        md_path.write_text(summary)
        run_id = comparison.sources["candidate"].details.get("run_id")
        if run_id:
            log_to_run(run_id, comparison.report, comparison.files, registry)
    return record_and_move(
        registry,
        name,
        version,
        alias,
        decision=decision,
        summary=summary,
        previous_version=previous,
        accuracy=accuracy,
        forced_reason=forced_reason,
    )

def record_and_move(
    registry: MlflowRegistry,
    name: str,
    version: str,
    alias: str,
    *,
    decision: GateDecision,
    summary: str,
    previous_version: str | None,
    accuracy: dict[str, float] | None = None,
    forced_reason: str | None = None,
) -> Promotion:
    """Write the decision on the model version (tags, description), then move the alias when the gate
    passed or a person forced it. Tags first: a version that holds the alias always says why."""
    from mlflow import MlflowClient

    moved = decision.passed or forced_reason is not None
    outcome = "passed" if decision.passed else ("forced" if moved else "refused")
    tags = {
        f"gate.{alias}": outcome,
        f"gate.{alias}.against_version": previous_version or "none",
        f"gate.{alias}.tolerance_points": f"{decision.tolerance_points:g}",
        f"gate.{alias}.allowed_points": f"{decision.allowed_points or decision.tolerance_points:g}",
        f"gate.{alias}.by": _who(),
        **{f"evaluation.{variant}.accuracy": f"{value:.4f}" for variant, value in (accuracy or {}).items()},
    }
    if decision.refusals:
        tags[f"gate.{alias}.refusals"] = "; ".join(decision.refusals)[:DESCRIPTION_LIMIT]
    if forced_reason is not None:
        tags[f"gate.{alias}.forced_reason"] = forced_reason
    with registry.client_environment():
        client = MlflowClient(registry.tracking_uri)
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        header = f"Gate for @{alias}: {outcome}"
        if forced_reason is not None:
            header += f" ({forced_reason})"
        description = f"{header}\n\n{summary}"
        if len(description) > DESCRIPTION_LIMIT:
            description = description[: DESCRIPTION_LIMIT - 40] + "\n\n(cut: see evaluation/ artifacts)"
        client.update_model_version(name, version, description=description)
        if moved:
            client.set_registered_model_alias(name, alias, version)
            log.info("models:/%s@%s -> version %s (was %s)", name, alias, version, previous_version)
    return Promotion(decision, moved, previous_version)


def alias_version(registry: MlflowRegistry, name: str, alias: str) -> str | None:
    """The version an alias points to now, or None when it points nowhere yet (a first promotion)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with registry.client_environment():
        try:
            return str(MlflowClient(registry.tracking_uri).get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "INVALID_PARAMETER_VALUE" in str(
                exc.error_code
            ):
                return None
            message = f"Cannot look up models:/{name}@{alias} at {registry.tracking_uri}: {exc.message}"
            raise ModelLoadError(redact_credentials(message)) from None


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid, as in some containers
        return "unknown"

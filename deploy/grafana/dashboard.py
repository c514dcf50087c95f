"""The Grafana dashboard for cats-dogs-other, as code (grafana-foundation-sdk): `make dashboard` writes
cats-dogs-other.json beside this file, which Grafana imports (Dashboards > New > Import, or provisioning).

Every query names a metric the service exports or a series the shipped Prometheus rules record
(deploy/prometheus/cats-dogs-other.rules.yml); a test evaluates each against a real Prometheus scraping
a real service, and checks that the committed JSON is what this file builds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, stat, timeseries
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

OUTPUT = Path(__file__).with_name("cats-dogs-other.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# Legends show a model by the first 12 characters of its sha256, as the service's logs do.
SHORT_MODEL = 'label_replace({query}, "model", "$1", "model_sha256", "(.{{12}}).*")'
# The thresholds the alerts use (cats-dogs-other.rules.yml), drawn on their panels.
DRIFT_ALERT_BITS = 0.05
UNSURE_ALERT_SHARE = 0.15
PREDICTION_ROUTES = '"/upload|/predict|/v2/models/.+/infer"'


def query(expr: str, legend: str, ref: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def by_model(expr: str) -> str:
    return SHORT_MODEL.format(query=expr)


def line_at(value: float, color: str = "red") -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=None, color="green"), Threshold(value=value, color=color)])
    )


def graph(title: str, description: str, unit: str, *targets: Dataquery, width: int = 8) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def with_alert_line(panel: timeseries.Panel, value: float) -> timeseries.Panel:
    return panel.thresholds(line_at(value)).thresholds_style(
        common_builders.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
    )


def traffic_row() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "Requests by route and status",
            "Answers per second, summed over pods.",
            "reqps",
            query(
                f"sum by (route, status) (rate(cdo_http_requests_total[{RATE}]))", "{{route}} {{status}}", "A"
            ),
        ),
        graph(
            "Errors",
            "Server errors (5xx but 503) among all requests, and prediction requests refused with 503 "
            "(at capacity, loading or stopping). Alerts: CatsDogsOtherServerErrors, "
            "CatsDogsOtherRefusingPredictions.",
            "percentunit",
            query(":cdo_http_requests_server_errors:ratio_rate5m", "server errors", "A"),
            query("route:cdo_http_requests_unavailable:ratio_rate5m", "503 on {{route}}", "B"),
        ),
        graph(
            "Latency of answered predictions",
            "p50 and p99 of 2xx answers, by route. SLO (CatsDogsOtherLatencyOverSLO): p99 within 1 s for "
            "/upload and v2 infer, 5 s for /predict.",
            "s",
            query(
                f"route:cdo_http_request_duration_seconds:p99_5m{{route=~{PREDICTION_ROUTES}}}",
                "p99 {{route}}",
                "A",
            ),
            query(
                f"route:cdo_http_request_duration_seconds:p50_5m{{route=~{PREDICTION_ROUTES}}}",
                "p50 {{route}}",
                "B",
            ),
        ),
        graph(
            "Refusals by reason",
            "Prediction requests refused before any work, per second: unauthenticated (401, no valid "
            "token: checked before admission, they never take a token holder's place), forbidden (403), "
            "over_share (503, one client holds its share of a full service), full (503), keys_unavailable "
            "(503, the identity provider's keys cannot be fetched). Alert: "
            "CatsDogsOtherUnauthenticatedFlood.",
            "reqps",
            query(f"sum by (reason) (rate(cdo_refusals_total[{RATE}]))", "{{reason}}", "A"),
            query(":cdo_http_requests_answered_predictions:rate5m", "answered predictions", "B"),
            width=24,
        ),
    ]


def engine_row() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "Batch size",
            "Images per model call: mean, and the p90 (BATCH_MAX_SIZE caps it).",
            "short",
            query(
                f"sum(rate(cdo_inference_batch_size_sum[{RATE}]))"
                f" / sum(rate(cdo_inference_batch_size_count[{RATE}]))",
                "mean",
                "A",
            ),
            query(
                f"histogram_quantile(0.9, sum by (le) (rate(cdo_inference_batch_size_bucket[{RATE}])))",
                "p90",
                "B",
            ),
        ),
        graph(
            "Queue",
            "Prediction requests in progress (QUEUE_MAX refuses past it) and images waiting for the model, "
            "summed over pods.",
            "short",
            query("sum(cdo_inference_requests_in_progress)", "requests in progress", "A"),
            query("sum(cdo_inference_queue_depth)", "images queued", "B"),
        ),
        graph(
            "Time in the engine",
            "p99 of an image's wait for its model call, and of one model call.",
            "s",
            query(
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(cdo_inference_queue_wait_seconds_bucket[{RATE}])))",
                "queue wait p99",
                "A",
            ),
            query(
                f"histogram_quantile(0.99, sum by (le) (rate(cdo_model_inference_seconds_bucket[{RATE}])))",
                "model call p99",
                "B",
            ),
        ),
    ]


def model_row() -> list[timeseries.Panel | stat.Panel]:
    return [
        graph(
            "Label mix: live (1 h) and training",
            "Each label's share of the last hour's answers, beside its share of the model's training images "
            "(from its card).",
            "percentunit",
            query(by_model("model_sha256_label:cdo_predictions:share1h"), "{{label}} live, {{model}}", "A"),
            query(
                by_model("model_sha256_label:cdo_model_training_label_share:max"),
                "{{label}} training, {{model}}",
                "B",
            ),
            width=12,
        ),
        with_alert_line(
            graph(
                "Drift from the training mix",
                "Jensen-Shannon divergence (bits) between the live label mix over 1 h and the training mix: "
                f"0 = the same mix, 1 = nothing in common. CatsDogsOtherLabelMixDrift fires above "
                f"{DRIFT_ALERT_BITS} for 30 minutes (at 200 answers an hour or more).",
                "short",
                query(by_model("model_sha256:cdo_label_mix_divergence:js1h"), "{{model}}", "A"),
                width=12,
            ),
            DRIFT_ALERT_BITS,
        ),
        with_alert_line(
            graph(
                "Unsure answers",
                "Share of the last hour's answers whose top value was under UNSURE_BELOW. "
                f"CatsDogsOtherUnsureAnswers fires above {UNSURE_ALERT_SHARE:.0%} for 30 minutes.",
                "percentunit",
                query(by_model("model_sha256:cdo_predictions_unsure:ratio_rate1h"), "{{model}}", "A"),
            ),
            UNSURE_ALERT_SHARE,
        ),
        graph(
            "How sure the answers are",
            "The winning label's value: median and 10th percentile.",
            "percentunit",
            query(
                by_model(
                    "histogram_quantile(0.5, sum by (le, model_sha256) "
                    f"(rate(cdo_prediction_top_value_bucket[{RATE}])))"
                ),
                "median, {{model}}",
                "A",
            ),
            query(
                by_model(
                    "histogram_quantile(0.1, sum by (le, model_sha256) "
                    f"(rate(cdo_prediction_top_value_bucket[{RATE}])))"
                ),
                "p10, {{model}}",
                "B",
            ),
        ),
        graph(
            "Feedback accuracy",
            "Share of people's verdicts on the model's answers that say 'right', over a day, beside the "
            "card's validation accuracy. CatsDogsOtherFeedbackAccuracyLow fires 10 points below it.",
            "percentunit",
            query(by_model("model_sha256:cdo_feedback_accuracy:ratio_rate1d"), "feedback, {{model}}", "A"),
            query(
                by_model("max by (model_sha256) (cdo_model_validation_accuracy)"),
                "validation, {{model}}",
                "B",
            ),
        ),
        graph(
            "Feedback store",
            "Bytes the feedback store takes (replicas sharing one database report the same size) and "
            "FEEDBACK_MAX_STORE_BYTES, past which new images are refused (507). "
            "CatsDogsOtherFeedbackStoreNearlyFull fires at 90% for 30 minutes.",
            "bytes",
            query("max(cdo_feedback_store_bytes)", "stored", "A"),
            query("max(cdo_feedback_store_max_bytes)", "cap", "B"),
            width=12,
        ),
        graph(
            "Feedback refused and deleted",
            "Feedback refused by what the store keeps (quota: a person's daily quota, 429; store_full: "
            "507; anonymous: anonymous feedback is off, 403), and what retention and erasure deleted.",
            "short",
            query(f"sum by (reason) (rate(cdo_feedback_refusals_total[{RATE}]))", "refused: {{reason}}", "A"),
            query(f"sum by (kind) (rate(cdo_feedback_purged_total[{RATE}]))", "deleted: {{kind}}", "B"),
            width=12,
        ),
        graph(
            "Answers by label",
            "Answers per second, by the label chosen (every classified image, PDF images included).",
            "reqps",
            query(
                by_model(f"sum by (model_sha256, label) (rate(cdo_predictions_total[{RATE}]))"),
                "{{label}}, {{model}}",
                "A",
            ),
            width=8,
        ),
        graph(
            "Image sizes sent",
            "Median and p90 of width x height of the images classified, as sent (before reduction).",
            "short",
            query(
                f"histogram_quantile(0.5, sum by (le) (rate(cdo_image_pixels_bucket[{RATE}])))", "median", "A"
            ),
            query(
                f"histogram_quantile(0.9, sum by (le) (rate(cdo_image_pixels_bucket[{RATE}])))", "p90", "B"
            ),
            width=8,
        ),
        stat.Panel()
        .title("Pods per model")
        .description(
            "Which model (and registry version) each pod serves: two rows during a rollout, a canary, or "
            "while replicas following a moved alias switch one by one (MODEL_REFRESH_SECONDS)."
        )
        .datasource(DATASOURCE)
        .span(8)
        .height(8)
        .with_target(
            query(
                'label_replace(count by (name, sha256, registry_version) (cdo_model_info), "model", "$1", '
                '"sha256", "(.{12}).*")',
                "{{name}} {{model}} {{registry_version}}",
                "A",
            )
        ),
    ]


def build() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("cats-dogs-other")
        .uid("cats-dogs-other")
        .description(
            "Traffic, errors and latency of the service; how the model behaves against what it learned."
        )
        .tags(["cats-dogs-other", "model-serving"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    ids = iter(range(1, 1000))  # unique panel ids: links and Grafana's own state refer to them
    for title, panels in (
        ("Traffic, errors, latency", traffic_row()),
        ("Engine: batches and queue", engine_row()),
        ("Model behaviour", model_row()),
    ):
        board = board.with_row(dashboard.Row(title).id(next(ids)))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    return board


def dashboard_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(dashboard_json())
    print(f"wrote {OUTPUT}", file=sys.stderr)

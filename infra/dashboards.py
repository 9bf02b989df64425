"""Dashboards from one metric list: a Grafana dashboard (Prometheus) and a CloudWatch dashboard (Managed Flink).

PANELS is the list: each panel names what it shows once, as the PromQL the local Prometheus (and any
Prometheus-backed Grafana, Amazon Managed Grafana included) answers, and as the CloudWatch metric Managed
Flink publishes for the same thing. The metric names are infra/alert_rules.py's (the alerts read the same
series), so a renamed metric changes alerts and dashboards together.

CloudWatch side: Managed Flink publishes under the namespace AWS/KinesisAnalytics with the dimension
`Application`; our custom metrics (the `kinesisanalytics` metric group, connectors/metrics/flink_counters.py)
arrive under their own name with each key-value group (feed, reason, partner) as a further dimension, at
the OPERATOR metrics level (decision 0027). A SEARCH expression shows one line per feed or partner.

    python -m infra.dashboards --out ops/dashboards     # writes grafana.json and cloudwatch.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.alert_rules import (
    ACCEPTED,
    CHECKPOINT_DURATION,
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENT_TIME_LAG,
    FAILED_CHECKPOINTS,
    PARTNER_429,
    PARTNER_CIRCUIT,
    PARTNER_P95,
    RECORDS_IN,
    RESTARTS,
    SINK_DELAY,
    SINK_FEED_NEWEST,
    SINK_NEWEST,
    SNOWFLAKE_LAG,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "ops" / "dashboards"
NAMESPACE = "AWS/KinesisAnalytics"


@dataclass(frozen=True)
class Panel:
    """One graph: its row, title, unit, the PromQL and legend, and the CloudWatch metric of the same thing."""

    row: str
    title: str
    unit: str  # Grafana's unit id; CloudWatch takes the metric's own
    promql: str
    legend: str
    cloudwatch: str  # the metric name Managed Flink publishes
    statistic: str  # CloudWatch statistic: Sum for counts, Maximum for gauges and lags
    by: str = ""  # the custom dimension a CloudWatch SEARCH splits on (feed, reason, partner), "" for none


PANELS: tuple[Panel, ...] = (
    Panel("Throughput", "Records in per feed", "rps", f"sum by (feed) (rate({RECORDS_IN}[1m]))", "{{feed}}",
          "recordsIn", "Sum", "feed"),
    Panel("Throughput", "Accepted per feed", "rps", f"sum by (feed) (rate({ACCEPTED}[1m]))",
          "{{feed}}", "accepted", "Sum", "feed"),
    Panel("Freshness", "Event-time lag (P95 target 120 s)", "ms", f"max by (job_name) ({EVENT_TIME_LAG})",
          "{{job_name}}", "currentEmitEventTimeLag", "Maximum"),
    # The freshness watch (Iceberg tables) and the Snowflake loader set this gauge; in AWS they are not Managed
    # Flink applications, so the CloudWatch side has no metric for it yet.
    Panel("Freshness", "Sink delay: ingest to commit, largest of the last commit (target 120 s)", "s",
          f"max by (sink) ({SINK_DELAY})", "{{sink}}", "", "Maximum"),
    Panel("Freshness", "Age of the newest committed record per sink", "s",
          f"time() - max by (sink) ({SINK_NEWEST})", "{{sink}}", "", "Maximum"),
    Panel("Freshness", "Age of each feed's newest committed record per sink", "s",
          f"time() - max by (sink, feed) ({SINK_FEED_NEWEST})", "{{sink}} {{feed}}", "", "Maximum"),
    Panel("Dead letters", "Dead letters per feed and reason", "rps",
          f"sum by (feed, reason) (rate({DEAD_LETTERS}[5m]))", "{{feed}} {{reason}}", "deadLetters", "Sum", "reason"),
    Panel("Dead letters", "Dead-letter ratio per feed", "percentunit",
          f"sum by (feed) (rate({DEAD_LETTERS}[5m])) / sum by (feed) (rate({RECORDS_IN}[5m]))", "{{feed}}",
          "deadLetters", "Sum", "feed"),
    Panel("Partner delivery", "Circuit state (0 closed, 1 half-open, 2 open)", "none",
          f"max by (partner) ({PARTNER_CIRCUIT})", "{{partner}}", "circuit_state", "Maximum", "partner"),
    Panel("Partner delivery", "429 answers per partner", "rps", f"sum by (partner) (rate({PARTNER_429}[5m]))",
          "{{partner}}", "rate_limited", "Sum", "partner"),
    Panel("Partner delivery", "Ingest to partner acknowledgement, P95 of recent deliveries", "ms",
          f"max by (partner) ({PARTNER_P95})", "{{partner}}", "latency_p95_ms", "Maximum", "partner"),
    Panel("Checkpoints", "Last checkpoint duration", "ms", f"max by (job_name) ({CHECKPOINT_DURATION})",
          "{{job_name}}", "lastCheckpointDuration", "Maximum"),
    Panel("Checkpoints", "Failed checkpoints (10 min)", "short",
          f"max by (job_name) (increase({FAILED_CHECKPOINTS}[10m]))", "{{job_name}}",
          "numberOfFailedCheckpoints", "Maximum"),
    Panel("Checkpoints", "Restarts (10 min)", "short", f"max by (job_name) (increase({RESTARTS}[10m]))",
          "{{job_name}}", "numRestarts", "Maximum"),
    Panel("Lag", "Kafka consumer lag (records)", "short", CONSUMER_LAG, "{{job_name}}", "records_lag_max",
          "Maximum"),
    Panel("Lag", "Snowflake loader behind its topic (messages)", "short", f"max({SNOWFLAKE_LAG})", "snowflake",
          "", "Maximum"),
)


def grafana_dashboard(datasource_uid: str = "${datasource}") -> dict[str, Any]:
    """The Grafana dashboard model (schemaVersion 39): one row per PANELS row, two graphs across."""
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for row in dict.fromkeys(p.row for p in PANELS):
        panels.append({"id": next_id, "type": "row", "title": row, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id, y = next_id + 1, y + 1
        for i, panel in enumerate(p for p in PANELS if p.row == row):
            panels.append({
                "id": next_id, "type": "timeseries", "title": panel.title,
                "datasource": {"type": "prometheus", "uid": datasource_uid},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": panel.promql, "legendFormat": panel.legend,
                             "datasource": {"type": "prometheus", "uid": datasource_uid}}],
            })
            next_id += 1
        y += 8 * ((sum(p.row == row for p in PANELS) + 1) // 2)
    return {
        "uid": "medistream-pipeline", "title": "medistream pipeline", "schemaVersion": 39, "version": 1,
        "tags": ["medistream"], "timezone": "utc", "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


def cloudwatch_dashboard(applications: list[str], region: str) -> dict[str, Any]:
    """The CloudWatch dashboard body (PutDashboard's DashboardBody) for these Managed Flink applications."""
    widgets: list[dict[str, Any]] = []
    y = 0
    for row in dict.fromkeys(p.row for p in PANELS):
        widgets.append({"type": "text", "x": 0, "y": y, "width": 24, "height": 1,
                        "properties": {"markdown": f"## {row}"}})
        y += 1
        shown = [p for p in PANELS if p.row == row and p.cloudwatch]
        for i, panel in enumerate(shown):
            metrics: list[Any] = []
            for n, app in enumerate(applications):
                if panel.by:
                    search = (f"SEARCH('{{{NAMESPACE},Application,{panel.by}}} MetricName=\"{panel.cloudwatch}\" "
                              f"Application=\"{app}\"', '{panel.statistic}', 60)")
                    metrics.append([{"expression": search, "id": f"e{n}", "label": app}])
                else:
                    metrics.append([NAMESPACE, panel.cloudwatch, "Application", app, {"stat": panel.statistic}])
            widgets.append({"type": "metric", "x": 12 * (i % 2), "y": y + 6 * (i // 2), "width": 12, "height": 6,
                            "properties": {"title": panel.title, "region": region, "view": "timeSeries",
                                           "stacked": False, "period": 60, "metrics": metrics}})
        y += 6 * ((len(shown) + 1) // 2)
    return {"widgets": widgets}


def recording_rules() -> dict[str, Any]:
    """Every panel's PromQL as a recording rule: `promtool check rules` then checks each query's syntax."""
    return {"groups": [{"name": "medistream-dashboard-queries", "rules": [
        {"record": f"medistream:dashboard:panel{i}", "expr": panel.promql} for i, panel in enumerate(PANELS)]}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.dashboards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for grafana.json and cloudwatch.json")
    parser.add_argument("--application", action="append", default=None,
                        help="Managed Flink application names (default: the prod ingest and partner delivery)")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    applications = args.application or ["medistream-ingest-prod", "medistream-partner_delivery-prod"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grafana.json").write_text(json.dumps(grafana_dashboard(), indent=1) + "\n")
    (args.out / "cloudwatch.json").write_text(json.dumps(cloudwatch_dashboard(applications, args.region), indent=1)
                                              + "\n")
    print(f"wrote {args.out / 'grafana.json'} and {args.out / 'cloudwatch.json'} ({len(PANELS)} panels)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

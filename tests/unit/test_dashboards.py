"""Dashboards from one metric list (infra/dashboards.py): Grafana's model, CloudWatch's body, every query valid.

Each panel's PromQL is checked by Debian's `promtool check rules` (as recording rules); the committed
ops/dashboards/*.json must be what the generator writes; the CloudWatch body goes through the local
CloudWatch API's PutDashboard and comes back unchanged (tests/integration/test_dashboards.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from infra.dashboards import OUT_DIR, PANELS, cloudwatch_dashboard, grafana_dashboard, main, recording_rules
from tests.unit.test_alert_rules import _tool


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(recording_rules()))
    checked = subprocess.run([_tool("promtool"), "check", "rules", "queries.yml"], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(PANELS)} rules found" in checked.stdout


def test_the_grafana_dashboard_shows_each_panel_once_in_its_row_without_overlap() -> None:
    model = grafana_dashboard()
    graphs = [p for p in model["panels"] if p["type"] == "timeseries"]
    assert [g["targets"][0]["expr"] for g in graphs] == [p.promql for p in PANELS]
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Throughput", "Freshness", "Dead letters", "Partner delivery", "Checkpoints", "Lag"]
    cells = [(g["gridPos"]["x"], g["gridPos"]["y"]) for g in model["panels"]]
    assert len(set(cells)) == len(cells)  # no two panels at one place
    assert model["templating"]["list"][0]["query"] == "prometheus"


def test_the_cloudwatch_dashboard_reads_managed_flinks_metrics_per_application() -> None:
    body = cloudwatch_dashboard(["medistream-ingest-prod"], "us-east-1")
    graphs = [w for w in body["widgets"] if w["type"] == "metric"]
    assert len(graphs) == sum(1 for p in PANELS if p.cloudwatch)
    per_feed = next(w for w in graphs if w["properties"]["title"] == "Records in per feed")
    expression = per_feed["properties"]["metrics"][0][0]["expression"]
    assert expression.startswith("SEARCH('{AWS/KinesisAnalytics,Application,feed} MetricName=\"recordsIn\"")
    checkpoint = next(w for w in graphs if w["properties"]["title"] == "Last checkpoint duration")
    assert checkpoint["properties"]["metrics"][0] == ["AWS/KinesisAnalytics", "lastCheckpointDuration",
                                                      "Application", "medistream-ingest-prod", {"stat": "Maximum"}]


def test_the_committed_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for name in ("grafana.json", "cloudwatch.json"):
        assert json.loads((OUT_DIR / name).read_text()) == json.loads((tmp_path / name).read_text()), (
            f"ops/dashboards/{name} is stale: run python -m infra.dashboards")

"""Alert rules from ops/alerts.yaml: every alert unit-tested by `promtool test rules`, routing by `amtool`.

promtool and amtool come from Debian's prometheus packages that `./medistream setup` unpacks under
.local/prometheus-dist (infra/local/prometheus.py finds them); a test skips only when they are absent.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.alert_rules import ALERTS_FILE, feed_intervals, load_alerts, prometheus_rules, rules_text, thresholds
from infra.local.prometheus import ALERTMANAGER_CONFIG, tool
from schemas.contracts import load_contracts

OPS = ALERTS_FILE.parent


def _tool(name: str) -> Path:
    found = tool(name)
    if found is None:
        pytest.skip(f"{name} is not installed (./medistream setup unpacks Debian's prometheus packages)")
    return found


def test_every_alert_passes_its_promtool_unit_tests(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(rules_text())
    shutil.copy(OPS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    checked = subprocess.run([_tool("promtool"), "check", "rules", "rules.yml"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([_tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load((OPS / "alerts_test.yml").read_text())["tests"]
    firing, quiet = set(), set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = set(load_alerts()["alerts"])
    assert names - firing == set()
    assert names - quiet == set()


def test_feed_silent_reads_each_contracts_interval_and_the_default_otherwise() -> None:
    doc = load_alerts()
    contracts = load_contracts()
    intervals = feed_intervals(contracts, doc["defaults"]["feed_expected_interval_s"])
    assert intervals["hospital_a_claims"] == 900  # its contract's monitoring.expected_interval_s
    assert set(intervals) == set(contracts)
    assert all(s == doc["defaults"]["feed_expected_interval_s"] for f, s in intervals.items()
               if contracts[f].expected_interval_s is None)
    rules = prometheus_rules(doc, intervals)["groups"][0]["rules"]
    silent = {r["labels"]["feed"]: r["expr"] for r in rules}
    assert '{feed="hospital_a_claims"}[900s]' in silent["hospital_a_claims"]


def test_one_source_of_thresholds_feeds_the_rules_and_the_alarm_rows() -> None:
    doc = load_alerts(overrides={"DeadLetterRateHigh": {"max_ratio": 0.2},
                                 "defaults": {"feed_expected_interval_s": 30}})
    intervals = feed_intervals(load_contracts(), doc["defaults"]["feed_expected_interval_s"])
    text = yaml.safe_dump(prometheus_rules(doc, intervals))
    assert "> 0.2)" in text and "[30s]" in text
    rows = {r["alert"]: r for r in thresholds(doc, intervals)}
    assert rows["DeadLetterRateHigh"]["max_ratio"] == 0.2
    assert rows["SnowflakeLag"]["severity"] == "page"
    with pytest.raises(KeyError):
        load_alerts(overrides={"NoSuchAlert": {"for": "1m"}})


@pytest.mark.parametrize(("labels", "receiver"), [
    (["severity=page", "alertname=FeedSilent"], "oncall-page"),
    (["severity=ticket", "alertname=DeadLetterRateHigh"], "oncall-ticket"),
    (["alertname=Unknown"], "oncall-ticket"),
])
def test_alertmanager_routes_each_severity_to_its_receiver(labels: list[str], receiver: str) -> None:
    amtool = _tool("amtool")
    checked = subprocess.run([amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    routed = subprocess.run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels],
                            capture_output=True, text=True, timeout=30)
    assert routed.stdout.strip() == receiver

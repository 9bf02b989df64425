"""Alert rules from one source of thresholds: ops/alerts.yaml (+ each feed contract's expected interval).

`prometheus_rules()` gives the Prometheus rule file the local stack loads (`medistream stack up`,
infra/local/prometheus.py); `thresholds()` gives the same alerts as plain rows (name, severity, for,
numbers) for the CloudWatch alarms the CDK code is to generate (issue 21). The PromQL of each alert
is here, the numbers it compares with are in the YAML: a threshold is changed in one place.

Metric names are those Flink's Prometheus reporter gives our metric groups (jobs/ingest_operator.py,
jobs/partner_delivery.py; Flink's own job metrics) and the doors' registry (connectors/metrics/doors.py).
Run `python -m infra.alert_rules [--out FILE]` to print or write the rule file.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERTS_FILE = REPO_ROOT / "ops" / "alerts.yaml"

_OP = "flink_taskmanager_job_task_operator_"
_JOB = "flink_jobmanager_job_"
RECORDS_IN = _OP + "kinesisanalytics_feed_recordsIn"
ACCEPTED = _OP + "kinesisanalytics_feed_accepted"
DEAD_LETTERS = _OP + "kinesisanalytics_feed_deadLetters"
KMS_ERRORS = _OP + "kinesisanalytics_kmsErrors"
EVENT_TIME_LAG = _OP + "currentEmitEventTimeLag"
PENDING_RECORDS = _OP + "pendingRecords"
PARTNER_CIRCUIT = _OP + "kinesisanalytics_partner_circuit_state"
PARTNER_429 = _OP + "kinesisanalytics_partner_rate_limited"
PARTNER_P95 = _OP + "kinesisanalytics_partner_latency_p95_ms"  # ingest -> partner's ack, recent deliveries
PARTNER_DELIVERED = _OP + "kinesisanalytics_partner_delivered"
SNOWFLAKE_LAG = 'medistream_door_sink_lag{sink="snowflake"}'
SINK_DELAY = "medistream_door_sink_delay_seconds"
SINK_NEWEST = "medistream_sink_newest_record_timestamp_seconds"  # tools/sink_freshness.py
SINK_FEED_NEWEST = "medistream_sink_feed_newest_record_timestamp_seconds"  # the same, per feed
AUDIT_OK = "medistream_audit_chain_ok"
AUDIT_VERIFIED_AT = "medistream_audit_last_verified_timestamp_seconds"
CONSUMER_LAG = "medistream:consumer_lag:sum"  # recording rule: one series per job
CHECKPOINT_DURATION = _JOB + "lastCheckpointDuration"
FAILED_CHECKPOINTS = _JOB + "numberOfFailedCheckpoints"
RESTARTS = _JOB + "numRestarts"


def _expressions(a: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Alert name -> PromQL, with the YAML's numbers in place (FeedSilent is per feed: see prometheus_rules)."""
    dead = a["DeadLetterRateHigh"]
    return {
        "FreshnessOverTarget": (f"max by (job_name) ({EVENT_TIME_LAG} > 0) / 1000 > "
                                f"{a['FreshnessOverTarget']['max_lag_s']}"),
        # The doors' and the freshness watch's gauge, and each partner's P95 from ingest to its ack while it
        # receives deliveries (its window holds the last deliveries: a partner gone quiet keeps an old value).
        "SinkDelayOverTarget": (f"max by (sink) ({SINK_DELAY} or label_replace(max by (partner) ({PARTNER_P95}) / 1000 "
                                f"and on (partner) (sum by (partner) (rate({PARTNER_DELIVERED}[5m])) > 0), \"sink\", "
                                f"\"partner_$1\", \"partner\", \"(.+)\")) > {a['SinkDelayOverTarget']['max_delay_s']}"),
        "SinkCommitsStalled": (f"(time() - {_JOB}lastCheckpointCompletedTimestamp / 1000 > "
                               f"{a['SinkCommitsStalled']['max_age_s']}) and on (job_id) "
                               f"({_JOB}uptime / 1000 > {a['SinkCommitsStalled']['max_age_s']})"),
        "DeadLetterRateHigh": (f"(sum by (feed) (rate({DEAD_LETTERS}[{dead['window']}])) / sum by (feed) "
                               f"(rate({RECORDS_IN}[{dead['window']}])) > {dead['max_ratio']}) and sum by (feed) "
                               f"(rate({RECORDS_IN}[{dead['window']}])) > {dead['min_records_per_s']}"),
        # A count of failures: increase() extrapolates to the window's edges, so 2 failures as a job starts read
        # 2.1 and paged (ops/alerts_test.yml); rounded, more than max_failures means what it says.
        "CheckpointFailures": (f"max by (job_name) (round(increase({FAILED_CHECKPOINTS}"
                               f"[{a['CheckpointFailures']['window']}]))) > {a['CheckpointFailures']['max_failures']}"),
        "JobRestarting": (f"max by (job_name) (increase({RESTARTS}[{a['JobRestarting']['window']}])) > "
                          f"{a['JobRestarting']['max_restarts']}"),
        "MetricsTargetDown": 'up{job="medistream"} == 0',
        "ConsumerLagGrowing": (f"{CONSUMER_LAG} > {a['ConsumerLagGrowing']['min_lag']} and "
                               f"deriv({CONSUMER_LAG}[{a['ConsumerLagGrowing']['window']}]) > 0"),
        "PartnerCircuitOpen": f"max by (partner) ({PARTNER_CIRCUIT}) >= 2",
        "PartnerRateLimited": (f"sum by (partner) (rate({PARTNER_429}[{a['PartnerRateLimited']['window']}])) > "
                               f"{a['PartnerRateLimited']['max_per_s']}"),
        "SnowflakeLag": f"max({SNOWFLAKE_LAG}) > {a['SnowflakeLag']['max_messages']}",
        "KmsErrors": f"sum(increase({KMS_ERRORS}[{a['KmsErrors']['window']}])) > {a['KmsErrors']['max_errors']}",
        "AuditChainBroken": f"min({AUDIT_OK}) == 0",
        "AuditVerificationStale": f"time() - max({AUDIT_VERIFIED_AT}) > {a['AuditVerificationStale']['max_age_s']}",
    }


def load_alerts(path: Path = ALERTS_FILE, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The alerts document, with per-alert overrides merged in (tests use short windows)."""
    doc: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc = copy.deepcopy(doc)
    for name, values in (overrides or {}).items():
        if name == "defaults":
            doc["defaults"].update(values)
        elif name not in doc["alerts"]:
            raise KeyError(f"no alert {name!r} in {path}")
        else:
            doc["alerts"][name].update(values)
    missing = set(doc["alerts"]) ^ ({*_expressions(doc["alerts"]), "FeedSilent"})
    if missing:
        raise ValueError(f"{path}: alerts and their expressions differ: {sorted(missing)}")
    return doc


def feed_intervals(contracts: Mapping[str, Any], default_s: int) -> dict[str, int]:
    """Feed -> seconds without a record before FeedSilent fires (the contract's, else the default)."""
    return {feed: int(c.expected_interval_s or default_s) for feed, c in sorted(contracts.items())}


def _rule(name: str, expr: str, alert: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": alert["for"],
            "labels": {"severity": alert["severity"], **(labels or {})},
            "annotations": {"summary": alert["summary"]}}


def prometheus_rules(doc: Mapping[str, Any], intervals: Mapping[str, int]) -> dict[str, Any]:
    """The Prometheus rule file: one FeedSilent per feed; a recording rule, then every other alert."""
    alerts = doc["alerts"]
    silent = [_rule("FeedSilent", f'sum by (feed) (increase({RECORDS_IN}{{feed="{feed}"}}[{seconds}s])) == 0',
                    alerts["FeedSilent"], {"feed": feed, "expected_interval_s": str(seconds)})
              for feed, seconds in intervals.items()]
    others = [_rule(name, expr, alerts[name]) for name, expr in _expressions(alerts).items()]
    # The recording rule leads the alerts' group: a group's rules run in order, so the alert reads this
    # evaluation's value (groups run concurrently: from another group it read the previous one's, or not).
    recording = {"record": CONSUMER_LAG, "expr": f"sum by (job_name) ({PENDING_RECORDS})"}
    return {"groups": [
        {"name": "medistream-feeds", "rules": silent},
        {"name": "medistream-alerts", "rules": [recording, *others]},
    ]}


def thresholds(doc: Mapping[str, Any], intervals: Mapping[str, int]) -> list[dict[str, Any]]:
    """Every alert as a plain row (what a CloudWatch alarm generator needs besides its metric)."""
    rows = [{"alert": "FeedSilent", "feed": feed, "expected_interval_s": s, **doc["alerts"]["FeedSilent"]}
            for feed, s in intervals.items()]
    return rows + [{"alert": name, **values} for name, values in doc["alerts"].items() if name != "FeedSilent"]


def rules_text(overrides: Mapping[str, Mapping[str, Any]] | None = None, contracts: Mapping[str, Any] | None = None,
               path: Path = ALERTS_FILE) -> str:
    """The rule file's YAML for the shipped contracts (or `contracts`), with optional overrides."""
    from schemas.contracts import load_contracts

    doc = load_alerts(path, overrides)
    contracts = load_contracts() if contracts is None else contracts
    intervals = feed_intervals(contracts, doc["defaults"]["feed_expected_interval_s"])
    header = f"# Generated from {path.name} by infra/alert_rules.py: edit the thresholds there.\n"
    return header + yaml.safe_dump(prometheus_rules(doc, intervals), sort_keys=False, width=200)


def main(argv: list[str] | None = None) -> int:
    """Print the rule file, or write it to --out."""
    parser = argparse.ArgumentParser(prog="python -m infra.alert_rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the rule file here instead of printing it")
    args = parser.parse_args(argv)
    text = rules_text()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Two alerts fire against a real Prometheus scraping a real job: a feed that stops, then the job killed.

A Prometheus of the test's own (Debian's binary, 127.0.0.1, free ports, a 2 s scrape) with rules from
the same generator as the stack's (infra/alert_rules.py over ops/alerts.yaml), only shorter: feeds
without a contract interval are silent after 20 s, a target is down after 4 s. The ingest job runs as
in production (a subprocess with the embedded mini-cluster, its loopback Prometheus reporter announced
as a scrape target). One feed sends records in a few batches, then stops: FeedSilent fires for it.
Then the job is SIGKILLed: its target stops answering and MetricsTargetDown fires, reaches
Alertmanager and is routed to the page receiver. About two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from connectors.metrics.targets import targets_dir
from connectors.properties import medistream_home
from infra.alert_rules import RECORDS_IN
from infra.local import prometheus, synthetic
from infra.local.process import free_loopback_port
from infra.local.publish import publish
from infra.local.reference import publish_reference
from schemas.contracts import load_contracts
from tests.conftest import isolated_config
from tests.integration.conftest import wait_for, write_properties
from tools.job_processes import start_job
from tools.readback import s3_client

pytestmark = [pytest.mark.integration, pytest.mark.flink]
SEED = 21


def firing(settings: prometheus.PrometheusSettings, alert: str, **labels: str) -> list[dict[str, Any]]:
    """The firing alerts named `alert` whose labels include `labels`."""
    return [a for a in prometheus.alerts(settings) if a["labels"].get("alertname") == alert
            and a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items())]


def job_targets(pid: int) -> list[str]:
    """host:port of the scrape targets the job's process tree announced (its mini-cluster's reporter)."""
    pids = {str(p.pid) for p in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]}
    found = []
    for path in targets_dir().glob("flink-*.json"):
        if path.stem.split("-")[1] in pids:
            found += json.loads(path.read_text())[0]["targets"]
    return found


def test_feed_silent_then_target_down_fire_and_reach_alertmanager(stack: object, run_id: str, tmp_path: Path) -> None:
    cfg = isolated_config(run_id, tmp_path)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    feed = contracts[f"t{run_id}_insurer_b_payments"]  # JSON on Kafka, no interval in its contract
    assert feed.expected_interval_s is None
    batches = [list(synthetic.generate(8, seed=SEED + i, feeds=synthetic.feeds_from_contracts([feed]),
                                       mix=synthetic.Mix(0.0, 1.0, 0.0), duplicate_rate=0.0, invalid_rate=0.0,
                                       size_kb=(1, 2))) for i in range(3)]
    s3 = s3_client(cfg.s3)
    publish_reference(s3, "medistream-reference", f"t{run_id}/", SEED, version=1)
    prom = prometheus.PrometheusSettings(
        home=medistream_home(), name=f"prometheus-t{run_id}", port=free_loopback_port(),
        alertmanager_port=free_loopback_port(), scrape_interval="2s", contracts_dir=Path(cfg.feeds.contracts_dir),
        rule_overrides={"defaults": {"feed_expected_interval_s": 20}, "FeedSilent": {"for": "0s"},
                        "MetricsTargetDown": {"for": "4s"}})
    prometheus.start(prom)
    job = start_job(tmp_path / "ingest.log", write_properties(run_id, tmp_path))
    announced: list[str] = []
    try:
        def seen() -> float:
            result = prometheus.query(prom, f'sum({RECORDS_IN}{{feed="{feed.feed}"}})')
            return float(result[0]["value"][1]) if result else 0.0

        for i, batch in enumerate(batches):
            publish(batch, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{run_id}/",
                    contracts=contracts)
            if i == 0:
                wait_for(lambda: seen() > 0, 240, "the feed's first records counted in Prometheus")
            time.sleep(4)
        # Records flowed until now: the feed is not silent yet.
        assert not firing(prom, "FeedSilent", feed=feed.feed)
        stopped_at = time.monotonic()
        wait_for(lambda: bool(firing(prom, "FeedSilent", feed=feed.feed)), 90, "FeedSilent for the stopped feed")
        # Not before its (test) interval of 20 s: the last count rose when the last batch arrived, 4 s before.
        assert time.monotonic() - stopped_at >= 10

        announced = job_targets(job.pid)
        assert announced, "the job announced no scrape target"
        up = prometheus.query(prom, 'up{job="medistream",component="flink"}')
        assert {r["metric"]["instance"] for r in up if r["value"][1] == "1"} >= set(announced)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        wait_for(lambda: all(firing(prom, "MetricsTargetDown", instance=t) for t in announced), 60,
                 "MetricsTargetDown for the killed job")
        received = f"{prom.alertmanager_url()}/api/v2/alerts?filter=alertname%3D%22MetricsTargetDown%22"

        def routed() -> set[str]:
            with urllib.request.urlopen(received, timeout=5) as answer:  # noqa: S310 -- loopback
                return {r["name"] for a in json.loads(answer.read()) if a["labels"].get("instance") in announced
                        for r in a["receivers"]}
        wait_for(lambda: routed() == {"oncall-page"}, 30, "Alertmanager to route the page")
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        prometheus.stop(prom)
        shutil.rmtree(prom.folder, ignore_errors=True)  # the test instance's TSDB and config
        for target in announced:  # the killed JVM could not withdraw its own
            for path in targets_dir().glob(f"flink-*-{target.rsplit(':', 1)[1]}.json"):
                path.unlink(missing_ok=True)

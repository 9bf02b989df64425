"""Every metrics endpoint, scraped while a run carries PHI, holds no PHI value and no record id.

One run over every sample feed (PHI planted, some records invalid so dead-letter reasons appear) through
the ingest job, with the REST ingestion API serving its door metrics beside it (records with PHI posted
to it; a request to a "feed" named like a patient) and the Snowflake loader loading the run's curated
topic. While they run, every endpoint announced in the targets folder is scraped, and the repo's PHI
leak scanner (tools/checks/leak_scan.py) runs over each text with the run's PHI values and record ids
as needles. Our metrics' label names must be the bounded ones.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import psutil
import pytest

from connectors.ingest_api.app import ApiSettings
from connectors.metrics.doors import DoorMetrics
from connectors.metrics.targets import targets_dir
from tests.integration.conftest import wait_for
from tests.integration.ingest_api_harness import auth, post, records_url, serving_api
from tests.integration.test_phi_outputs import phi_values, planted_run
from tools.checks.leak_scan import LeakScanner, Needles
from tools.job_processes import JobProcesses
from tools.readback import covered, read_sinks

pytestmark = [pytest.mark.integration, pytest.mark.flink]
SEED = 53
# Label names our metrics may carry (issue 21: bounded), besides Flink's own scope labels.
OURS = {"feed", "reason", "partner", "sink", "status", "stage", "le"}
FLINK_SCOPE = {"job_id", "job_name", "task_id", "task_attempt_id", "task_attempt_num", "task_name", "host", "tm_id",
               "operator_id", "operator_name", "subtask_index"}
SERIES = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})? ", re.MULTILINE)


def scrape_all() -> dict[str, str]:
    """component@host:port -> the /metrics text of every announced endpoint that answers."""
    texts = {}
    for path in sorted(targets_dir().glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # withdrawn while listing
        for target in doc[0]["targets"]:
            try:
                with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as answer:
                    texts[f"{doc[0]['labels']['component']}@{target}"] = answer.read().decode()
            except OSError:
                continue  # a process of another run that has gone
    return texts


def label_names(text: str, prefix: tuple[str, ...]) -> set[str]:
    """The label names of the series whose name starts with one of `prefix`."""
    names = set()
    for match in SERIES.finditer(text):
        if match["name"].startswith(prefix) and match["labels"]:
            names |= set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', match["labels"]))
    return names


def off_loopback_listeners(pids: list[int]) -> list[str]:
    """`name address:port` of every listening socket of these processes and their children not on loopback."""
    found = []
    for root in map(psutil.Process, pids):
        for proc in (root, *root.children(recursive=True)):
            for conn in proc.net_connections(kind="inet"):
                address = conn.laddr.ip.removeprefix("::ffff:")  # an IPv6 socket on the IPv4-mapped loopback
                if conn.status == psutil.CONN_LISTEN and address not in ("127.0.0.1", "::1"):
                    found.append(f"{proc.name()} {conn.laddr.ip}:{conn.laddr.port}")
    return found


def test_no_metrics_endpoint_shows_phi_or_a_record_id(stack: object, run_id: str, tmp_path: Path) -> None:
    cfg, properties, contracts, generated, expected = planted_run(run_id, tmp_path, 150, SEED, invalid_rate=0.1)
    phi = phi_values(generated, contracts)
    patient = next(v for v in phi if v.isalpha() and len(v) >= 6)  # a feed name nobody should see again
    scanner = LeakScanner(Needles([*phi, *(g.record_id for g in generated)]))
    jobs = JobProcesses(properties, tmp_path / "logs")
    api_metrics = DoorMetrics("ingest_api")
    jobs.start("ingest")
    jobs.start("loader")
    try:
        with serving_api(tmp_path / "api", ApiSettings(), metrics=api_metrics) as api:
            api_metrics.feeds = frozenset(api.feed(f) for f in api.keys)
            api_metrics.serve()
            claims = [g.payload for g in generated if g.feed.endswith("hospital_a_claims")][:10]
            status, _, _ = post(records_url(api, "hospital_a_claims"), b"[" + b",".join(claims) + b"]",
                                auth(api, "hospital_a_claims"))
            assert status == 202
            assert post(records_url(api, "hospital_a_claims"), claims[0], {"Content-Type": "application/json"})[0] \
                == 401
            assert post(f"{api.url}/v1/feeds/{patient}/records", claims[0], auth(api, "hospital_a_claims"))[0] == 404

            def done() -> bool:
                jobs.check_alive()
                sinks = read_sinks(cfg)
                return (covered(sinks.archived_keys, expected["archived"]) == sum(expected["archived"].values())
                        and covered(sinks.dead_letters, expected["dead_letters"])
                        == sum(expected["dead_letters"].values()))
            wait_for(done, 300, "every record archived or dead-lettered")
            # Every server of the running ingest job and loader (the Python process, its JVM, the mini-cluster's
            # blob server, metrics reporter, data port, PyFlink's worker pool) listens on loopback only.
            assert off_loopback_listeners([jobs.procs["ingest"].pid, jobs.procs["loader"].pid]) == []
            wait_for(lambda: any(k.startswith("snowflake_load@") and 'status="loaded"' in t
                                 for k, t in scrape_all().items()), 120, "the loader's rows counted")
            texts = scrape_all()
        api_metrics.close()
    finally:
        jobs.stop_all()
    mine = {k: t for k, t in texts.items() if f"t{run_id}_" in t or k.startswith("ingest_api@")}
    assert {k.split("@")[0] for k in mine} >= {"flink", "ingest_api", "snowflake_load"}, sorted(texts)
    flink = "\n".join(t for k, t in mine.items() if k.startswith("flink@"))
    assert f'feed="t{run_id}_hospital_a_claims"' in flink and "kinesisanalytics_feed_reason_deadLetters" in flink
    assert 'feed="unknown",status="404"' in texts[next(k for k in mine if k.startswith("ingest_api@"))]
    loader = next(t for k, t in mine.items() if k.startswith("snowflake_load@"))
    assert 'medistream_door_sink_delay_seconds{sink="snowflake"}' in loader  # its freshness, once rows loaded
    for where, text in texts.items():  # every endpoint, this run's or not
        list(scanner.scan_text(f"metrics {where.split('@')[0]}", text))
    report = scanner.report()
    assert report.scanned["text"]["texts"] == len(texts)
    # The needles do find PHI where it is: in a posted record, and in the 404's path.
    assert list(LeakScanner(scanner.needles).scan_text("probe", claims[0].decode() + f" /v1/feeds/{patient}"))
    assert report.clean, report.to_json()
    assert label_names(flink, ("flink_taskmanager_job_task_operator_medistream",)) <= OURS | FLINK_SCOPE
    for key in mine:
        if not key.startswith("flink@"):
            assert label_names(mine[key], ("medistream_",)) <= OURS, key

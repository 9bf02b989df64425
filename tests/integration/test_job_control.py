"""The operator workflows end to end on the local cluster, on the packaged zips: `medistream jobs` status, a
refused upgrade that stops nothing, an upgrade from version N to N+1 through a savepoint that loses and duplicates
nothing, a role without the right refused, a partner outage ridden out, a backfill of an already delivered range
that delivers only what was missing, the partner's dead letters replayed once it is fixed; every sink exact.

One zip built from HEAD, one from version N, one cluster of its own (tools.private_cluster); the ingest job
(N, then N+1) and the partner delivery job (HEAD) deployed from the zips with run-unique names, delivering to
the partner stand-in of the shipped contract, which refuses a fifth of the business keys (422) until it is
fixed; the audit log is the run's own chain in the local audit table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import yaml

from connectors.audit import event_of, load_audit_settings, open_audit_log
from connectors.properties import REPO_ROOT, read_property_groups
from infra.local import synthetic
from infra.local.ground_truth import expected_outcome
from infra.local.isolation import isolated_config, write_properties
from infra.local.partner.harness import PARTNER
from infra.local.partner.rules import rejected
from infra.local.publish import publish
from infra.local.reference import publish_reference
from infra.local.settings import StackSettings
from schemas.contracts import load_contracts
from tests.integration.conftest import read_topic
from tools import backfill, cluster_status, deploy, job_control, lineage
from tools.attest import sign_local
from tools.cli import main as medistream
from tools.cluster_config import ClusterSettings
from tools.demo import ShippedPartner
from tools.job_backend_cluster import LocalClusterBackend
from tools.ops_console.panels import jobs_panel
from tools.package import Target, build
from tools.private_cluster import private_cluster
from tools.readback import compare_sinks, covered, inexact, linkage_digest, read_sinks, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

RUN, SEED, BEFORE, AFTER = os.urandom(4).hex(), 53, 300, 200
# Version N, the release before the dead-letter dedup and backfills (N+1, HEAD, adds a stateful operator to the
# ingest job, decision 0024): the upgrade test restores N's savepoint into N+1.
PREVIOUS_RELEASE = "1c85d160fd4ce1ef9dc7cfc8c28d2649470a64fc"
OPERATOR = ["--actor", "olu", "--role", "operator", "--reason", "change CHG-7"]
REFUSED = 0.2  # of the business keys, by the partner until it is fixed (422: dead-lettered at once)


@pytest.fixture(scope="module")
def setup(stack: StackSettings, tmp_path_factory: pytest.TempPathFactory, runtime_python: Path, packaged_zip: Path
          ) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("jobs")
    if subprocess.run(["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], cwd=REPO_ROOT,
                      capture_output=True, check=False).returncode:
        pytest.skip(f"version N ({PREVIOUS_RELEASE[:12]}) is not in this clone's history (a shallow clone?)")
    previous = sign_local(build(Target("3.12"), tmp_path_factory.mktemp("dist-n"), commit=PREVIOUS_RELEASE))
    zip_path = packaged_zip
    properties = write_properties(RUN, home)
    _as_version_n_reads_them(Path(isolated_config(RUN, home).feeds.contracts_dir))
    groups = json.loads(properties.read_text())
    for group in groups:  # the run's own audit chain and dead-letter replay ledger
        if group["PropertyGroupId"] == "audit":
            group["PropertyMap"]["chain"] = f"jobs-test-{RUN}"
        if group["PropertyGroupId"] == "kafka":
            group["PropertyMap"]["dlq.replays.topic"] = f"replays.t{RUN}"
    properties.write_text(json.dumps(groups))
    partner = ShippedPartner(properties, {"ledger.table": f"ledger-t{RUN}", "group.id": f"partner-t{RUN}",
                                          "dlq.topic": f"dlq.partner.t{RUN}", "job.name": f"partner-{RUN}"},
                             reject_fraction=REFUSED)
    try:
        with private_cluster(tmp_path_factory.mktemp("cluster"), f"s3://{stack.warehouse_bucket}/jobs-test-{RUN}",
                             str(runtime_python), checkpoint_interval="3 s") as settings:
            yield {"previous": previous, "zip": zip_path, "properties": properties, "settings": settings,
                   "home": home, "partner": partner}
    finally:
        partner.stop()


def _as_version_n_reads_them(contracts: Path) -> None:
    """Drop from the run's contracts the keys and feeds version N's contract schema does not know (it refuses them: a
    feed contract may use a new key only once every job that reads it runs a version that knows it). Optional keys
    added since, e.g. `monitoring`, are read with their defaults by N+1."""
    shown = subprocess.run(["git", "show", f"{PREVIOUS_RELEASE}:schemas/feed_contract.schema.json"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=True).stdout
    schema = json.loads(shown)
    known = set(schema["properties"])
    # Routes to sinks added since (e.g. `operational`) likewise: N's schema names the sinks it knows.
    route = re.compile(schema["properties"]["routes"]["items"]["oneOf"][0]["pattern"])
    # Feeds of record types added since (e.g. `device_event`) go: N refuses their contracts, a new feed starts with
    # the version that reads it.
    record_types = set(schema["properties"]["record_type"]["enum"])
    for path in contracts.glob("*.yaml"):
        document = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k in known}
        if document["record_type"] not in record_types:
            path.unlink()
            continue
        document["routes"] = [r for r in document["routes"] if route.match(r if isinstance(r, str) else r["to"])]
        path.write_text(yaml.safe_dump(document, sort_keys=False))


def _jobs(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *argv: str) -> tuple[int, Any]:
    settings: ClusterSettings = setup["settings"]
    # The module's own cluster (its home, ports and runtime), where `--target local` means the default one.
    monkeypatch.setattr(job_control, "backend_for", lambda target: LocalClusterBackend(settings))
    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(setup["properties"]))
    code = job_control.main(list(argv))
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err.strip())


def _run_data(setup: dict[str, Any]) -> tuple[Any, Any, list[Any], Any]:
    """The run's config, contracts, generated records and S3 client. The records: BEFORE of them, then AFTER, then
    exact re-sends of the first BEFORE's accepted records (sent after the upgrade: the dedup must remember)."""
    cfg = isolated_config(RUN, setup["home"])
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    feeds = synthetic.feeds_from_contracts(contracts.values())
    generated = list(synthetic.generate(BEFORE + AFTER, seed=SEED, feeds=feeds, mix=synthetic.Mix(0.8, 0.2, 0.0),
                                        duplicate_rate=0.02, invalid_rate=0.04))
    digest = linkage_digest(cfg)
    resent = [dataclasses.replace(g, is_duplicate=True) for g in generated[:BEFORE]
              if not g.is_duplicate and not expected_outcome([g], contracts, SEED, digest)["dead_letters"]]
    return cfg, contracts, generated + resent, s3_client(cfg.s3)


def _wait_exact(cfg: Any, generated: list[Any], contracts: Any, timeout_s: float, **repaired: bool
                ) -> dict[str, Any]:
    """Wait until every expected claim is in Iceberg and every expected partner delivery made; the expectation."""
    expected = expected_outcome(generated, contracts, SEED, linkage_digest(cfg), **repaired)
    want = sum(expected["claims"].values())
    deadline = time.monotonic() + timeout_s
    while covered(read_sinks(cfg).iceberg_claim_keys, expected["claims"]) < want:
        assert time.monotonic() < deadline, "claims did not all reach Iceberg"
        time.sleep(2)
    time.sleep(4)  # one more checkpoint for the archive and dead letters of the same records
    return expected


def _partner_expected(setup: dict[str, Any], expected: dict[str, Any]) -> Counter[str]:
    """What the partner accepts of what is routed to it while it still refuses REFUSED of the keys."""
    standin = setup["partner"].standin
    return Counter({k: n for k, n in expected["routed"][f"partner:{PARTNER}"].items() if not rejected(standin, k)})


def _partner_dead(setup: dict[str, Any]) -> dict[str, str]:
    """The partner's dead letters so far: business key -> reason code (the newest per key)."""
    groups = read_property_groups(setup["properties"])
    letters = [json.loads(m.value()) for m in read_topic(groups["kafka"]["bootstrap.servers"],
                                                         groups["partners"]["dlq.topic"])]
    return {letter["business_key"]: letter["reason_code"] for letter in letters}


def _wait_partner(setup: dict[str, Any], want: Counter[str], timeout_s: float, dead_counts: bool = True
                  ) -> tuple[Counter[str], set[str]]:
    """Wait until each wanted key is delivered to the partner or (`dead_counts`) dead-lettered because its retries
    ran out (an outage), then two more checkpoints for any duplicate; (deliveries by business key across every
    stand-in instance, keys dead-lettered with retries exhausted). Never both for one key, never a key twice."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = Counter(setup["partner"].deliveries())
        exhausted = {k for k, reason in _partner_dead(setup).items()
                     if dead_counts and reason.startswith("retries_exhausted")}
        if all(held[k] >= n or k in exhausted for k, n in want.items()):
            break
        assert time.monotonic() < deadline, "the partner did not get every delivery"
        time.sleep(2)
    time.sleep(6)
    held = Counter(setup["partner"].deliveries())
    assert not {k for k, n in held.items() if n > want.get(k, 0)}, "a key reached the partner twice"
    assert not exhausted & set(held), "a key was delivered and dead-lettered"
    return held, exhausted


def test_status_a_refused_upgrade_that_stops_nothing_and_roles(
        setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings: ClusterSettings = setup["settings"]
    cfg, contracts, generated, s3 = _run_data(setup)
    setup["t0"] = time.time() - 1  # before the first record: where the backfill's range starts
    publish_reference(s3, "medistream-reference", f"t{RUN}/", SEED, version=1)
    publish(generated[:BEFORE], cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{RUN}/",
            contracts=contracts)
    first = deploy.deploy(setup["previous"], ["ingest"], settings=settings, base_properties=setup["properties"])
    delivery = deploy.deploy(setup["zip"], ["partner_delivery"], settings=settings,
                             base_properties=setup["properties"])["jobs"]["partner_delivery"]
    cluster_status.wait_running(settings, first["jobs"]["ingest"], 240)
    cluster_status.wait_running(settings, delivery, 240)
    setup["delivery"] = delivery
    expected = _wait_exact(cfg, generated[:BEFORE], contracts, 300)
    held, exhausted = _wait_partner(setup, _partner_expected(setup, expected), 300)
    assert held + Counter(exhausted) == _partner_expected(setup, expected)

    code, status = _jobs(setup, monkeypatch, capsys, *OPERATOR, "status", "ingest")
    assert code == 0 and status["state"] == "RUNNING" and status["job_id"] == first["jobs"]["ingest"]
    assert status["last_checkpoint"]["size_bytes"] > 0 and status["restarts"] == 0
    assert sum(v["out"] for v in status["records"].values()) > 0 and status["version"] == setup["previous"].name
    # The ops console's jobs panel reads the same back end: both jobs running, with a checkpoint, no restart.
    panel = jobs_panel(LocalClusterBackend(settings))
    rows = {row["job"]: row for row in panel.rows}
    assert panel.ok and {job: rows[job]["state"] for job in ("ingest", "partner_delivery")} == {
        "ingest": "RUNNING", "partner_delivery": "RUNNING"}
    assert rows["ingest"]["checkpoint"] is not None and rows["ingest"]["restarts"] == 0

    # A "new version" whose job graph has none of the running job's operators (what a rewrite without fixed
    # uids would be): the state read from a fresh savepoint has no place in it.
    backend = LocalClusterBackend(settings)
    real_operator_ids = LocalClusterBackend.operator_ids
    monkeypatch.setattr(LocalClusterBackend, "operator_ids", lambda self, job, zip_path: {"0" * 32})
    code, refusal = _jobs(setup, monkeypatch, capsys, *OPERATOR, "upgrade", "ingest", "--zip", str(setup["zip"]))
    assert code == 2 and "cannot restore ingest's savepoint" in refusal and "Nothing was stopped" in refusal
    assert backend.status("ingest").job_id == first["jobs"]["ingest"]  # the same job runs on
    assert backend.status("ingest").state == "RUNNING"
    monkeypatch.setattr(LocalClusterBackend, "operator_ids", real_operator_ids)

    setup["first"] = first["jobs"]["ingest"]
    code, refused = _jobs(setup, monkeypatch, capsys, "--actor", "dana", "--role", "analyst", "--reason", "look",
                          "stop", "ingest")
    assert code == 2 and "role 'analyst' may not stop" in refused
    assert backend.status("ingest").state == "RUNNING"
    groups = read_property_groups(setup["properties"])
    # The operator commands' events (the delivery job writes its own, `partner_reveal_grant`, at start).
    events = [e for e in map(event_of, open_audit_log(load_audit_settings(groups)).entries())
              if e.action.startswith("job_")]
    assert [(e.actor, e.action, e.decision) for e in events] == [
        ("olu", "job_status", "grant"), ("olu", "job_upgrade", "grant"), ("dana", "job_stop", "deny")]
    assert all("CHG-7" in e.reason for e in events[:2])


def test_an_upgrade_from_n_to_n_plus_one_through_a_savepoint_keeps_the_dedup_memory(
        setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup.get("first"), "runs after the status and refusal test"
    settings: ClusterSettings = setup["settings"]
    cfg, contracts, generated, s3 = _run_data(setup)
    # Version N+1: one more stateful operator (the dead-letter dedup), every other uid kept. Stopped with a
    # savepoint, started from it, no state dropped.
    code, upgraded = _jobs(setup, monkeypatch, capsys, *OPERATOR, "upgrade", "ingest", "--zip", str(setup["zip"]))
    assert code == 0 and upgraded["dropped_state"] == [], upgraded
    assert upgraded["status"]["version"] == setup["zip"].name != setup["previous"].name
    second = upgraded["status"]["job_id"]
    assert second != setup["first"] and upgraded["status"]["state"] == "RUNNING"
    restored = (cluster_status.rest_get(settings, f"/jobs/{second}/checkpoints") or {})["latest"]["restored"]
    assert restored["is_savepoint"] is True and restored["external_path"] == upgraded["savepoint"]
    setup["upgrade_savepoint"] = upgraded["savepoint"]
    # AFTER new records, and exact re-sends of records N delivered: N+1 drops them from N's dedup memory. They
    # reach the partner through an outage: nothing listens on its port for 20 s while they are routed to it.
    partner: ShippedPartner = setup["partner"]
    partner.down()
    publish(generated[BEFORE:], cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{RUN}/",
            contracts=contracts)
    assert sum(g.is_duplicate for g in generated[BEFORE + AFTER:]) > 100
    time.sleep(20)
    partner.up()
    expected = _wait_exact(cfg, generated, contracts, 300)
    found = compare_sinks(expected, read_sinks(cfg))
    assert not inexact(found), inexact(found)  # across the upgrade: 0 lost, 0 duplicated in every sink
    # The outage cost retries and held records (the circuit breaker), never a delivery or a dead letter more.
    held, exhausted = _wait_partner(setup, _partner_expected(setup, expected), 300)
    # A key the partner refuses is dead-lettered either way: as refused once it answers, or with its retries
    # exhausted when the outage outlasted them (which of the two depends on when its attempts fell).
    refused = {k for k in exhausted if rejected(setup["partner"].standin, k)}
    assert held + Counter(exhausted - refused) == _partner_expected(setup, expected)
    setup["second"] = second


def test_a_backfill_of_a_delivered_range_delivers_only_what_was_missing(
        setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Claims of a payer the reference data lacked were dead-lettered; the directory is fixed; a backfill of the
    whole range (every feed, every unit already read once) delivers exactly those claims, once, and nothing else."""
    assert setup.get("second"), "runs after the upgrade test"
    settings: ClusterSettings = setup["settings"]
    cfg, contracts, generated, s3 = _run_data(setup)
    digest = linkage_digest(cfg)
    before, repaired = (expected_outcome(generated, contracts, SEED, digest, all_payers=flag) for flag in (False, True))
    gap = sum(repaired["claims"].values()) - sum(before["claims"].values())
    assert gap > 0  # enrichment misses the backfill can repair
    publish_reference(s3, "medistream-reference", f"t{RUN}/", SEED, version=2, all_payers=True)
    time.sleep(15)  # the reference source's monitor interval, a few times over: the job holds version 2

    end = time.time()
    summaries = []
    for feed in sorted(contracts):
        code, summary = _backfill(setup, monkeypatch, capsys, "--feed", feed, "--from", _iso(setup["t0"]),
                                  "--to", _iso(end), "--rate", "500")
        assert code == 0, summary
        summaries.append(summary)
    copied = sum(s["messages"] + s["files"] for s in summaries)
    assert copied > 0 and sum(s["skipped_copies"] for s in summaries) == 0

    # Repaired claims reach every sink once; what was delivered stays once; refused again stays one dead letter,
    # except those version N wrote: N had no dead-letter dedup, so N+1's starts without them, and the backfill's
    # re-read writes each of them once more, under the same id (decision 0024).
    written_by_n = expected_outcome(generated[:BEFORE], contracts, SEED, digest, all_payers=True)["dead_letters"]
    assert sum(written_by_n.values()) > 0
    expected = {**repaired, "dead_letters": before["dead_letters"] + written_by_n}
    want = sum(repaired["claims"].values())
    deadline = time.monotonic() + 300
    while covered(read_sinks(cfg).iceberg_claim_keys, repaired["claims"]) < want:
        assert time.monotonic() < deadline, "the repaired claims did not reach Iceberg"
        time.sleep(2)
    time.sleep(8)  # a few more checkpoints: the job has read every copy, and dropped what it must
    found = compare_sinks(expected, read_sinks(cfg))
    assert not inexact(found), inexact(found)

    # A second backfill of the same range changes nothing.
    busiest = max(summaries, key=lambda s: s["messages"] + s["files"])["feed"]
    code, again = _backfill(setup, monkeypatch, capsys, "--feed", busiest, "--from", _iso(setup["t0"]), "--to",
                            _iso(end))
    assert code == 0 and again["messages"] + again["files"] > 0
    time.sleep(10)
    assert not inexact(compare_sinks(expected, read_sinks(cfg)))
    events = [event_of(e) for e in open_audit_log(load_audit_settings(read_property_groups(setup["properties"])))
              .entries()]
    backfills = [e for e in events if e.action == "job_backfill"]
    assert len(backfills) == 2 * (len(contracts) + 1) and all(e.actor == "olu" for e in backfills)
    assert deploy.stop(setup["second"], settings)["state"] == "FINISHED"
    setup["repaired"] = repaired

    # Lineage (the stack's OpenLineage store): each run of the ingest job began with START and ended with COMPLETE
    # naming its savepoint, the run id being the Flink job id; each backfill is a BATCH run with its counts.
    def runs(job: str) -> list[dict[str, Any]]:
        url = read_property_groups(setup["properties"])["lineage"]["url"]
        with urlopen(f"{url}/api/v1/lineage/events?job={job}&limit=1000", timeout=10) as answer:  # noqa: S310
            found: list[dict[str, Any]] = json.loads(answer.read())
        return found

    ingest_runs = {(e["run"]["runId"], e["eventType"]) for e in runs("ingest")}
    for job_id in (setup["first"], setup["second"]):
        assert {(lineage.run_id(job_id), "START"), (lineage.run_id(job_id), "COMPLETE")} <= ingest_runs
    ended = next(e for e in runs("ingest") if e["run"]["runId"] == lineage.run_id(setup["first"])
                 and e["eventType"] == "COMPLETE")
    assert ended["run"]["facets"]["medistream"]["savepoint"] == setup["upgrade_savepoint"]
    # Each stop reads the run's counts per feed before it stops (lineage.run_quality): the dataQuality facet.
    second = next(e for e in runs("ingest") if e["run"]["runId"] == lineage.run_id(setup["second"])
                  and e["eventType"] == "COMPLETE")
    counted = second["run"]["facets"]["dataQuality"]["feeds"][busiest]  # the backfill ran through this run
    assert counted["recordsIn"] == counted["accepted"] + counted["deadLetters"] > 0
    done = [e for e in runs(f"backfill.{busiest}") if e["eventType"] == "COMPLETE"]
    assert len(done) == 2 and done[0]["job"]["facets"]["jobType"]["processingType"] == "BATCH"
    assert {d["name"] for d in done[0]["outputs"]} == {f"raw.{busiest}", f"t{RUN}/{busiest}/backfill/"}


def test_the_partners_dead_letters_replayed_once_it_is_fixed_reach_it_once(
        setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every business key the partner refused (422) was dead-lettered; the partner is fixed; `dlq replay` sends
    exactly those keys again, through the running delivery job, under their idempotency keys: afterwards the
    partner holds each routed key once, across the upgrade, the outage and the backfill."""
    assert setup.get("repaired"), "runs after the backfill test"
    repaired, partner = setup["repaired"], setup["partner"]
    routed: Counter[str] = Counter(repaired["routed"][f"partner:{PARTNER}"])
    held, exhausted = _wait_partner(setup, _partner_expected(setup, repaired), 300)
    refused = {k for k in routed if rejected(partner.standin, k)}
    # A key the partner refuses may have been dead-lettered with its retries exhausted instead (the upgrade test's
    # outage, depending on when its attempts fell): it counts among the refused, not as a delivery that is owed.
    assert refused and held + Counter(exhausted - refused) == routed - Counter({k: routed[k] for k in refused})
    dead = set(_partner_dead(setup))
    assert dead == refused | exhausted  # 422s, and records whose retries the outage used up

    monkeypatch.setenv("MEDISTREAM_PROPERTIES", str(setup["properties"]))
    code = medistream(["dlq", "list", "--partner"])
    listed = capsys.readouterr().out.splitlines()
    assert code == 0 and listed[-1].startswith(f"{len(dead)} dead letter(s)")
    partner.up(reject_fraction=0.0)  # fixed
    code = medistream(["dlq", "replay", "--partner", PARTNER, "--role", "operator", "--actor", "olu",
                       "--why", "partner fixed its validation"])
    summary = capsys.readouterr().out.splitlines()[-1]
    assert code == 0 and summary.startswith(f"{len(dead)} unit(s) from {len(dead)} dead letter(s): "
                                            f"{len(dead)} replayed, 0 skipped"), summary
    # after the replay: each routed key delivered once, 0 lost, 0 duplicated
    assert _wait_partner(setup, routed, 300, dead_counts=False) == (routed, set())
    code = medistream(["dlq", "replay", "--partner", PARTNER, "--role", "operator", "--actor", "olu",
                       "--why", "again"])
    assert code == 0 and "0 replayed" in capsys.readouterr().out.splitlines()[-1]
    time.sleep(6)
    assert Counter(partner.deliveries()) == routed
    assert deploy.stop(setup["delivery"], setup["settings"])["state"] == "FINISHED"


def _iso(epoch_s: float) -> str:
    return backfill.iso(int(epoch_s * 1000))


def _backfill(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              *argv: str) -> tuple[int, Any]:
    code = backfill.main([*OPERATOR, "--properties", str(setup["properties"]), *argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err.strip())

"""`medistream batch` on the embedded mini-cluster against the local stack: one date of a file feed reaches every
sink exactly once; the same date again changes no sink; a correction and a new file added to the date flow once;
and every refusal changes nothing."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import orjson
import pytest

from connectors.audit import event_of, load_audit_settings, open_audit_log
from connectors.iceberg import split_s3_url
from connectors.kms import aws_client
from connectors.properties import load_batch_path, read_property_groups
from infra.local import synthetic
from infra.local.ground_truth import expected_outcome
from infra.local.isolation import isolated_config, write_properties
from infra.local.publish import publish
from infra.local.reference import publish_reference
from schemas.contracts import load_contracts
from tools import batch
from tools.batch import BatchState
from tools.operation_lease import LOCK_TABLE, FeedLease, ensure_lock_table
from tools.readback import SinkCounts, linkage_digest, read_sinks, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.flink]
SEED = 71
OPERATOR = ["--actor", "olu", "--role", "operator", "--reason", "CHG-9 nightly claims"]
DAY = datetime.now(UTC).date() - timedelta(days=1)


@pytest.fixture
def feed_run(stack: object, run_id: str, tmp_path: Path) -> dict[str, Any]:
    """A JSON claims file feed of a fresh run, its reference data, and the run's properties (own audit chain)."""
    cfg = isolated_config(run_id, tmp_path)
    properties = write_properties(run_id, tmp_path, audit_chain=f"batch-test-{run_id}")
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    s3 = s3_client(cfg.s3)
    publish_reference(s3, "medistream-reference", f"t{run_id}/", SEED, version=1)
    return {"cfg": cfg, "properties": properties, "contracts": contracts, "s3": s3,
            "batch_path": load_batch_path(read_property_groups(properties)), "feed": f"t{run_id}_hospital_d_claims"}


def _land(feed_run: dict[str, Any], generated: list[synthetic.Generated], per_file: int, day: date = DAY) -> None:
    bucket, prefix = split_s3_url(feed_run["batch_path"])
    publish(generated, feed_run["cfg"].kafka.bootstrap_servers, feed_run["s3"], bucket, landing_prefix=prefix,
            records_per_file=per_file, contracts=feed_run["contracts"],
            now=datetime(day.year, day.month, day.day, 12, tzinfo=UTC), day_folder="%Y-%m-%d")


def _run(feed_run: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str, feed: str | None = None,
         day: str = DAY.isoformat(), operator: list[str] = OPERATOR) -> tuple[int, Any]:
    code = batch.main([*operator, "--properties", str(feed_run["properties"]), "--feed", feed or feed_run["feed"],
                       "--date", day, "--timeout", "120", *extra])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err.strip())


def _assert_exact(cfg: Any, expected: dict[str, Any], sinks: SinkCounts) -> None:
    assert sinks.iceberg_claim_keys == expected["claims"]
    assert sinks.archived_keys == expected["archived"]
    assert sinks.dead_letters == expected["dead_letters"]
    for sink, keys in expected["routed"].items():
        assert sinks.routed[sink] == keys, sink
    assert sinks.dead_letter_ids["topic"] == sinks.dead_letter_ids["archive"] == sinks.dead_letter_ids["iceberg"]


def _split(generated: list[synthetic.Generated], at: int) -> tuple[list[synthetic.Generated], ...]:
    return generated[:at], generated[at:]


def _correction(original: synthetic.Generated) -> synthetic.Generated:
    """The same claim (same business key) with other content: a new version, under a new record id."""
    record = orjson.loads(original.payload)
    record["notes"] = [*record.get("notes", [])[:3], "Corrected after review."]
    record["record_id"] = original.record_id[:-4] + "ZZZZ"
    return dataclasses.replace(original, record_id=record["record_id"], payload=orjson.dumps(record),
                               is_duplicate=False)


def test_a_date_runs_once_a_rerun_changes_nothing_and_additions_flow_once(
        feed_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, contracts = feed_run["cfg"], feed_run["contracts"]
    feeds = synthetic.feeds_from_contracts([contracts[feed_run["feed"]]])
    # The first 90 land now; the last 30 later, in a new file (re-sends of the first 90 among them: the restored
    # dedup state must drop them). The same seed as the reference data: every payer is known.
    generated, added = _split(list(synthetic.generate(120, seed=SEED, feeds=feeds, mix=synthetic.Mix(1.0, 0.0, 0.0),
                                                      duplicate_rate=0.1, invalid_rate=0.08)), 90)
    _land(feed_run, generated, per_file=30)
    digest = linkage_digest(cfg)

    started = time.monotonic()
    code, first = _run(feed_run, capsys)
    assert code == 0, first
    assert (first["files"], first["files_new"], first["files_read"], first["complete"]) == (3, 3, 3, True)
    assert first["restored_from"] is None and first["savepoint"]
    expected = expected_outcome(generated, contracts, SEED, digest)
    assert sum(expected["claims"].values()) > 50 and sum(expected["dead_letters"].values()) > 3
    sinks = read_sinks(cfg)
    _assert_exact(cfg, expected, sinks)
    assert first["records_delivered"] == sum(expected["archived"].values())
    assert first["dead_letters"] == sum(expected["dead_letters"].values())
    # Lineage: a BATCH run of the date's folder into the feed's sinks, its COMPLETE event with the ingest operator's
    # counts as the dataQuality facet (the metrics' view: at most the exact totals, by reason in sum).
    url = read_property_groups(feed_run["properties"])["lineage"]["url"]
    with urlopen(f"{url}/api/v1/lineage/events?job=batch.{feed_run['feed']}&limit=100", timeout=10) as answer:  # noqa: S310
        events = json.loads(answer.read())
    assert sorted(e["eventType"] for e in events) == ["COMPLETE", "START"]
    done = next(e for e in events if e["eventType"] == "COMPLETE")
    assert done["job"]["facets"]["jobType"]["processingType"] == "BATCH"
    assert [i["name"] for i in done["inputs"]] == [f"{split_s3_url(feed_run['batch_path'])[1]}{feed_run['feed']}/"
                                                  f"{DAY.isoformat()}/"]
    counted = done["run"]["facets"]["dataQuality"]["feeds"][feed_run["feed"]]
    assert counted["recordsIn"] == counted["accepted"] + counted["deadLetters"] > 0
    assert counted["accepted"] <= first["records_accepted"] and counted["deadLetters"] <= first["dead_letters"]
    assert sum(counted.get("deadLettersByReason", {}).values()) == counted["deadLetters"]
    timings = [f"first run: {first['seconds']} s for 3 files, {len(generated)} records "
               f"(test wall {time.monotonic() - started:.0f} s)"]

    # The same date again: restored from the first run's savepoint, nothing read, no sink changes.
    code, again = _run(feed_run, capsys)
    assert code == 0, again
    assert (again["files"], again["files_new"], again["files_read"]) == (3, 0, 0)
    assert again["restored_from"] == first["savepoint"] and again["savepoint"] != first["savepoint"]
    assert read_sinks(cfg) == sinks
    timings.append(f"re-run: {again['seconds']} s")

    # A correction of one delivered claim and a new file of new records land in the date: exactly those flow.
    original, key = next((g, *expected_outcome([g], contracts, SEED, digest)["claims"]) for g in generated
                         if not g.is_duplicate and expected_outcome([g], contracts, SEED, digest)["claims"])
    assert any(g.is_duplicate for g in added) and any(g.expect == "invalid" for g in added)
    _land(feed_run, [_correction(original)], per_file=1)
    _land(feed_run, added, per_file=len(added))
    code, third = _run(feed_run, capsys)
    assert code == 0, third
    assert (third["files"], third["files_new"], third["files_read"]) == (5, 2, 2)
    assert third["restored_from"] == again["savepoint"]
    after = expected_outcome([*generated, _correction(original), *added], contracts, SEED, digest)
    _assert_exact(cfg, after, read_sinks(cfg))
    assert third["records_delivered"] == sum(after["archived"].values()) - sum(expected["archived"].values())
    assert third["dead_letters"] == sum(after["dead_letters"].values()) - sum(expected["dead_letters"].values())
    assert after["claims"][key] == 2  # the claim and its correction, one version each
    timings.append(f"additions: {third['seconds']} s")
    with capsys.disabled():
        print("; ".join(timings))

    state = BatchState.load(feed_run["s3"], feed_run["batch_path"], feed_run["feed"])
    assert state.savepoint == third["savepoint"]
    assert state.dates[DAY.isoformat()]["files_read"] == 5 and state.dates[DAY.isoformat()]["runs"] == 3
    events = [event_of(e) for e in open_audit_log(load_audit_settings(read_property_groups(
        feed_run["properties"]))).entries()]
    assert [(e.action, e.decision) for e in events] == [("job_batch", "grant")] * 6
    last = events[-1].reason
    assert f"savepoint {third['savepoint'].rsplit('/', 1)[-1]}" in last and "2 file(s) read" in last


def test_refusals_change_nothing(feed_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    feed, s3 = feed_run["feed"], feed_run["s3"]
    generated = list(synthetic.generate(10, seed=SEED, feeds=synthetic.feeds_from_contracts(
        [feed_run["contracts"][feed]]), mix=synthetic.Mix(1.0, 0.0, 0.0), duplicate_rate=0.0, invalid_rate=0.0))
    _land(feed_run, generated, per_file=10)
    tomorrow = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
    kafka_feed = next(f for f, c in feed_run["contracts"].items() if "landing" not in c.sources)

    refusals = [
        (dict(operator=["--actor", "dana", "--role", "analyst", "--reason", "x"]), "role 'analyst' may not batch"),
        (dict(day=tomorrow), f"--date {tomorrow} is in the future"),
        (dict(day="2026-13-01"), "is not a date written YYYY-MM-DD"),
        (dict(feed="no_such_feed"), "no feed 'no_such_feed'"),
        (dict(feed=kafka_feed), f"feed '{kafka_feed}' is not a file feed"),
        (dict(day=(DAY - timedelta(days=1)).isoformat()), "no files for"),
    ]
    for kwargs, message in refusals:
        code, refused = _run(feed_run, capsys, **kwargs)
        assert code == 2 and message in refused and "\n" not in refused, (kwargs, refused)

    # Another batch run of the feed holds the lease.
    dynamodb = aws_client(feed_run["cfg"].phi, "dynamodb")
    ensure_lock_table(dynamodb, LOCK_TABLE)
    other = FeedLease(dynamodb, LOCK_TABLE, feed, "kim/earlier-run/1", operation="batch")
    other.take()
    try:
        code, refused = _run(feed_run, capsys)
        assert code == 2 and f"a batch of {feed} is running (kim/earlier-run/1" in refused
    finally:
        other.release()

    code, dry = _run(feed_run, capsys, "--dry-run")
    assert code == 0 and (dry["files"], dry["files_new"], dry["restored_from"]) == (1, 1, None)
    assert BatchState.load(s3, feed_run["batch_path"], feed) == BatchState(feed)  # nothing recorded
    events = [event_of(e) for e in open_audit_log(load_audit_settings(read_property_groups(
        feed_run["properties"]))).entries()]
    # The bad date is refused before anything is audited (it names no run); every other refusal is audited.
    assert [(e.actor, e.decision) for e in events] == [("dana", "deny")] + [("olu", "grant")] * 6

"""The ingest stage on generated records: accepted ones, every reject reason, no PHI in dead letters."""

from __future__ import annotations

import orjson
import pytest

from infra.local import synthetic
from infra.local.synthetic import INVALID_KINDS, Feed
from udfs.claims import CLAIM_COLUMNS
from udfs.dead_letters import DeadLetter, Rejected
from udfs.ingest import IngestStage, decode_json
from udfs.source import SourceRef

FEEDS = (Feed("unit_claims", "claim", "kafka"), Feed("unit_payments", "payment", "kafka"),
         Feed("unit_eligibility", "eligibility", "landing"))
EXPECTED_REASON = {
    "malformed_json": "malformed_json",
    "not_an_object": "not_an_object",
    "missing_required": "schema_violation",
    "wrong_type": "schema_violation",
    "bad_enum": "schema_violation",
    "bad_format": "schema_violation",
}


@pytest.fixture(scope="module")
def generated() -> list[synthetic.Generated]:
    return list(synthetic.generate(600, seed=11, feeds=FEEDS, duplicate_rate=0.0, invalid_rate=0.2))


def source_for(g: synthetic.Generated) -> SourceRef:
    return SourceRef.from_kafka(f"raw.{g.feed}", 0, 1)


def test_every_valid_record_is_accepted_with_its_envelope(generated: list[synthetic.Generated]) -> None:
    stage = IngestStage()
    valid = [g for g in generated if g.expect == "valid"]
    assert {g.record_type for g in valid} == {"claim", "payment", "eligibility"}
    for g in valid:
        accepted = stage.process(g.payload, source_for(g))
        assert (accepted.record_id, accepted.feed, accepted.record_type) == (g.record_id, g.feed, g.record_type)
        assert accepted.payload.encode() == g.payload
        assert (accepted.claim is not None) == (g.record_type == "claim")


def test_claim_rows_carry_table_columns_and_exact_money(generated: list[synthetic.Generated]) -> None:
    stage = IngestStage()
    claim = next(g for g in generated if g.expect == "valid" and g.record_type == "claim")
    row = stage.process(claim.payload, source_for(claim)).claim
    assert row is not None and tuple(row) == CLAIM_COLUMNS
    assert row["total_charge"] == orjson.loads(claim.payload)["total_charge"]
    assert isinstance(row["total_charge"], str)


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_each_invalid_kind_is_rejected_with_its_reason(generated: list[synthetic.Generated], kind: str) -> None:
    stage = IngestStage()
    cases = [g for g in generated if g.invalid_kind == kind]
    assert cases, f"generator produced no {kind} record"
    for g in cases:
        with pytest.raises(Rejected) as caught:
            stage.process(g.payload, source_for(g))
        assert caught.value.reason_code == EXPECTED_REASON[kind]


def test_record_from_the_wrong_feed_is_rejected(generated: list[synthetic.Generated]) -> None:
    g = next(g for g in generated if g.expect == "valid")
    with pytest.raises(Rejected) as caught:
        IngestStage().process(g.payload, SourceRef.from_kafka("raw.some_other_feed", 0, 9))
    assert caught.value.reason_code == "feed_mismatch"


def test_decode_rejects_non_objects_and_bad_utf8() -> None:
    for payload in (b"[1, 2]", b'"text"', b"\xff\xfe{}", b""):
        with pytest.raises(Rejected):
            decode_json(payload)


def string_leaves(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_leaves(v)]
    return [value] if isinstance(value, str) else []


def test_dead_letters_hold_no_value_of_the_record(generated: list[synthetic.Generated]) -> None:
    stage = IngestStage()
    checked = 0
    for g in generated:
        if g.expect != "invalid" or g.invalid_kind in ("malformed_json", "not_an_object"):
            continue
        source = source_for(g)
        with pytest.raises(Rejected) as caught:
            stage.process(g.payload, source)
        letter = DeadLetter.from_error(caught.value, g.payload, source, IngestStage.record_id_of(g.payload), 0)
        body = letter.to_json()
        record = orjson.loads(g.payload)
        # Names, dates of birth, member ids, addresses: no string value of the record (beyond the
        # envelope ids that are there on purpose) may appear in the dead letter.
        envelope = {record.get(k) for k in ("record_id", "feed", "record_type", "schema_version")}
        leaked = [v for v in string_leaves(record) if len(v) >= 4 and v not in envelope and v in body]
        assert leaked == [], f"dead letter for {g.invalid_kind} repeats record values"
        checked += 1
    assert checked > 10


def test_dead_letter_id_is_stable_across_replays(generated: list[synthetic.Generated]) -> None:
    g = next(g for g in generated if g.expect == "invalid")
    err = Rejected("schema_violation", "$.x required", "schema")
    first = DeadLetter.from_error(err, g.payload, source_for(g), None, 1)
    again = DeadLetter.from_error(err, g.payload, source_for(g), None, 2)
    assert first.dead_letter_id == again.dead_letter_id


def test_source_refs_name_the_feed() -> None:
    assert SourceRef.from_kafka("raw.hospital_a", 1, 5).pointer() == "kafka:raw.hospital_a/1@5"
    landed = SourceRef.from_file("/feeds/hospital_d/2026/11/22/f.jsonl", "s3://landing/feeds/")
    assert landed.feed == "hospital_d"
    assert landed.path == "s3://landing/feeds/hospital_d/2026/11/22/f.jsonl"
    assert SourceRef.from_file("/elsewhere/f.jsonl", "s3://landing/feeds/").feed == "unknown"

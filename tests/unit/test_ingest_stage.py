"""The ingest stage on generated records: accepted ones, every reject reason, no PHI in dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from infra.local import synthetic
from infra.local.reference import reference_data
from infra.local.static_keys import StaticKeySource, static_protectors
from infra.local.synthetic import INVALID_KINDS, Feed
from schemas.contracts import FeedContract, parse_contract
from udfs.dead_letters import DeadLetter, Rejected
from udfs.enrich import ReferenceData
from udfs.ingest import Accepted, IngestStage, Refused
from udfs.phi.envelope import DataKeyCache, unseal
from udfs.phi.protect import dead_letter_context, seal_dead_letter
from udfs.projections import CLAIM_COLUMNS, ELIGIBILITY_COLUMNS, PAYMENT_COLUMNS
from udfs.source import SourceRef

SEED = 11
NOW = datetime(2026, 11, 22, tzinfo=UTC)
FEEDS = (Feed("unit_claims", "claim", "kafka"), Feed("unit_payments", "payment", "kafka"),
         Feed("unit_eligibility", "eligibility", "kafka"))
# Standardization runs before the schema check, so a malformed date or code may be named by it.
EXPECTED_REASONS = {
    "malformed_json": {"malformed_json"},
    "not_an_object": {"not_an_object"},
    "missing_required": {"schema_violation"},
    "wrong_type": {"schema_violation", "std_bad_date", "std_bad_datetime", "std_bad_money", "std_bad_phone",
                   "std_bad_state", "std_bad_zip", "std_bad_code"},
    "bad_enum": {"schema_violation"},
    "hostile_text": {"text_formula", "text_bidi_control", "text_control_character"},
    "bad_format": {"schema_violation", "std_bad_date", "std_bad_datetime", "std_bad_money", "std_bad_phone",
                   "std_bad_state", "std_bad_zip", "std_bad_code"},
}


def contract(feed: str, record_type: str, **overrides: Any) -> FeedContract:
    doc = {"feed": feed, "owner": "team@medistream.example", "record_type": record_type, "schema_version": "1.0",
           "sources": ["kafka"], "format": {"type": "json"}, "phi_policy": "default-v1", "routes": ["archive"],
           "enrichment": {"on_miss": "flag"}} | overrides
    return parse_contract(doc, f"{feed}.yaml")


DEAD_LETTER_KEYS = DataKeyCache(StaticKeySource())


def SEAL(feed: str, dead_letter_id: str, data: bytes) -> str:
    return seal_dead_letter(DEAD_LETTER_KEYS, feed, dead_letter_id, data)


def open_dead_letter(sealed: str, feed: str, dead_letter_id: str) -> bytes:
    return unseal(DEAD_LETTER_KEYS, sealed, dead_letter_context(feed, dead_letter_id))


def reference() -> ReferenceData:
    return reference_data(SEED)


@pytest.fixture(scope="module")
def stage() -> IngestStage:
    return IngestStage({f.name: contract(f.name, f.record_type) for f in FEEDS}, static_protectors(), reference())


@pytest.fixture(scope="module")
def generated() -> list[synthetic.Generated]:
    return list(synthetic.generate(600, seed=SEED, feeds=FEEDS, duplicate_rate=0.0, invalid_rate=0.2))


def source_for(g: synthetic.Generated) -> SourceRef:
    return SourceRef.from_kafka(f"raw.{g.feed}", 0, 1)


def one(stage: IngestStage, payload: bytes | None, source: SourceRef) -> Accepted | Refused:
    outcomes = list(stage.process(payload, source, unit_ms=0, now=NOW))
    assert len(outcomes) == 1
    return outcomes[0]


def test_every_valid_record_is_accepted_with_its_envelope(stage: IngestStage, generated: list) -> None:
    valid = [g for g in generated if g.expect == "valid"]
    assert {g.record_type for g in valid} == {"claim", "payment", "eligibility"}
    for g in valid:
        accepted = one(stage, g.payload, source_for(g))
        assert isinstance(accepted, Accepted), getattr(accepted, "error", None)
        assert (accepted.record_id, accepted.feed, accepted.record_type) == (g.record_id, g.feed, g.record_type)
        # The canonical input survives whole, but only inside the sealed copy; the payload is protected.
        protector = stage.feeds[g.feed].protector
        assert protector.open_record(accepted.sealed, g.feed, g.record_id) == orjson.loads(g.payload)
        assert orjson.loads(accepted.payload)["_protection"]["policy"] == "default-v1"
        expected = {"claim": (*CLAIM_COLUMNS, "service_lines", "member_token"), "payment": PAYMENT_COLUMNS,
                    "eligibility": ELIGIBILITY_COLUMNS}[g.record_type]
        assert set(accepted.columns) == set(expected)
        if g.record_type == "claim":  # the fraud detectors' key: the subscriber's token, never the member id
            assert accepted.columns["member_token"] == orjson.loads(accepted.payload)["subscriber"]["member_id"]
            assert accepted.columns["member_token"] != orjson.loads(g.payload)["subscriber"]["member_id"]
        assert accepted.routes == tuple(r.sink for r in stage.feeds[g.feed].contract.routes)


def test_claim_rows_carry_table_columns_exact_money_and_enrichment(stage: IngestStage, generated: list) -> None:
    claim = next(g for g in generated if g.expect == "valid" and g.record_type == "claim")
    accepted = one(stage, claim.payload, source_for(claim))
    assert isinstance(accepted, Accepted)
    assert accepted.columns["total_charge"] == orjson.loads(claim.payload)["total_charge"]
    assert isinstance(accepted.columns["total_charge"], str)
    lines = accepted.columns["service_lines"]  # texts per line, in CLAIM_LINE_FIELDS order
    assert [line[0] for line in lines] == [str(n) for n in range(1, accepted.columns["service_line_count"] + 1)]
    assert [line[4] for line in lines] == [line["charge"] for line in orjson.loads(claim.payload)["service_lines"]]
    assert accepted.enrichment["versions"] == {"payer_directory": 1, "providers": 1}


def test_operator_rows_carry_claim_lines_as_texts_and_no_null_array(stage: IngestStage, generated: list) -> None:
    """Each accepted record's row: a claim's lines as texts; other types an empty array (PyFlink writes no null one)."""
    from udfs.rows import ACCEPTED_FIELDS, accepted_values

    at = ACCEPTED_FIELDS.index("service_lines")
    for record_type in ("claim", "payment", "eligibility"):
        g = next(g for g in generated if g.expect == "valid" and g.record_type == record_type)
        accepted = one(stage, g.payload, source_for(g))
        assert isinstance(accepted, Accepted)
        lines = accepted_values(accepted, "pointer", 0)[at]
        if record_type == "claim":
            assert lines == accepted.columns["service_lines"] and lines
            assert all(len(line) == 6 and all(v is None or isinstance(v, str) for v in line) for line in lines)
        else:
            assert lines == []


@pytest.mark.parametrize("routes", [["archive"], ["archive", "snowflake"], ["archive", "partner:clearwater_health"],
                                    ["archive", "iceberg", "snowflake", "partner:clearwater_health"]])
def test_operator_rows_carry_curated_values_where_routed(generated: list, routes: list) -> None:
    """A curated value is there only for the routes that read it, and holds the row's own fields in its topic's column
    order (decision 0046)."""
    from udfs.curated import CURATED_COLUMNS, PARTNER_CURATED_COLUMNS
    from udfs.rows import ACCEPTED_FIELDS, BYTES_FIELDS, accepted_values

    routed = IngestStage({f.name: contract(f.name, f.record_type, routes=routes) for f in FEEDS}, static_protectors(),
                         reference())
    g = next(g for g in generated if g.expect == "valid")
    accepted = one(routed, g.payload, source_for(g))
    assert isinstance(accepted, Accepted)
    row = dict(zip(ACCEPTED_FIELDS, accepted_values(accepted, "raw.feed:0:1", 42), strict=True))
    # The large texts cross into the JVM as UTF-8 bytes (decision 0058); the enrichment is its JSON.
    assert row["payload"] == accepted.payload.encode() and row["sealed"] == accepted.sealed.encode()
    assert orjson.loads(row["enrichment"]) == accepted.enrichment
    assert {f for f in ACCEPTED_FIELDS if isinstance(row[f], bytes)} <= BYTES_FIELDS
    for field, columns, wanted in (("curated", CURATED_COLUMNS, "snowflake" in routes),
                                   ("partner_curated", PARTNER_CURATED_COLUMNS, "partner:clearwater_health" in routes)):
        if not wanted:
            assert row[field] is None
            continue
        value = orjson.loads(row[field])
        assert list(value) == [name for name, _kind in columns]
        assert value == {name: row[name].decode() if name in BYTES_FIELDS else row[name] for name in value}
        assert value["ingested_at_ms"] == 42 and value["source"] == "raw.feed:0:1"


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_each_invalid_kind_is_refused_with_its_reason(stage: IngestStage, generated: list, kind: str) -> None:
    cases = [g for g in generated if g.invalid_kind == kind]
    assert cases, f"generator produced no {kind} record"
    for g in cases:
        refused = one(stage, g.payload, source_for(g))
        assert isinstance(refused, Refused)
        assert refused.error.reason_code in EXPECTED_REASONS[kind]


def test_envelope_refusals(stage: IngestStage, generated: list) -> None:
    g = next(g for g in generated if g.expect == "valid" and g.record_type == "claim")
    cases = {
        "unknown_feed": (g.payload, SourceRef.from_kafka("raw.no_such_feed", 0, 9)),
        "door_not_allowed": (g.payload, SourceRef.from_file("/feeds/unit_claims/x.jsonl", "s3://l/feeds/")),
        "unit_too_large": (None, source_for(g)),
        "feed_mismatch": (g.payload, SourceRef.from_kafka("raw.unit_payments", 0, 9)),
        "schema_version_unsupported": (orjson.dumps(orjson.loads(g.payload) | {"schema_version": "2.0"}),
                                       source_for(g)),
    }
    for code, (payload, source) in cases.items():
        refused = one(stage, payload, source)
        assert isinstance(refused, Refused) and refused.error.reason_code == code, code


def test_record_type_mismatch_is_refused(generated: list) -> None:
    g = next(g for g in generated if g.expect == "valid" and g.record_type == "payment")
    stage = IngestStage({"unit_claims": contract("unit_claims", "claim")}, static_protectors(), reference())
    payload = orjson.dumps(orjson.loads(g.payload) | {"feed": "unit_claims"})
    refused = one(stage, payload, SourceRef.from_kafka("raw.unit_claims", 0, 1))
    assert isinstance(refused, Refused) and refused.error.reason_code == "record_type_mismatch"


def test_json_lines_file_yields_each_line_and_refuses_bad_lines_alone(generated: list) -> None:
    feed = contract("unit_lines", "claim", sources=["landing"], format={"type": "json", "options": {"lines": True}})
    stage = IngestStage({"unit_lines": feed}, static_protectors(), reference())
    claims = [orjson.loads(g.payload) | {"feed": "unit_lines"} for g in generated
              if g.expect == "valid" and g.record_type == "claim"][:3]
    body = b"\n".join([orjson.dumps(claims[0]), b"{broken", b"", orjson.dumps(claims[1]), orjson.dumps(claims[2])])
    outcomes = list(stage.process(body, SourceRef.from_file("/feeds/unit_lines/a.jsonl", "s3://l/feeds/"), 0, NOW))
    assert [type(o).__name__ for o in outcomes] == ["Accepted", "Refused", "Accepted", "Accepted"]
    assert [o.position for o in outcomes] == ["line 1", "line 2", "line 4", "line 5"]


def test_a_stage_bug_is_dead_lettered_not_raised(generated: list, monkeypatch: pytest.MonkeyPatch) -> None:
    import udfs.ingest

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(udfs.ingest, "validate", broken)
    stage = IngestStage({f.name: contract(f.name, f.record_type) for f in FEEDS}, static_protectors(), reference())
    g = next(g for g in generated if g.expect == "valid")
    refused = one(stage, g.payload, source_for(g))
    assert isinstance(refused, Refused) and refused.error.reason_code == "internal_error"
    assert "KeyError" in refused.error.detail and "boom" not in refused.error.detail


def string_leaves(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_leaves(v)]
    return [value] if isinstance(value, str) else []


def test_dead_letters_hold_no_value_of_the_record(stage: IngestStage, generated: list) -> None:
    checked = 0
    for g in generated:
        if g.expect != "invalid" or g.invalid_kind in ("malformed_json", "not_an_object"):
            continue
        source = source_for(g)
        refused = one(stage, g.payload, source)
        assert isinstance(refused, Refused)
        sealed_record = None if refused.record is None else orjson.dumps(refused.record)
        letter = DeadLetter.from_error(refused.error, g.payload, source, refused.record_id, 0, SEAL, refused.position,
                                       record=sealed_record)
        # The sealed payload is AES-GCM output under a random nonce, in base64: any 4-letter value turns up
        # in such text now and then by chance (a name matched once in ~3 CI runs). It is opaque, and it
        # is checked above by opening it; the search covers every other field.
        wire = orjson.loads(letter.to_json())
        wire.pop("protected_payload")
        body = orjson.dumps(wire).decode()
        record = orjson.loads(g.payload)
        # The content is there, but only sealed: it opens with the dead-letter context and no other.
        assert letter.protected_payload is not None
        opened = open_dead_letter(letter.protected_payload, g.feed, letter.dead_letter_id)
        assert opened == (sealed_record if letter.payload_form == "record" else g.payload)
        # Names, dates of birth, member ids, addresses: no string value of the record (beyond the
        # envelope ids that are there on purpose) may appear in the dead letter.
        envelope = {record.get(k) for k in ("record_id", "feed", "record_type", "schema_version")}
        leaked = [v for v in string_leaves(record) if len(v) >= 4 and v not in envelope and v in body]
        assert leaked == [], f"dead letter for {g.invalid_kind} repeats record values"
        checked += 1
    assert checked > 10


def test_dead_letter_id_is_stable_across_replays_and_distinct_per_position(generated: list) -> None:
    g = next(g for g in generated if g.expect == "invalid")
    err = Rejected("schema_violation", "$.x required")
    first = DeadLetter.from_error(err, g.payload, source_for(g), None, 1, SEAL, "row 2")
    again = DeadLetter.from_error(err, g.payload, source_for(g), None, 2, SEAL, "row 2")
    other = DeadLetter.from_error(err, g.payload, source_for(g), None, 2, SEAL, "row 3")
    assert first.dead_letter_id == again.dead_letter_id != other.dead_letter_id
    assert first.source["position"] == "row 2"
    assert first.stage == "schema"


def test_undefined_reason_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="undefined reason code"):
        Rejected("no_such_code", "x")


def test_source_refs_name_the_feed() -> None:
    assert SourceRef.from_kafka("raw.hospital_a", 1, 5).pointer() == "kafka:raw.hospital_a/1@5"
    landed = SourceRef.from_file("/feeds/hospital_d/2026/11/22/f.jsonl", "s3://landing/feeds/")
    assert landed.feed == "hospital_d"
    assert landed.path == "s3://landing/feeds/hospital_d/2026/11/22/f.jsonl"
    assert SourceRef.from_file("/elsewhere/f.jsonl", "s3://landing/feeds/").feed == "unknown"


def test_an_empty_or_header_only_unit_is_reported() -> None:
    feed = contract("unit_lines", "claim", sources=["landing"], format={"type": "json", "options": {"lines": True}})
    stage = IngestStage({"unit_lines": feed}, static_protectors(), reference())
    for body in (b"", b"\n\n"):
        refused = one(stage, body, SourceRef.from_file("/feeds/unit_lines/a.jsonl", "s3://l/feeds/"))
        assert isinstance(refused, Refused) and refused.error.reason_code == "empty_unit"

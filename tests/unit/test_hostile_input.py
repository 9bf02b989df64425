"""Hostile text in every format: each feed (JSON, JSON Lines, CSV, Avro, X12) meets the same hygiene rule.

A valid synthetic record gets one hostile value in a person's first name, is encoded in its feed's
own format by the same encoders the demo uses, and goes through IngestStage.process as the job runs
it. Whatever the format, the outcome is the one udfs/hygiene.py promises for a `name` field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from infra.local.feed_encoding import encode_unit
from infra.local.reference import reference_data
from infra.local.static_keys import static_protectors
from schemas.contracts import load_contracts
from tests.unit import feed_samples
from udfs.ingest import Accepted, IngestStage, Refused

SEED = 23
NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONTRACTS = load_contracts()
PROTECTORS = static_protectors()
STAGE = IngestStage(CONTRACTS, PROTECTORS, reference_data(SEED))
NAME_PATH: dict[str, tuple[str | int, ...]] = {
    "claim": ("subscriber", "first_name"),
    "payment": ("claims", 0, "patient", "first_name"),
    "eligibility": ("member", "first_name"),
}
HOSTILE: dict[str, str | None] = {  # value -> the refusal's reason code (None: cleaned and accepted)
    "=HYPERLINK(\"https//example.invalid/\")": "text_formula",
    "+cmd|' /C calc'!A0": "text_formula",
    "-2+3/A1": "text_formula",
    "@SUM(A1)": "text_formula",
    "'=1+1": "text_formula",
    "\t=1+1": "text_control_character",
    "Ann\x00Lee": "text_control_character",
    "Ann\x1bLee": "text_control_character",
    "Ann\x85Lee": "text_control_character",
    "Ann\nLee": "text_control_character",
    "Ann\u202eeeL": "text_bidi_control",
    "Ann\u2066Lee": "text_bidi_control",
    "Ann\u200bLee": None,
    "Ann\u200dLee": None,
    "Ren\u0065\u0301e": None,
}


def _record(feed: str) -> dict[str, Any]:
    return feed_samples.record(CONTRACTS[feed], SEED)


def _plant(record: dict[str, Any], path: tuple[str | int, ...], value: str) -> None:
    node: Any = record
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def _carries(feed: str, value: str) -> bool:
    """Whether the feed's format can carry `value` in a name at all (else the sender cannot send it)."""
    contract = CONTRACTS[feed]
    if contract.format == "x12":  # its delimiters, and line breaks, which only format segments
        return not set(value) & set("*~:^\r\n")
    encoding = contract.options.get("encoding", "utf-8")
    return contract.format != "csv" or value.encode(encoding, errors="ignore").decode(encoding) == value


# Only what a sender could send in that format: X12 cannot put its delimiters in a name.
# Device events carry no name (their texts are codes, whose class test_hygiene covers): no name to plant in.
CASES = [(feed, value) for feed in sorted(CONTRACTS) for value in sorted(HOSTILE)
         if _carries(feed, value) and CONTRACTS[feed].record_type in NAME_PATH]


def test_every_format_meets_every_hostile_class() -> None:
    formats = {CONTRACTS[f].format for f, _ in CASES}
    assert formats == {"json", "csv", "avro", "x12"}
    for fmt in formats:
        reasons = {HOSTILE[v] for f, v in CASES if CONTRACTS[f].format == fmt}
        assert reasons == set(HOSTILE.values()), fmt


def _expected(feed: str, value: str) -> str | None:
    if CONTRACTS[feed].format == "csv" and "\x00" in value:
        return "csv_encoding"  # a NUL makes the whole file binary to the CSV decoder: the unit is refused
    return HOSTILE[value]


def _outcomes(feed: str, value: str | None) -> list[Accepted | Refused]:
    contract = CONTRACTS[feed]
    record = _record(feed)
    if value is not None:
        _plant(record, NAME_PATH[contract.record_type], value)
    unit = encode_unit(contract, [orjson.dumps(record)])
    return list(STAGE.process(unit, feed_samples.source(CONTRACTS[feed]), 1_750_000_000_000, NOW))


@pytest.mark.parametrize("feed", sorted(CONTRACTS))
def test_the_unplanted_record_is_accepted(feed: str) -> None:
    outcomes = _outcomes(feed, None)
    assert outcomes and all(isinstance(o, Accepted) for o in outcomes), [
        o.error.reason_code for o in outcomes if isinstance(o, Refused)]


@pytest.mark.parametrize(("feed", "value"), CASES)
def test_hostile_names_meet_one_rule_in_every_format(feed: str, value: str) -> None:
    outcomes = _outcomes(feed, value)
    expected = _expected(feed, value)
    refused = [o for o in outcomes if isinstance(o, Refused)]
    if expected is None:
        assert not refused, [o.error.reason_code for o in refused]
        assert any(isinstance(o, Accepted) for o in outcomes)
        return
    assert [o.error.reason_code for o in refused] == [expected], f"{CONTRACTS[feed].format}: {refused}"
    assert not any(isinstance(o, Accepted) for o in outcomes)
    (letter,) = refused
    assert value.strip() not in letter.error.detail and "Ann" not in letter.error.detail
    assert expected == "csv_encoding" or "first_name (name)" in letter.error.detail


@pytest.mark.parametrize("feed", sorted(f for f, c in CONTRACTS.items() if c.record_type == "claim"))
def test_a_formula_in_free_text_notes_is_neutralised_not_refused(feed: str) -> None:
    contract = CONTRACTS[feed]
    record = _record(feed)
    record["notes"] = ["=HYPERLINK(\"https//example.invalid/\")", "- follow up in 2 weeks", "ordinary remark"]
    unit = encode_unit(contract, [orjson.dumps(record)])
    outcomes = list(STAGE.process(unit, feed_samples.source(CONTRACTS[feed]), 1_750_000_000_000, NOW))
    (accepted,) = outcomes
    assert isinstance(accepted, Accepted), accepted
    sealed = PROTECTORS[contract.phi_policy].open_record(accepted.sealed, feed, accepted.record_id)
    # Every claim format carries notes (an 837P only one NTE); the sealed copy is the record as kept.
    expected = ["'=HYPERLINK(\"https//example.invalid/\")", "'- follow up in 2 weeks", "ordinary remark"]
    assert 1 <= len(sealed["notes"]) and sealed["notes"] == expected[:len(sealed["notes"])]

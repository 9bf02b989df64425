"""Dead letters never carry a raw value from the record, in any format, on any refused path.

Two ways in. First, per feed (every format the contracts use), a record whose every field the
format can carry holds a PHI-shaped value (e-mail addresses, MRNs, the record id too), refused at
each stage a record can be refused at; every dead letter is built as the job builds it and scanned
with the PHI leak scanner (tools/checks/leak_scan.py) for every planted value and every original PHI value.
Second, a Hypothesis property: random hostile values planted at random fields never reach a reason,
a position, a record id or a source pointer, and every outcome is a valid canonical record or a dead
letter with a defined reason code.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infra.local.feed_encoding import encode_unit
from infra.local.reference import reference_data
from infra.local.static_keys import static_protectors
from schemas import validator
from schemas.contracts import load_contracts
from tests.unit import feed_samples
from tools.checks.leak_scan import LeakScanner, Needles
from udfs.dead_letters import DeadLetter
from udfs.ingest import Accepted, IngestStage
from udfs.phi.protect import seal_dead_letter
from udfs.reasons import REASONS

SEED = 31
NOW = datetime(2026, 11, 22, tzinfo=UTC)
CONTRACTS = load_contracts()
PROTECTORS = static_protectors()
STAGE = IngestStage(CONTRACTS, PROTECTORS, reference_data(SEED))
FEEDS = sorted(CONTRACTS)
_KEYS = next(iter(PROTECTORS.values())).keys
_CANONICAL_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _record(feed: str, seed: int = SEED) -> dict[str, Any]:
    return feed_samples.record(CONTRACTS[feed], seed)


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))
    elif isinstance(node, str):
        yield path, node


def _set(record: dict[str, Any], path: tuple[Any, ...], value: str) -> None:
    node: Any = record
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def _encodes(feed: str, record: dict[str, Any]) -> bytes | None:
    try:
        return encode_unit(CONTRACTS[feed], [orjson.dumps(record)])
    except (ValueError, KeyError, TypeError, ArithmeticError):  # the format cannot carry this value there
        return None


def _letters(feed: str, unit: bytes) -> tuple[list[Accepted], list[DeadLetter]]:
    """Run the stage on one unit and build each refusal's dead letter exactly as the ingest operator does."""
    source = feed_samples.source(CONTRACTS[feed])
    accepted: list[Accepted] = []
    letters: list[DeadLetter] = []
    for outcome in STAGE.process(unit, source, 1_750_000_000_000, NOW):
        if isinstance(outcome, Accepted):
            accepted.append(outcome)
            continue
        assert outcome.error.reason_code in REASONS
        letters.append(DeadLetter.from_error(
            outcome.error, unit, source, outcome.record_id, 1_750_000_000_000,
            lambda f, i, d: seal_dead_letter(_KEYS, f, i, d), outcome.position, outcome.raw_sha256,
            None if outcome.record is None else orjson.dumps(outcome.record)))
    return accepted, letters


def _phi_values(record: dict[str, Any], record_type: str) -> list[str]:
    """The record's values that its PHI policy does not leave in the clear."""
    policy = next(iter(PROTECTORS.values())).policy
    out = []
    for path, value in _leaves(record):
        dotted = ".".join(f"{p}" if isinstance(p, str) else "[]" for p in path).replace(".[]", "[]")
        try:
            rule = policy.rule(record_type, dotted)
        except (KeyError, ValueError):
            continue
        if rule.action != "clear" and len(value) >= 5:
            out.append(value)
    return out


def _all_phi(feed: str) -> tuple[dict[str, Any], list[str]]:
    """The feed's record with every field it can carry replaced by a PHI-shaped value; and those values."""
    record = _record(feed)
    planted: list[str] = []
    for n, (path, _value) in enumerate(list(_leaves(record))):
        for value in (f"pat.{n:03d}.quorvath@example.invalid", f"MRN{90_000_000 + n}"):
            trial = copy.deepcopy(record)
            _set(trial, path, value)
            if _encodes(feed, trial) is not None:
                record = trial
                planted.append(value)
                break
    return record, planted


def _scan(letters: list[DeadLetter], needles: list[str]) -> list[Any]:
    scanner = LeakScanner(Needles(needles))
    found = []
    for letter in letters:
        found += list(scanner.scan_text(f"dead letter {letter.dead_letter_id}", letter.to_json()))
    return found


# Ways to refuse one record, each at another stage; every one keeps the record decodable.
def _hostile_name(record: dict[str, Any]) -> None:
    for path, value in _leaves(record):
        if path[-1] in ("first_name", "unit"):  # a device event has no name: its care unit is a code
            _set(record, path, "=" + value)


def _future_dates(record: dict[str, Any]) -> None:
    for path, value in _leaves(record):
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            _set(record, path, "2099-01-01")
        elif path[-1] == "event_time":  # a reading taken after it was sent
            _set(record, path, "2099-01-01T00:00:00Z")


def _phi_record_id(record: dict[str, Any]) -> None:
    record["record_id"] = "maria.quorvath@example.invalid"


REFUSALS = {"hygiene": _hostile_name, "rules": _future_dates, "record_id": _phi_record_id}


@pytest.mark.parametrize("feed", FEEDS)
def test_a_record_whose_every_field_holds_phi_leaves_no_value_in_its_dead_letters(feed: str) -> None:
    record, planted = _all_phi(feed)
    assert len(planted) >= 5, "the format carries PHI-shaped values in several fields"
    unit = _encodes(feed, record)
    assert unit is not None
    accepted, letters = _letters(feed, unit)
    assert letters and not accepted  # e-mail addresses in dates and amounts cannot pass
    assert _scan(letters, planted + _phi_values(_record(feed), CONTRACTS[feed].record_type)) == []


@pytest.mark.parametrize("how", sorted(REFUSALS))
@pytest.mark.parametrize("feed", FEEDS)
def test_each_refused_path_leaves_no_phi_in_the_dead_letter(feed: str, how: str) -> None:
    record = _record(feed)
    phi = _phi_values(record, CONTRACTS[feed].record_type)
    REFUSALS[how](record)
    unit = _encodes(feed, record)
    assert unit is not None
    accepted, letters = _letters(feed, unit)
    if how == "record_id" and letters == []:
        # Only formats whose records carry their own id can carry a bad one; the others derive it.
        assert CONTRACTS[feed].format != "json"
        return
    assert letters and not accepted, how
    assert _scan(letters, [*phi, "maria.quorvath@example.invalid"]) == []
    for letter in letters:
        assert letter.record_id is None or _CANONICAL_ID.fullmatch(letter.record_id) \
            or letter.record_id.startswith("digest:")


def test_a_phi_record_id_becomes_a_keyed_digest_and_a_canonical_one_stays() -> None:
    record = _record("hospital_a_claims")
    _hostile_name(record)
    canonical_id = record["record_id"]
    _, (kept,) = _letters("hospital_a_claims", orjson.dumps(record))
    assert kept.record_id == canonical_id
    record["record_id"] = "MRN00912837"
    _, (digested,) = _letters("hospital_a_claims", orjson.dumps(record))
    assert digested.record_id is not None and digested.record_id.startswith("digest:")
    assert "00912837" not in digested.to_json()
    _, (again,) = _letters("hospital_a_claims", orjson.dumps(record))
    assert again.record_id == digested.record_id  # deterministic: an operator holding the MRN can find it


def test_truncated_units_refused_whole_leave_no_phi_in_the_dead_letter() -> None:
    for feed in FEEDS:
        record = _record(feed)
        unit = _encodes(feed, record)
        assert unit is not None
        _, letters = _letters(feed, unit[: len(unit) * 2 // 3])
        assert _scan(letters, _phi_values(record, CONTRACTS[feed].record_type)) == [], feed


# --- the property: hostile values planted anywhere never reach a reason --------------------------

MARKER = st.text("bcdfghjkmnpqrstvwxz", min_size=9, max_size=14).map(lambda s: "Zq" + s)
DECORATION = st.sampled_from(["{}", "={}", "@{}", "+{}(A1)", "{}\x00", "\u202e{}", "{}\u200b", "'{}'", "\t{}",
                              "{}\n{}", "{} {}@example.invalid", "{}" * 40])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed=st.sampled_from(FEEDS), picks=st.lists(st.tuples(st.integers(0, 10**6), MARKER, DECORATION),
                                                   min_size=1, max_size=6))
def test_planted_values_never_reach_a_reason_and_every_outcome_is_valid_or_a_reasoned_refusal(
        feed: str, picks: list[tuple[int, str, str]]) -> None:
    record = _record(feed)
    leaves = list(_leaves(record))
    markers = []
    for where, marker, decoration in picks:
        path, _ = leaves[where % len(leaves)]
        _set(record, path, decoration.replace("{}", marker))
        markers.append(marker)
    unit = _encodes(feed, record)
    assume(unit is not None)
    assert unit is not None
    accepted, letters = _letters(feed, unit)
    for letter in letters:
        shown = orjson.dumps([letter.detail, letter.record_id, letter.source, letter.stage]).decode()
        assert not any(m in shown or m.lower() in shown.lower() for m in markers), letter.reason_code
    contract = CONTRACTS[feed]
    for outcome in accepted:
        kept = PROTECTORS[contract.phi_policy].open_record(outcome.sealed, feed, outcome.record_id)
        assert not list(validator(contract.record_type).iter_errors(kept))

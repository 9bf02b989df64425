"""The synthetic feed generator: sizes, determinism, validity, invalid kinds, duplicates, exact money."""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from faker.providers.person.en_US import Provider as EnUsNames

from infra.local.synthetic import (
    DEFAULT_FEEDS,
    INVALID_KINDS,
    Feed,
    Generated,
    Mix,
    _build_pools,
    generate,
    write_ground_truth,
)
from schemas import validator
from udfs.dead_letters import Rejected
from udfs.hygiene import clean
from udfs.npi import is_valid_npi

N = 3000


@pytest.fixture(scope="module")
def batch() -> list[Generated]:
    return list(generate(N, seed=42, duplicate_rate=0.05, invalid_rate=0.06))


@pytest.fixture(scope="module")
def valid(batch: list[Generated]) -> list[tuple[Generated, dict[str, Any]]]:
    return [(g, orjson.loads(g.payload)) for g in batch if g.expect == "valid"]


def test_valid_records_measure_4_to_12_kib_and_spread(valid: list[tuple[Generated, dict[str, Any]]]) -> None:
    for record_type in ("claim", "payment", "eligibility"):
        sizes = sorted(len(g.payload) for g, _ in valid if g.record_type == record_type)
        assert 4096 <= sizes[0] and sizes[-1] <= 12288, record_type
        # Spread across the range, not bunched at one end.
        assert sizes[len(sizes) // 10] < 5500 and sizes[9 * len(sizes) // 10] > 11000, record_type


def test_size_is_a_parameter_down_to_1_kib() -> None:
    sizes = [len(g.payload) for g in generate(600, seed=3, size_kb=(1, 1), invalid_rate=0) if g.expect == "valid"]
    assert max(sizes) <= 1024 and min(sizes) >= 1000


def test_same_seed_same_bytes_other_seed_other_bytes(batch: list[Generated]) -> None:
    again = generate(N, seed=42, duplicate_rate=0.05, invalid_rate=0.06)
    assert list(itertools.islice(again, 1000)) == batch[:1000]
    assert [g.payload for g in generate(50, seed=43)] != [g.payload for g in batch[:50]]


def test_valid_records_pass_their_schema_with_format_checks(valid: list[tuple[Generated, dict[str, Any]]]) -> None:
    # jsonschema needs ~5 ms for a 8 KiB record, so a spread-out sample of 300 keeps this test quick.
    sample = valid[:: max(1, len(valid) // 300)]
    assert {g.record_type for g, _ in sample} == {"claim", "payment", "eligibility"}
    for g, record in sample:
        errors = [e.message for e in validator(g.record_type).iter_errors(record)]
        assert errors == [], (g.record_id, errors[:3])
        assert (record["record_id"], record["record_type"], record["feed"]) == (g.record_id, g.record_type, g.feed)


def test_every_invalid_kind_occurs_and_is_rejected(batch: list[Generated]) -> None:
    seen = collections.Counter()
    for g in (g for g in batch if g.expect == "invalid"):
        assert g.invalid_kind in INVALID_KINDS and not g.is_duplicate
        seen[g.invalid_kind] += 1
        if g.invalid_kind == "malformed_json":
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(g.payload)
            continue
        doc = orjson.loads(g.payload)
        if g.invalid_kind == "not_an_object":
            assert not isinstance(doc, dict)
            continue
        assert doc["record_id"] == g.record_id  # the dead letter stays keyed by its id
        assert not _acceptable(g.record_type, doc), g.invalid_kind
    assert set(seen) == set(INVALID_KINDS)


def test_each_kind_on_request_for_each_record_type() -> None:
    for kind in INVALID_KINDS:
        for g in generate(60, seed=9, invalid_rate=1.0, duplicate_rate=0.0, invalid_kinds=[kind], size_kb=(1, 2)):
            assert g.invalid_kind == kind and g.expect == "invalid"
            try:
                doc = orjson.loads(g.payload)
            except orjson.JSONDecodeError:
                assert kind == "malformed_json"
                continue
            assert not (isinstance(doc, dict) and _acceptable(g.record_type, doc)), (kind, g.record_type)


def _acceptable(record_type: str, doc: dict[str, Any]) -> bool:
    """Passes the hygiene step and the canonical schema (hostile text is schema-valid, hygiene refuses it)."""
    try:
        clean(copy.deepcopy(doc), record_type)
    except Rejected:
        return False
    return bool(validator(record_type).is_valid(doc))


def test_duplicates_are_exact_resends_of_earlier_valid_records(batch: list[Generated]) -> None:
    first_seen: dict[str, Generated] = {}
    dups = 0
    for g in batch:
        if g.is_duplicate:
            dups += 1
            original = first_seen[g.record_id]  # KeyError if it was never sent before
            assert (g.payload, g.feed, g.expect) == (original.payload, original.feed, "valid")
        else:
            assert g.record_id not in first_seen  # ids are unique apart from re-sends
            first_seen[g.record_id] = g
    assert 0.035 * N < dups < 0.065 * N


def test_money_is_exact_decimal_strings_and_totals_add_up(valid: list[tuple[Generated, dict[str, Any]]]) -> None:
    def walk(node: Any) -> None:
        assert not isinstance(node, float)
        for child in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
            walk(child)

    def dec(items: list[dict[str, Any]], key: str) -> Decimal:
        return sum((Decimal(x[key]) for x in items), Decimal(0))

    for g, r in valid:
        walk(r)  # no float anywhere, so none in a money field
        if g.record_type == "claim":
            assert Decimal(r["total_charge"]) == dec(r["service_lines"], "charge")
            assert r["service_date_from"] <= r["service_date_to"]
        elif g.record_type == "payment":
            assert Decimal(r["payment_amount"]) == dec(r["claims"], "paid")
            for c in r["claims"]:
                assert Decimal(c["charge"]) == dec(c["lines"], "charge")
                assert Decimal(c["paid"]) == dec(c["lines"], "paid")
                pr = [a for x in c["lines"] for a in x["adjustments"] if a["group_code"] == "PR"]
                assert Decimal(c["patient_responsibility"]) == dec(pr, "amount")
                for line in c["lines"]:
                    assert Decimal(line["charge"]) == Decimal(line["paid"]) + dec(line["adjustments"], "amount")


def test_identifiers_look_real_but_are_synthetic(valid: list[tuple[Generated, dict[str, Any]]]) -> None:
    for g, r in valid:
        if g.record_type == "claim":
            assert is_valid_npi(r["billing_provider"]["npi"])
            assert r["subscriber"]["phone"][5:10] == "55501"  # 555-0100..0199: fictional numbers
        elif g.record_type == "payment":
            assert is_valid_npi(r["payee"]["npi"])
        else:
            ssn = r["member"]["ssn"]
            assert ssn[0] == "9" and 1 <= int(ssn[3:5]) <= 49  # never an SSN, never an ITIN


def test_people_come_from_seeded_faker_pools() -> None:
    pools = _build_pools(42)
    assert pools is _build_pools(42)
    assert pools.people == _build_pools.__wrapped__(42).people  # rebuilt from scratch: same people
    assert pools.people != _build_pools(7).people
    firsts = set(EnUsNames.first_names_male) | set(EnUsNames.first_names_female)
    lasts = set(EnUsNames.last_names)
    assert all(p["first_name"] in firsts and p["last_name"] in lasts for p in pools.people)


def test_payloads_fit_one_jsonl_line_and_hash(batch: list[Generated]) -> None:
    for g in batch:
        assert b"\n" not in g.payload and b"\r" not in g.payload
        assert g.payload_sha256 == hashlib.sha256(g.payload).hexdigest()


def test_feeds_and_mix(batch: list[Generated]) -> None:
    by_name = {f.name: f for f in DEFAULT_FEEDS}
    counts = collections.Counter(g.record_type for g in batch if not g.is_duplicate)
    for g in batch:
        assert (g.record_type, g.transport) == (by_name[g.feed].record_type, by_name[g.feed].transport)
    assert counts["claim"] > counts["payment"] > counts["eligibility"] > 0
    only = [Feed("lab_x_claims", "claim", "landing")]
    out = list(generate(20, seed=1, mix=Mix(1, 0, 0), feeds=only))
    assert {(g.feed, g.record_type) for g in out} == {("lab_x_claims", "claim")}
    with pytest.raises(ValueError, match="payment"):
        next(generate(1, seed=1, feeds=only))  # the default mix needs a payment feed


def test_ground_truth_manifest_holds_ids_not_phi(batch: list[Generated], tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    assert write_ground_truth(path, batch) == N
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(rows) == N
    assert set(rows[0]) == {"record_id", "record_type", "feed", "expect", "invalid_kind", "is_duplicate",
                            "payload_sha256"}
    assert rows[5]["record_id"] == batch[5].record_id
    assert b"first_name" not in path.read_bytes()

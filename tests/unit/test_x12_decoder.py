"""X12 decoder: corpus samples, round trips through the synthetic encoder, schema fit, reason codes, fuzzing."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.encoders.x12 import encode_834, encode_835, encode_837
from infra.local.synthetic import Feed, Mix, generate
from schemas import SCHEMA_VERSION, validator
from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.decoders.x12 import TRANSACTIONS, decode
from udfs.reasons import REASONS

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "x12"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
IDS = {"sender_id": "MEDISTREAMSYN", "receiver_id": "MEDISTREAMRCV"}
FEEDS = (Feed("x_claims", "claim", "kafka"), Feed("x_payments", "payment", "kafka"),
         Feed("x_eligibility", "eligibility", "kafka"))
ENVELOPE = {"record_id": "01JWQTF40J2G47P2NAKF4HRQRG", "feed": "x12_test", "schema_version": SCHEMA_VERSION}


def synthetic(record_type: str, n: int, seed: int, size_kb: tuple[float, float] = (1, 3)) -> list[dict[str, Any]]:
    """Valid synthetic records of one type, as canonical dicts."""
    mix = Mix(**{rt: float(rt == record_type) for rt in ("claim", "payment", "eligibility")})
    return [orjson.loads(g.payload) for g in generate(n, seed=seed, mix=mix, feeds=FEEDS, invalid_rate=0,
                                                       duplicate_rate=0, size_kb=size_kb)]


def outcome(payload: bytes, transaction: str) -> tuple[str, str] | list[list[str | None]]:
    """("rejected", code) for a whole-unit rejection, else [position, code or None] per item."""
    try:
        items = list(decode(payload, {"transaction": transaction}))
    except Rejected as err:
        return ("rejected", err.reason_code)
    return [[i.position, i.error.reason_code if i.error else None] for i in items]


def records(payload: bytes, transaction: str) -> list[dict[str, Any]]:
    """Decode and insist that every item decoded."""
    items = list(decode(payload, {"transaction": transaction}))
    assert [i.error for i in items if i.error] == []
    return [i.record for i in items if i.record is not None]


def _centiseconds(rfc3339: str) -> datetime:
    t = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    return t.replace(microsecond=t.microsecond // 10000 * 10000)


# --- corpus -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_sample_decodes_as_expected(name: str) -> None:
    entry = EXPECTED[name]
    want = ("rejected", entry["rejected"]) if "rejected" in entry else entry["items"]
    assert outcome((CORPUS / name).read_bytes(), entry["transaction"]) == want


def test_corpus_holds_every_sample_and_only_those() -> None:
    # guide_*.edi are the guide-shaped corpus, built and checked by tests/unit/test_x12_guide_corpus.py.
    assert {p.name for p in CORPUS.glob("*.edi") if not p.name.startswith("guide_")} == set(EXPECTED)


def test_every_x12_reason_code_is_triggered_by_the_corpus() -> None:
    seen = set()
    for entry in EXPECTED.values():
        seen.add(entry.get("rejected"))
        seen.update(code for _, code in entry.get("items", []))
    defined = {code for code in REASONS if code.startswith("x12_")}
    assert defined == seen - {None}
    assert all(REASONS[c].category in ("decode", "envelope", "validation") for c in defined)


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if "items" in e))
def test_corpus_records_fit_their_canonical_schema_once_the_pipeline_adds_its_envelope(name: str) -> None:
    for item in decode((CORPUS / name).read_bytes(), {"transaction": EXPECTED[name]["transaction"]}):
        if item.record is not None:
            record = {**item.record, **ENVELOPE}
            errors = [e.message for e in validator(record["record_type"]).iter_errors(record)]
            assert errors == [], (item.position, errors)


_ENVELOPE_SEGMENTS = ("ISA", "GS", "ST", "SE", "GE", "IEA")


@pytest.mark.parametrize("name", sorted(n for n, e in EXPECTED.items() if "items" in e))
def test_error_details_name_positions_never_values(name: str) -> None:
    payload = (CORPUS / name).read_bytes().decode()
    # Every element of 5+ characters outside the envelope (names, streets, dates, member ids, NPIs,
    # amounts, notes) and each of its components: none may reach a dead letter's detail.
    values = {part for seg in re.split(r"[~\r\n]+", payload) if not seg.startswith(_ENVELOPE_SEGMENTS)
              for element in re.split(r"[*|]", seg)[1:] for part in {element, *re.split(r"[:>]", element)}
              if len(part) >= 5}
    errors = [i.error for i in decode(payload.encode(), {"transaction": EXPECTED[name]["transaction"]}) if i.error]
    assert values and all(not [v for v in values if v in err.detail] for err in errors)


def test_decode_rejects_a_broken_envelope_before_yielding_anything() -> None:
    payload = (CORPUS / "bad_iea_control.edi").read_bytes()
    with pytest.raises(Rejected):
        decode(payload, {"transaction": "837P"})  # raised at the call, not on first iteration


def test_unknown_transaction_option_is_a_contract_error_not_a_dead_letter() -> None:
    with pytest.raises(ValueError, match="transaction"):
        decode(b"ISA", {"transaction": "270"})
    with pytest.raises(ValueError, match="timezone"):
        decode(b"ISA", {"transaction": "835", "timezone": "Mars/Olympus"})


# --- mapping details the corpus does not show --------------------------------------------------------


def _recount(text: str) -> bytes:
    """Recompute every SE01 after editing a set's segments, so only the edit is under test."""
    segs = text.split("~")
    start = 0
    for i, seg in enumerate(segs):
        body = seg.strip()
        if body.startswith("ST*"):
            start = i
        elif body.startswith("SE*"):
            parts = body.split("*")
            segs[i] = seg.replace(body, "*".join([parts[0], str(i - start + 1), *parts[2:]]))
    return "~".join(segs).encode()


def test_835_provider_level_adjustments_balance_the_payment() -> None:
    text = (CORPUS / "835_payment.edi").read_text()
    amount = re.search(r"BPR\*I\*([0-9.]+)", text)
    assert amount
    less = str(Decimal(amount.group(1)) - Decimal("10.00"))
    edited = text.replace(f"BPR*I*{amount.group(1)}", f"BPR*I*{less}")
    edited = edited.replace("\nSE*", "\nPLB*1999999999*20251231*WO:X*10.00~\nSE*")
    (item,) = decode(_recount(edited), {"transaction": "835"})
    assert item.record and item.record["payment_amount"] == less
    (item,) = decode(_recount(edited.replace("*10.00~", "*9.00~")), {"transaction": "835"})
    assert item.error and item.error.reason_code == "x12_amount_unbalanced"


def test_835_claim_level_payments_decode_without_service_lines() -> None:
    text = (CORPUS / "835_payment.edi").read_text()
    # Claim-level adjudication only: no SVC loops (their CAS segments now read as claim-level ones),
    # which the 5010 guide allows (2110 is situational).
    kept = [seg for seg in text.split("~\n") if not seg.startswith(("SVC", "DTM", "REF*6R"))]
    (item,) = decode(_recount("~\n".join(kept)), {"transaction": "835"})
    assert item.record is not None and all(c["lines"] == [] for c in item.record["claims"])


def test_hl_child_naming_a_closed_parent_fails_only_its_claims() -> None:
    text = (CORPUS / "837p_two_claims.edi").read_text()
    assert "HL*4*3*22*1~" in text
    got = outcome(text.replace("HL*4*3*22*1~", "HL*4*1*22*1~").encode(), "837P")
    assert got == [["ST 0001 CLM 1", None], ["ST 0001 CLM 2", "x12_bad_element"]]


def test_patient_without_an_id_of_its_own_takes_the_subscribers() -> None:
    text = (CORPUS / "837p_two_claims.edi").read_text()
    edited = re.sub(r"REF\*1W\*[^~]*~\n", "", text)
    records_ = records(_recount(edited), "837P")
    assert records_[1]["patient"]["member_id"] == records_[1]["subscriber"]["member_id"]


def test_icd9_diagnoses_are_bad_elements() -> None:
    text = (CORPUS / "837p_two_claims.edi").read_text()
    got = outcome(text.replace("HI*ABK:", "HI*BK:", 1).encode(), "837P")
    assert got == [["ST 0001 CLM 1", "x12_bad_element"], ["ST 0001 CLM 2", None]]


# --- sent_at and time zones ---------------------------------------------------------------------------


def test_sent_at_comes_from_bht_in_the_contract_timezone() -> None:
    payload = (CORPUS / "837p_two_claims.edi").read_bytes()
    utc = next(decode(payload, {"transaction": "837P"})).record
    ny = next(decode(payload, {"transaction": "837P", "timezone": "America/New_York"})).record
    assert utc and ny
    assert utc["sent_at"].endswith("Z") and ny["sent_at"].endswith("-04:00")  # June: EDT
    assert utc["sent_at"][:19] == ny["sent_at"][:19]  # same wall-clock digits, another instant


def test_834_bgn05_time_zone_code_wins_over_the_option() -> None:
    payload = (CORPUS / "834_family.edi").read_bytes()
    assert b"*UT***2" in payload
    record = next(decode(payload, {"transaction": "834", "timezone": "America/Chicago"})).record
    assert record and record["sent_at"].endswith("Z")
    central = payload.replace(b"*UT***2", b"*CD***2")
    record = next(decode(central, {"transaction": "834"})).record
    assert record and record["sent_at"].endswith("-05:00")


# --- round trips through the synthetic encoder --------------------------------------------------------


def _without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in copy.deepcopy(record).items() if k not in keys}


def claim_projection(r: dict[str, Any], kind: str) -> dict[str, Any]:
    """What an 837 carries of a canonical claim (see infra/local/encoders/x12.py)."""
    out = _without(r, "record_id", "feed", "schema_version", "sent_at", "received_at", "notes")
    out["claim_kind"] = "professional" if kind == "P" else "institutional"
    notes = r.get("notes", [])[: 1 if kind == "P" else 10]
    if notes:
        out["notes"] = notes
    for role in ("subscriber", "patient"):
        if role in out:
            out[role].pop("phone", None)
    if "patient" not in out:
        out["subscriber"].setdefault("relationship_code", "18")
    lines = out["service_lines"]
    if kind == "P":
        out["service_date_from"] = min(x["service_date"] for x in lines)
        out["service_date_to"] = max(x["service_date"] for x in lines)
    else:
        for x in lines:
            x["diagnosis_pointers"] = [1]
            x.pop("place_of_service", None)
            x.setdefault("revenue_code", "0510")  # SV201 is required; the encoder's placeholder
    return out


@pytest.mark.parametrize(("kind", "per_transaction"), [("P", 1), ("P", 25), ("I", 1), ("I", 25)])
def test_837_round_trip_reproduces_every_field_x12_carries(kind: str, per_transaction: int) -> None:
    claims = synthetic("claim", 60, seed=21)
    payload = encode_837(claims, kind, control_number=7, per_transaction=per_transaction, **IDS)  # type: ignore[arg-type]
    decoded = records(payload, f"837{kind}")
    assert len(decoded) == len(claims)
    for original, got in zip(claims, decoded, strict=True):
        assert _without(got, "sent_at") == claim_projection(original, kind)
        assert got["record_type"] == "claim"
        if per_transaction == 1:
            assert _centiseconds(got["sent_at"]) == _centiseconds(original["sent_at"])
        errors = [e.message for e in validator("claim").iter_errors({**got, **ENVELOPE})]
        assert errors == []


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata"])
def test_round_trip_keeps_the_instant_in_the_contract_timezone(tz: str) -> None:
    claims = synthetic("claim", 5, seed=21)
    decoded = list(decode(encode_837(claims, "P", control_number=4, timezone=tz, **IDS),
                          {"transaction": "837P", "timezone": tz}))
    for original, item in zip(claims, decoded, strict=True):
        assert item.record and not item.record["sent_at"].endswith("Z")
        assert _centiseconds(item.record["sent_at"]) == _centiseconds(original["sent_at"])


def test_835_round_trip_reproduces_every_field_x12_carries() -> None:
    payments = synthetic("payment", 40, seed=21)
    decoded = records(encode_835(payments, control_number=8, **IDS), "835")
    assert len(decoded) == len(payments)
    for original, got in zip(payments, decoded, strict=True):
        assert got["payment_id"].endswith("-" + original["trace_number"])  # TRN03-TRN02
        want = _without(original, "record_id", "feed", "schema_version", "sent_at", "notes", "payment_id")
        assert _without(got, "sent_at", "payment_id") == want
        # One GS per interchange: every payment carries the group's time, the first payment's.
        assert _centiseconds(got["sent_at"]) == _centiseconds(payments[0]["sent_at"])
        assert [e.message for e in validator("payment").iter_errors({**got, **ENVELOPE})] == []


def eligibility_projection(r: dict[str, Any]) -> list[dict[str, Any]]:
    """An 834 carries the member and, as INS loops of their own, each dependent."""
    main = _without(r, "record_id", "feed", "schema_version", "sent_at", "notes")
    main["record_type"] = "eligibility"
    out = [main]
    for d in r["dependents"]:
        member = {k: v for k, v in d.items() if k != "relationship"} | {"address": r["member"]["address"]}
        out.append({"record_type": "eligibility", "member": member, "subscriber_id": r["subscriber_id"],
                    "relationship": d["relationship"], "plan": r["plan"], "coverage": r["coverage"],
                    "dependents": []})
    return out


@pytest.mark.parametrize("per_transaction", [1, 30])
def test_834_round_trip_reproduces_members_and_dependents(per_transaction: int) -> None:
    members = synthetic("eligibility", 60, seed=21)
    assert any(m["dependents"] for m in members) and any(m["relationship"] != "18" for m in members)
    decoded = records(encode_834(members, control_number=9, per_transaction=per_transaction, **IDS), "834")
    want = [p for m in members for p in eligibility_projection(m)]
    assert [_without(d, "sent_at") for d in decoded] == want
    for got in decoded:
        assert [e.message for e in validator("eligibility").iter_errors({**got, **ENVELOPE})] == []


def test_money_stays_exact_decimal_text() -> None:
    payments = synthetic("payment", 10, seed=21, size_kb=(4, 8))
    for original, got in zip(payments, records(encode_835(payments, control_number=3, **IDS), "835"), strict=True):
        assert got["payment_amount"] == original["payment_amount"]
        assert all(re.fullmatch(r"-?\d+\.\d\d", a["amount"]) for c in got["claims"] for x in c["lines"]
                   for a in x["adjustments"])


# --- fuzzing: never an exception but Rejected, never a hang ----------------------------------------------

VALID = {name: (CORPUS / name).read_bytes() for name, e in EXPECTED.items()
         if "items" in e and all(code is None for _, code in e["items"])}


def survive(payload: bytes, transaction: str) -> list[Item]:
    """Decode fully; only Rejected may escape, and every item is a record or a Rejected."""
    try:
        items = list(decode(payload, {"transaction": transaction}))
    except Rejected as err:
        assert err.reason_code in REASONS
        return []
    for item in items:
        assert (item.record is None) != (item.error is None)
        assert item.error is None or isinstance(item.error, Rejected)
    return items


@pytest.mark.timeout(120)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(sorted(TRANSACTIONS)))
def test_random_bytes_are_rejected_cleanly(payload: bytes, transaction: str) -> None:
    survive(payload, transaction)
    survive(b"ISA" + payload, transaction)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["837p_two_claims.edi", "835_payment.edi", "834_family.edi"])
def test_truncation_at_every_position_is_rejected_cleanly(name: str) -> None:
    payload = VALID[name]
    transaction = EXPECTED[name]["transaction"]
    for cut in range(len(payload)):
        assert survive(payload[:cut], transaction) == [] or payload[cut:].strip() == b""


_DELIMS = st.sampled_from(list(b"*~:^|>\n\r "))


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**6), _DELIMS), min_size=1, max_size=6))
def test_mutated_delimiters_never_crash(name: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID[name])
    for at, byte in edits:
        data[at % len(data)] = byte
    survive(bytes(data), EXPECTED[name]["transaction"])


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.integers(0, 10**6), st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
def test_invalid_utf8_is_not_x12(name: str, at: int, junk: bytes) -> None:
    data = VALID[name]
    at %= len(data)
    with pytest.raises(Rejected) as err:
        list(decode(data[:at] + junk + data[at:], {"transaction": EXPECTED[name]["transaction"]}))
    assert err.value.reason_code == "x12_not_x12"


@pytest.mark.timeout(120)
@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.integers(0, 10**6), st.sampled_from([10**5, 10**6]),
       st.sampled_from(["A", "9", ".", "-", "\u00e9", "\u0663"]))
def test_huge_elements_decode_in_linear_time(name: str, at: int, size: int, char: str) -> None:
    text = VALID[name].decode()
    # Grow one existing element in place (after an element separator), so the envelope stays intact.
    seps = [m.end() for m in re.finditer(r"[*|]", text)][20:]
    cut = seps[at % len(seps)]
    items = survive((text[:cut] + char * size + text[cut:]).encode(), EXPECTED[name]["transaction"])
    for item in items:
        assert item.error is None or len(item.error.detail) < 300

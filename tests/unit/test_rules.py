"""Data-quality rules on schema-valid records: every rule fires on its own, details carry paths, never values."""

from __future__ import annotations

import copy
import functools
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastjsonschema import JsonSchemaValueException
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from infra.local.synthetic import generate
from schemas import RECORD_TYPES, fast_validator, load_schema
from tests.unit.feed_samples import decoded_records, mutate
from udfs import rules
from udfs.dead_letters import Rejected
from udfs.reasons import REASONS
from udfs.rules import RULES, validate
from udfs.standardize import StandardizeOptions, standardize

NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
Record = dict[str, Any]


@functools.cache
def _synthetic() -> list[tuple[str, Record]]:
    return [(g.record_type, orjson.loads(g.payload)) for g in generate(300, seed=1) if g.expect == "valid"]


@functools.cache
def _samples() -> dict[str, Record]:
    # Without their notes (padding the rules never read), so a failing example prints small.
    picks = {
        "claim": next(r for t, r in _synthetic() if t == "claim" and "patient" in r and "received_at" in r
                      and "rendering_provider" in r and len(r["service_lines"]) > 1),
        "payment": next(r for t, r in _synthetic() if t == "payment" and len(r["claims"]) > 1
                        and len(r["claims"][0]["lines"]) > 1),
        "eligibility": next(r for t, r in _synthetic() if t == "eligibility" and r["dependents"]),
        "device_event": next(r for r in decoded_records("device_event", 40, 3)
                             if r["alarms"] and r["vitals"]["spo2_pct"] <= 100),
    }
    return {t: {k: v for k, v in r.items() if k != "notes"} for t, r in picks.items()}


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[str, Record]]:
    """Every valid record of a 300-record synthetic run, as (record_type, record)."""
    return _synthetic()


@pytest.fixture(scope="module")
def samples() -> dict[str, Record]:
    """One rich valid record per type: a claim with a patient and two lines, a payment, a family enrollment."""
    return _samples()


def _schema_keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from node.get("properties", {})
        for value in node.values():
            yield from _schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schema_keys(value)


SCHEMA_KEYS = {k for rt in RECORD_TYPES for k in _schema_keys(load_schema(rt))}
_PATH = r"\$(?:\.[a-z0-9_]+|\[[0-9]+\])*"
_ENTRY = re.compile(rf"(rule_[a-z0-9_]+) at {_PATH}(?:, {_PATH})*(?: \(\+[0-9]+ more\))?")


def assert_phi_free(detail: str) -> list[str]:
    """Check a detail is only rule codes and schema JSON paths; return its codes in order."""
    codes = []
    for entry in detail.split("; "):
        m = _ENTRY.fullmatch(entry)
        assert m, entry
        codes.append(m[1])
        for key in re.findall(r"\.([a-z0-9_]+)", entry):
            assert key in SCHEMA_KEYS, key
    return codes


def rejected(record: Record, record_type: str, now: datetime = NOW) -> Rejected:
    with pytest.raises(Rejected) as info:
        validate(record, record_type, now=now)
    assert_phi_free(info.value.detail)
    return info.value


def schema_valid(record: Record, record_type: str) -> bool:
    try:
        fast_validator(record_type)(record)
    except JsonSchemaValueException:
        return False
    return True


# --- valid data passes ------------------------------------------------------------------------

def test_valid_synthetic_records_pass_standardize_and_rules(synthetic: list[tuple[str, Record]]) -> None:
    assert len(synthetic) > 250
    for record_type, record in synthetic:
        validate(standardize(record, record_type, StandardizeOptions()), record_type, now=NOW)


# --- each rule on its own ---------------------------------------------------------------------

def _set(path: tuple[str | int, ...], value: Any) -> Callable[[Record], None]:
    def change(record: Record) -> None:
        node = record
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


def _bad_check_digit(npi: str) -> str:
    return npi[:9] + str((int(npi[9]) + 1) % 10)


def _shift_line_paid(record: Record) -> None:
    record["claims"][0]["lines"][1]["paid"] = "777777.77"


def _claim_adjustment_unbalanced(record: Record) -> None:
    record["claims"][1]["adjustments"].append({"group_code": "OA", "reason_code": "23", "amount": "5.00"})


def _claim_total_off(record: Record) -> None:
    record["total_charge"] = "999999.99"


def _patient_elsewhere_but_missing(record: Record) -> None:
    del record["patient"]
    record["subscriber"]["relationship_code"] = "01"  # the subscriber's spouse is the patient


def _sent_at_future(record: Record) -> None:
    record["sent_at"] = "2025-07-01T12:06:00Z"  # NOW + 6 min: beyond the 5 min clock-skew allowance


# (id, record_type, change, code, JSON path in the detail)
CASES: list[tuple[str, str, Callable[[Record], None], str, str]] = [
    ("vitals_pressure", "device_event", lambda r: r["vitals"].update(systolic_mmhg=80, diastolic_mmhg=80),
     "rule_vitals_conflict", "$.vitals.diastolic_mmhg"),
    ("vitals_pressure_half", "device_event", lambda r: r["vitals"].pop("diastolic_mmhg"),
     "rule_required_when", "$.vitals.diastolic_mmhg"),
    ("reading_after_send", "device_event", _set(("event_time",), "2099-01-01T00:00:00.000Z"),
     "rule_date_order", "$.event_time"),
    ("device_instant", "device_event", _set(("event_time",), "2025-06-02T24:30:00Z"), "rule_invalid_date",
     "$.event_time"),
    ("calendar_date", "claim", _set(("service_date_from",), "2025-02-30"), "rule_invalid_date", "$.service_date_from"),
    ("calendar_instant", "claim", _set(("sent_at",), "2025-06-02T25:00:00Z"), "rule_invalid_date", "$.sent_at"),
    ("billing_npi", "claim", lambda r: r["billing_provider"].update(npi=_bad_check_digit(r["billing_provider"]["npi"])),
     "rule_npi_check_digit", "$.billing_provider.npi"),
    ("payee_npi", "payment", lambda r: r["payee"].update(npi=_bad_check_digit(r["payee"]["npi"])),
     "rule_npi_check_digit", "$.payee.npi"),
    ("u_code", "claim", _set(("diagnoses", 0), "U99.9"), "rule_icd10_format", "$.diagnoses[0]"),
    ("hcpcs_letter", "claim", _set(("service_lines", 1, "procedure_code"), "W1234"),
     "rule_procedure_code_format", "$.service_lines[1].procedure_code"),
    ("remit_procedure", "payment", _set(("claims", 0, "lines", 0, "procedure_code"), "Y9999"),
     "rule_procedure_code_format", "$.claims[0].lines[0].procedure_code"),
    ("pointer", "claim", lambda r: r["service_lines"][0].update(diagnosis_pointers=[len(r["diagnoses"]) + 1]),
     "rule_pointer_out_of_range", "$.service_lines[0].diagnosis_pointers[0]"),
    ("claim_total", "claim", _claim_total_off, "rule_total_mismatch", "$.total_charge"),
    ("line_balance", "payment", _shift_line_paid, "rule_total_mismatch", "$.claims[0].lines[1].paid"),
    ("claim_balance", "payment", _claim_adjustment_unbalanced, "rule_total_mismatch", "$.claims[1].charge"),
    ("claim_paid", "payment", _set(("claims", 1, "paid"), "888888.88"), "rule_total_mismatch", "$.claims[1].paid"),
    ("payment_amount", "payment", _set(("payment_amount",), "999999.99"), "rule_total_mismatch",
     "$.payment_amount"),
    ("from_after_to", "claim", lambda r: r.update(service_date_from="2025-05-31", service_date_to="2025-05-01"),
     "rule_date_order", "$.service_date_from"),
    ("line_outside_span", "claim", _set(("service_lines", 1, "service_date"), "2024-01-01"), "rule_date_order",
     "$.service_lines[1].service_date"),
    ("service_after_sent", "payment", _set(("claims", 1, "lines", 0, "service_date"), "2025-06-20"),
     "rule_date_order", "$.claims[1].lines[0].service_date"),
    ("coverage_end", "eligibility", lambda r: r["coverage"].update(start_date="2025-05-01", end_date="2025-04-30"),
     "rule_date_order", "$.coverage.end_date"),
    ("sent_future", "claim", _sent_at_future, "rule_future_date", "$.sent_at"),
    ("birth_future", "eligibility", _set(("dependents", 0, "birth_date"), "2025-07-03"), "rule_future_date",
     "$.dependents[0].birth_date"),
    ("birth_1899", "claim", _set(("patient", "birth_date"), "1899-12-31"), "rule_birth_date_range",
     "$.patient.birth_date"),
    ("patient_missing", "claim", _patient_elsewhere_but_missing, "rule_required_when", "$.patient"),
    ("patient_is_self", "claim", _set(("patient", "relationship_code"), "18"), "rule_relationship_conflict",
     "$.patient.relationship_code"),
    ("subscriber_is_patient", "claim", _set(("subscriber", "relationship_code"), "18"),
     "rule_relationship_conflict", "$.subscriber.relationship_code"),
    ("dependent_is_self", "eligibility", _set(("dependents", 0, "relationship"), "18"),
     "rule_relationship_conflict", "$.dependents[0].relationship"),
]


@pytest.mark.parametrize(("record_type", "change", "code", "path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_rejects_a_schema_valid_record_naming_the_path_not_the_value(
        samples: dict[str, Record], record_type: str, change: Callable[[Record], None], code: str, path: str) -> None:
    record = copy.deepcopy(samples[record_type])
    validate(record, record_type, now=NOW)
    change(record)
    assert schema_valid(record, record_type), "the rule must catch what the schema lets through"
    err = rejected(record, record_type)
    assert err.reason_code == code
    paths = next(e for e in err.detail.split("; ") if e.startswith(f"{code} at ")).split(" at ")[1]
    assert path in paths.split(", ")
    for value in _changed_values(samples[record_type], record):
        assert value not in err.detail


def _changed_values(before: Any, after: Any) -> Iterator[str]:
    """The string values of `after` that differ from `before` (the offending values)."""
    if isinstance(after, dict):
        for key, value in after.items():
            yield from _changed_values(before.get(key) if isinstance(before, dict) else None, value)
    elif isinstance(after, list):
        for i, value in enumerate(after):
            yield from _changed_values(before[i] if isinstance(before, list) and i < len(before) else None, value)
    elif isinstance(after, str) and after != before:
        yield after


def test_every_rule_code_is_exercised() -> None:
    defined = {code for code, reason in REASONS.items() if code.startswith("rule_")}
    assert {c[3] for c in CASES} == defined
    assert all(REASONS[code].category == "validation" for code in defined)


@pytest.mark.parametrize("code", ["99213", "0042T", "3008F", "G0439", "A0428", "V2020", "J3301"])
def test_cpt_categories_and_hcpcs_level_ii_pass(samples: dict[str, Record], code: str) -> None:
    # 0042T and 3008F need the schema's procedure_code pattern widened before they reach this stage.
    record = copy.deepcopy(samples["claim"])
    record["service_lines"][0]["procedure_code"] = code
    validate(record, "claim", now=NOW)


@pytest.mark.parametrize("code", ["9921", "992134", "1234X", "W1234", "Z9999", "g0439", "99213 "])
def test_other_procedure_codes_fail(samples: dict[str, Record], code: str) -> None:
    record = copy.deepcopy(samples["claim"])
    record["service_lines"][0]["procedure_code"] = code
    assert rejected(record, "claim").reason_code == "rule_procedure_code_format"


@pytest.mark.parametrize(("code", "ok"), [
    ("E11.9", True), ("U07.1", True), ("U85", True), ("M1A.0110", True), ("S93.401A", True), ("Z23", True),
    ("U86", False), ("U0A.1", False), ("E11.", False), ("E119", False), ("E11.12345", False), ("1E1", False),
    ("e11.9", False),
])
def test_icd10_cm_format(samples: dict[str, Record], code: str, ok: bool) -> None:
    record = copy.deepcopy(samples["claim"])
    record["diagnoses"][0] = code
    if ok:
        validate(record, "claim", now=NOW)
    else:
        assert rejected(record, "claim").reason_code == "rule_icd10_format"


def test_service_dates_may_reach_the_day_it_already_is_in_utc_plus_14(samples: dict[str, Record]) -> None:
    record = copy.deepcopy(samples["payment"])
    record["sent_at"] = "2025-06-02T12:00:00Z"  # already 2025-06-03 02:00 on Kiritimati
    lines = [line for claim in record["claims"] for line in claim["lines"]]
    for line in lines:
        line["service_date"] = "2025-06-03"
    validate(record, "payment", now=NOW)
    lines[0]["service_date"] = "2025-06-04"
    assert rejected(record, "payment").detail == "rule_date_order at $.claims[0].lines[0].service_date"


def test_future_coverage_and_payment_dates_are_allowed(samples: dict[str, Record]) -> None:
    eligibility = copy.deepcopy(samples["eligibility"])
    eligibility["coverage"].update(start_date="2026-01-01", end_date="2026-12-31")
    validate(eligibility, "eligibility", now=NOW)
    payment = copy.deepcopy(samples["payment"])
    payment["payment_date"] = "2025-07-04"  # an EFT effective date after the 835 was sent
    validate(payment, "payment", now=NOW)


def test_claim_level_adjustments_balance_835_style(samples: dict[str, Record]) -> None:
    record = copy.deepcopy(samples["payment"])
    claim = next(c for c in record["claims"] if Decimal(c["paid"]) >= 1)
    # A claim-level reduction of 1.00 lowers the claim's paid and the payment: every equation still holds.
    claim["adjustments"].append({"group_code": "CO", "reason_code": "253", "amount": "1.00"})
    claim["paid"] = str(Decimal(claim["paid"]) - 1)
    record["payment_amount"] = str(Decimal(record["payment_amount"]) - 1)
    validate(record, "payment", now=NOW)


def test_patient_is_optional_when_the_subscriber_does_not_say(samples: dict[str, Record]) -> None:
    record = copy.deepcopy(samples["claim"])
    del record["patient"]
    validate(record, "claim", now=NOW)
    record["subscriber"]["relationship_code"] = "18"
    validate(record, "claim", now=NOW)


def test_all_failures_are_listed_and_the_first_rule_sets_the_code(samples: dict[str, Record]) -> None:
    record = copy.deepcopy(samples["claim"])
    _claim_total_off(record)
    _sent_at_future(record)
    record["billing_provider"]["npi"] = _bad_check_digit(record["billing_provider"]["npi"])
    record["rendering_provider"]["npi"] = _bad_check_digit(record["rendering_provider"]["npi"])
    err = rejected(record, "claim")
    assert err.reason_code == "rule_npi_check_digit"
    assert err.detail == ("rule_npi_check_digit at $.billing_provider.npi, $.rendering_provider.npi; "
                          "rule_total_mismatch at $.total_charge; rule_future_date at $.sent_at")


def test_unknown_record_type_and_naive_now(samples: dict[str, Record]) -> None:
    with pytest.raises(Rejected) as info:
        validate(samples["claim"], "remit", now=NOW)
    assert info.value.reason_code == "unknown_record_type"
    with pytest.raises(ValueError, match="aware"):
        validate(samples["claim"], "claim", now=NOW.replace(tzinfo=None))


def test_rules_cover_every_record_type() -> None:
    assert set(RULES) == set(RECORD_TYPES)


# --- property: random schema-valid mutations --------------------------------------------------

_DATE = st.from_regex(r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", fullmatch=True) | st.sampled_from(
    ["1899-12-31", "1900-01-01", "2025-06-01", "2025-07-02", "2999-12-31", "2024-02-29", "2025-02-29"])
_INSTANT = st.from_regex(r"[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
                         r"(Z|[+-][0-2][0-9]:[0-5][0-9])", fullmatch=True)
_MONEY = st.from_regex(r"[0-9]{1,9}\.[0-9]{2}", fullmatch=True)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "npi": st.from_regex(r"[12][0-9]{9}", fullmatch=True),
    "procedure_code": st.from_regex(r"[0-9]{5}|[A-Z][0-9]{4}", fullmatch=True),
    "diagnoses": st.from_regex(r"[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?", fullmatch=True),
    "diagnosis_pointers": st.lists(st.integers(1, 12), min_size=1, max_size=4),
    "relationship_code": st.sampled_from(["18", "01", "19", "G8"]),
    "relationship": st.sampled_from(["18", "01", "19"]),
    "amount": st.from_regex(r"-?[0-9]{1,9}\.[0-9]{2}", fullmatch=True),
    **dict.fromkeys(("sent_at", "received_at"), _INSTANT),
    **dict.fromkeys(("birth_date", "service_date", "service_date_from", "service_date_to", "payment_date",
                     "start_date", "end_date"), _DATE),
    **dict.fromkeys(("charge", "paid", "total_charge", "payment_amount", "patient_responsibility"), _MONEY),
}
_OPTIONAL = {"patient", "received_at", "rendering_provider", "end_date", "relationship_code", "dependents"}


def _sites(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(path, strategy key) of every field the mutation can replace, and "" for every optional key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _VALUES and key != "diagnoses":  # the list's items are the sites, not the list
                yield (*path, key), key
            if key in _OPTIONAL:
                yield (*path, key), ""
            if key not in ("notes", "diagnoses"):
                yield from _sites(value, (*path, key))
            elif key == "diagnoses":
                yield from (((*path, key, i), key) for i in range(len(value)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _sites(value, (*path, i))


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                                 HealthCheck.too_slow])
@given(st.sampled_from(RECORD_TYPES), st.data())
def test_validate_never_raises_anything_but_rejected(record_type: str, data: st.DataObject) -> None:
    record = copy.deepcopy(_samples()[record_type])
    for _ in range(data.draw(st.integers(1, 6))):
        sites = list(_sites(record))
        path, key = sites[data.draw(st.integers(0, len(sites) - 1))]
        parent = record
        for step in path[:-1]:
            parent = parent[step]
        if key:
            parent[path[-1]] = data.draw(_VALUES[key])
        else:
            del parent[path[-1]]
    assume(schema_valid(record, record_type))
    try:
        validate(record, record_type, now=NOW + timedelta(days=data.draw(st.integers(-400, 400))))
    except Rejected as err:
        assert_phi_free(err.detail)


def test_generated_selectors_pick_what_select_picks() -> None:
    """The rules read fields through generated selectors (rules._selector): same values, paths and order as _select."""
    groups = [value for name, value in vars(rules).items() if name.endswith("_FIELDS")]
    rng = random.Random(29)
    compared = 0
    for record_type in RECORD_TYPES:
        for record in decoded_records(record_type, 30, 29):
            for candidate in (record, *(mutate(record, rng) for _ in range(10))):
                for fields in groups:
                    patterns = fields.get(record_type, ())
                    assert rules._selector(patterns)(candidate) == rules._select(candidate, patterns)
                    compared += bool(patterns)
    assert compared > 0

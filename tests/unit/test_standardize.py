"""Standardization: messy feed values become canonical, canonical ones stay, bad ones are PHI-free Rejected."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import orjson
import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.synthetic import generate
from schemas import fast_validator
from udfs.canonical_fields import SPECS, Each, Spec
from udfs.dead_letters import Rejected
from udfs.standardize import StandardizeOptions, standardize
from udfs.us_states import USPS_STATES

FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MESSY = StandardizeOptions(date_formats=("%m/%d/%Y", "%Y%m%d"), datetime_formats=("%Y%m%d%H%M",),
                           timezone="America/New_York")


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[str, dict[str, Any]]]:
    """Every valid record of a 300-record synthetic run, as (record_type, record)."""
    return [(g.record_type, orjson.loads(g.payload)) for g in generate(300, seed=1) if g.expect == "valid"]


@pytest.fixture(scope="module")
def claim(synthetic: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """A valid claim that has a patient and a rendering provider."""
    return next(r for t, r in synthetic if t == "claim" and "patient" in r and "rendering_provider" in r)


def _spec_keys(spec: Spec) -> Iterator[str]:
    if isinstance(spec, Each):
        yield from _spec_keys(spec.item)
    elif not isinstance(spec, str):
        for key, sub in spec.items():
            yield key
            yield from _spec_keys(sub)


SPEC_KEYS = {k for spec in SPECS.values() for k in _spec_keys(spec)}
_PATH = r"\$(?:\.[a-z0-9_]+|\[[0-9]+\])*"
_DETAIL = re.compile(rf"[a-z0-9_]+ at {_PATH}(?:, {_PATH})*(?: \(\+[0-9]+ more\))?(?:; .*)?")


def assert_phi_free(detail: str) -> None:
    """A detail is only codes and JSON paths whose keys all come from the specs: no room for a value."""
    for entry in detail.split("; "):
        assert _DETAIL.fullmatch(entry), entry
        for key in re.findall(r"\.([a-z0-9_]+)", entry):
            assert key in SPEC_KEYS, key


def rejected(record: dict[str, Any], record_type: str = "claim",
             options: StandardizeOptions = MESSY) -> Rejected:
    with pytest.raises(Rejected) as info:
        standardize(record, record_type, options)
    assert_phi_free(info.value.detail)
    return info.value


# --- canonical input --------------------------------------------------------------------------

def test_valid_synthetic_records_come_back_unchanged_and_as_new_objects(
        synthetic: list[tuple[str, dict[str, Any]]]) -> None:
    assert {t for t, _ in synthetic} == {"claim", "payment", "eligibility"}
    for record_type, record in synthetic:
        before = copy.deepcopy(record)
        out = standardize(record, record_type, MESSY)
        assert out == record == before
        assert out is not record


def test_input_is_never_mutated_and_walked_containers_are_copies(claim: dict[str, Any]) -> None:
    messy = copy.deepcopy(claim)
    messy["subscriber"]["address"]["state"] = "washington"
    messy["service_lines"][0]["charge"] = "$1,000"
    frozen = copy.deepcopy(messy)
    out = standardize(messy, "claim", MESSY)
    assert messy == frozen
    assert out["subscriber"]["address"]["state"] == "WA" and out["service_lines"][0]["charge"] == "1000.00"
    for key in ("subscriber", "service_lines", "diagnoses", "notes"):
        assert out[key] is not messy[key]


# --- each kind --------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "want"), [
    ("2025-06-01", "2025-06-01"), (" 2025-06-01 ", "2025-06-01"), ("6/1/2025", "2025-06-01"),
    ("06/01/2025", "2025-06-01"), ("20250601", "2025-06-01"),
])
def test_dates_become_iso(claim: dict[str, Any], raw: str, want: str) -> None:
    assert standardize({**claim, "service_date_from": raw}, "claim", MESSY)["service_date_from"] == want


@pytest.mark.parametrize("raw", ["2025-02-30", "31/12/2025", "June 1st", "2025-6-1x", "", "2" * 500])
def test_unreadable_or_impossible_dates_are_rejected(claim: dict[str, Any], raw: str) -> None:
    err = rejected({**claim, "subscriber": {**claim["subscriber"], "birth_date": raw}})
    assert err.reason_code == "std_bad_date"
    assert err.detail == "std_bad_date at $.subscriber.birth_date"


def test_contract_date_formats_are_opt_in(claim: dict[str, Any]) -> None:
    assert rejected({**claim, "service_date_to": "06/01/2025"}, options=StandardizeOptions()).reason_code == \
        "std_bad_date"


@pytest.mark.parametrize(("raw", "want"), [
    ("2025-06-02T08:00:01.372Z", "2025-06-02T08:00:01.372Z"),
    ("2025-06-02T10:00:01+02:00", "2025-06-02T08:00:01Z"),
    ("2025-06-02t03:00:01.123456789-05:00", "2025-06-02T08:00:01.123456789Z"),
    ("2025-06-02 08:00:01 +0000", "2025-06-02T08:00:01Z"),
    ("2025-06-02 04:00:01", "2025-06-02T08:00:01Z"),  # New York summer time, from the contract
    ("2025-01-02 03:00", "2025-01-02T08:00:00Z"),  # winter: EST is UTC-5
    ("2025-06-02T08:00:01z", "2025-06-02T08:00:01Z"),
    ("202506020400", "2025-06-02T08:00:00Z"),  # a contract datetime format (X12 CCYYMMDDHHMM)
])
def test_date_times_become_rfc3339_utc(claim: dict[str, Any], raw: str, want: str) -> None:
    assert standardize({**claim, "received_at": raw}, "claim", MESSY)["received_at"] == want


@pytest.mark.parametrize("raw", [
    "2025-03-09 02:30:00",  # skipped by the spring-forward change in New York: no such instant
    "2025-06-02T25:00:00Z", "2025-02-30T08:00:00Z", "2025-06-02T08:00:00+24:00", "0001-01-01T00:00:00+01:00",
    "2025-06-02", "yesterday", "2025-06-02T08:00:00.1234567891Z",
])
def test_unreadable_or_impossible_date_times_are_rejected(claim: dict[str, Any], raw: str) -> None:
    err = rejected({**claim, "sent_at": raw})
    assert (err.reason_code, err.detail) == ("std_bad_datetime", "std_bad_datetime at $.sent_at")


@pytest.mark.parametrize(("raw", "want"), [
    (" 1,234.5", "1234.50"), ("$12", "12.00"), ("$ 12.3", "12.30"), ("12.500", "12.50"), (".5", "0.50"),
    ("0012.00", "12.00"), ("0", "0.00"), (12, "12.00"), (0, "0.00"), (Decimal("7.1"), "7.10"),
    (Decimal("1E+2"), "100.00"), ("135.00", "135.00"), ("-0.00", "0.00"),
])
def test_money_becomes_an_exact_two_place_string(claim: dict[str, Any], raw: Any, want: str) -> None:
    assert standardize({**claim, "total_charge": raw}, "claim", MESSY)["total_charge"] == want


@pytest.mark.parametrize("raw", [
    12.5, 0.1 + 0.2, "12.345", "12.001", "-5.00", "1,23", "12,34.00", "$", "", "1e5", "NaN", "12.3.4", "--1",
    Decimal("NaN"), Decimal("Infinity"), Decimal("0.001"), "9" * 100, 10**80,
])
def test_floats_extra_places_negatives_and_garbage_are_rejected_not_rounded(claim: dict[str, Any], raw: Any) -> None:
    lines = [{**claim["service_lines"][0], "charge": raw}, *claim["service_lines"][1:]]
    err = rejected({**claim, "service_lines": lines})
    assert (err.reason_code, err.detail) == ("std_bad_money", "std_bad_money at $.service_lines[0].charge")


def test_adjustment_amounts_may_be_negative(synthetic: list[tuple[str, dict[str, Any]]]) -> None:
    payment = copy.deepcopy(next(r for t, r in synthetic if t == "payment"))
    payment["claims"][0]["lines"][0]["adjustments"][0]["amount"] = "-$1,000.5"
    out = standardize(payment, "payment", MESSY)
    assert out["claims"][0]["lines"][0]["adjustments"][0]["amount"] == "-1000.50"
    payment["payment_amount"] = "-1.00"
    assert rejected(payment, "payment").detail == "std_bad_money at $.payment_amount"


def test_codes_are_stripped_and_upper_cased_and_icd10_gets_its_dot(claim: dict[str, Any]) -> None:
    lines = [{**claim["service_lines"][0], "procedure_code": " g0439 ", "modifiers": ["lt", " 25"],
              "place_of_service": "2"}]
    messy = {**claim, "diagnoses": ["e119", " s93401a", "z23", "m54.50", "J45909"], "service_lines": lines,
             "subscriber": {**claim["subscriber"], "gender": " f", "relationship_code": "1"},
             "frequency_code": " 1 ", "claim_kind": " Professional", "place_of_service": "11"}
    out = standardize(messy, "claim", MESSY)
    assert out["diagnoses"] == ["E11.9", "S93.401A", "Z23", "M54.50", "J45.909"]
    assert out["service_lines"][0]["procedure_code"] == "G0439"
    assert out["service_lines"][0]["modifiers"] == ["LT", "25"]
    assert out["service_lines"][0]["place_of_service"] == "02"  # a spreadsheet ate the zero
    assert (out["subscriber"]["gender"], out["subscriber"]["relationship_code"]) == ("F", "01")
    assert (out["frequency_code"], out["claim_kind"]) == ("1", "professional")


def test_payment_and_eligibility_codes(synthetic: list[tuple[str, dict[str, Any]]]) -> None:
    payment = copy.deepcopy(next(r for t, r in synthetic if t == "payment"))
    payment["method"] = "ach"
    payment["claims"][0]["lines"][0]["adjustments"][0]["group_code"] = " co"
    out = standardize(payment, "payment", MESSY)
    assert out["method"] == "ACH" and out["claims"][0]["lines"][0]["adjustments"][0]["group_code"] == "CO"
    eligibility = copy.deepcopy(next(r for t, r in synthetic if t == "eligibility"))
    eligibility["plan"]["coverage_level"] = "emp"
    eligibility["coverage"]["maintenance_type_code"] = "21"
    eligibility["plan"]["plan_code"] = " ppo500 "  # an identifier: trimmed, never upper-cased
    out = standardize(eligibility, "eligibility", MESSY)
    assert (out["plan"]["coverage_level"], out["coverage"]["maintenance_type_code"]) == ("EMP", "021")
    assert out["plan"]["plan_code"] == "ppo500"


def test_names_are_trimmed_with_inner_whitespace_collapsed(claim: dict[str, Any]) -> None:
    messy = {**claim, "subscriber": {**claim["subscriber"], "first_name": "  Mary \t Ann ",
                                     "address": {**claim["subscriber"]["address"], "city": " San   Jose"}},
             "payer": {**claim["payer"], "name": "Acme\u00a0 Health  Plan "}}
    out = standardize(messy, "claim", MESSY)
    assert out["subscriber"]["first_name"] == "Mary Ann"
    assert out["subscriber"]["address"]["city"] == "San Jose"
    assert out["payer"]["name"] == "Acme Health Plan"


@pytest.mark.parametrize(("raw", "want"), [
    ("(206) 555-0100", "+12065550100"), ("206.555.0100", "+12065550100"), ("1-206-555-0100", "+12065550100"),
    ("+1 206 555 0100", "+12065550100"), ("+44 20 7946 0000", "+442079460000"), ("+12065550100", "+12065550100"),
])
def test_phones_become_e164(claim: dict[str, Any], raw: str, want: str) -> None:
    out = standardize({**claim, "subscriber": {**claim["subscriber"], "phone": raw}}, "claim", MESSY)
    assert out["subscriber"]["phone"] == want


@pytest.mark.parametrize("raw", ["555-0100", "206-555-0100 x12", "123", "not a phone", "+1 000 555 0100", "",
                                 "2065550100" * 30])
def test_invalid_phones_are_rejected(claim: dict[str, Any], raw: str) -> None:
    err = rejected({**claim, "patient": {**claim["patient"], "phone": raw}})
    assert (err.reason_code, err.detail) == ("std_bad_phone", "std_bad_phone at $.patient.phone")


@settings(max_examples=200, deadline=None, database=None)
@given(st.from_regex(r"\+1[2-9][0-9]{9}", fullmatch=True), st.sampled_from(["US", "CA", "GB"]))
def test_the_e164_fast_path_agrees_with_the_phonenumbers_parser(phone: str, region: str) -> None:
    number = phonenumbers.parse(phone, region)
    want = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) \
        if phonenumbers.is_valid_number(number) else None
    record = {"member": {"phone": phone}}
    try:
        got = standardize(record, "eligibility", StandardizeOptions(phone_region=region))["member"]["phone"]
    except Rejected:
        got = None
    assert got == want


def test_phone_region_comes_from_the_contract(claim: dict[str, Any]) -> None:
    uk = StandardizeOptions(phone_region="GB")
    out = standardize({**claim, "subscriber": {**claim["subscriber"], "phone": "020 7946 0000"}}, "claim", uk)
    assert out["subscriber"]["phone"] == "+442079460000"


@pytest.mark.parametrize(("raw", "want"), [
    ("wa", "WA"), (" New  York ", "NY"), ("district of columbia", "DC"), ("Washington, D.C.", "DC"),
    ("Puerto Rico", "PR"), ("U.S. Virgin Islands", "VI"), ("armed forces pacific", "AP"), ("ae", "AE"),
    ("Northern Mariana Islands", "MP"), ("GUAM", "GU"), ("American Samoa", "AS"),
])
def test_states_become_usps_codes(claim: dict[str, Any], raw: str, want: str) -> None:
    addr = {**claim["billing_provider"]["address"], "state": raw}
    out = standardize({**claim, "billing_provider": {**claim["billing_provider"], "address": addr}}, "claim", MESSY)
    assert out["billing_provider"]["address"]["state"] == want


def test_the_usps_table_holds_states_dc_territories_and_military() -> None:
    assert len(USPS_STATES) == 50 + 1 + 5 + 3 + 3
    assert {"DC", "PR", "GU", "VI", "AS", "MP", "AA", "AE", "AP"} <= set(USPS_STATES)


@pytest.mark.parametrize("raw", ["Ontario", "XX", "Cal", "", "N.Y.C."])
def test_unknown_states_are_rejected(claim: dict[str, Any], raw: str) -> None:
    addr = {**claim["subscriber"]["address"], "state": raw}
    err = rejected({**claim, "subscriber": {**claim["subscriber"], "address": addr}})
    assert (err.reason_code, err.detail) == ("std_bad_state", "std_bad_state at $.subscriber.address.state")


@pytest.mark.parametrize(("raw", "want"), [
    ("98101", "98101"), ("981011234", "98101-1234"), ("98101 1234", "98101-1234"), ("98101-1234", "98101-1234"),
    (" 02134 ", "02134"),
])
def test_zips_become_zip_or_zip_plus_4(claim: dict[str, Any], raw: str, want: str) -> None:
    addr = {**claim["subscriber"]["address"], "zip": raw}
    out = standardize({**claim, "subscriber": {**claim["subscriber"], "address": addr}}, "claim", MESSY)
    assert out["subscriber"]["address"]["zip"] == want


@pytest.mark.parametrize("raw", ["2134", "98101-12", "98101--1234", "ABCDE", "98101-1234-5", ""])
def test_other_zips_are_rejected(claim: dict[str, Any], raw: str) -> None:
    addr = {**claim["subscriber"]["address"], "zip": raw}
    err = rejected({**claim, "subscriber": {**claim["subscriber"], "address": addr}})
    assert (err.reason_code, err.detail) == ("std_bad_zip", "std_bad_zip at $.subscriber.address.zip")


# --- structure, details, options --------------------------------------------------------------

def test_only_fields_of_the_structure_are_touched(claim: dict[str, Any]) -> None:
    # notes are free text and plan-like ids keep their case; look-alikes outside the structure stay.
    messy = {**claim, "notes": ["  6/1/2025 ", "wa"], "claim_id": "c-1",
             "billing_provider": {**claim["billing_provider"], "state": "washington"}}
    out = standardize(messy, "claim", MESSY)
    assert out["notes"] == ["  6/1/2025 ", "wa"]
    assert out["claim_id"] == "c-1"
    assert out["billing_provider"]["state"] == "washington"


def test_wrong_json_types_are_left_for_the_schema_check(claim: dict[str, Any]) -> None:
    messy = {**claim, "service_date_from": 20250601, "diagnoses": "E11.9", "subscriber": ["x"],
             "service_lines": [None, 3, *claim["service_lines"]]}
    out = standardize(messy, "claim", MESSY)
    assert out == messy
    with pytest.raises(Exception, match="must be"):
        fast_validator("claim")(out)


def test_every_bad_field_is_named_and_the_first_one_sets_the_code(claim: dict[str, Any]) -> None:
    values = {"zip": "9810", "phone": "555-0199", "date": "13/45/2025", "charge": "3.14159"}
    lines = [{**line, "charge": values["charge"]} for line in claim["service_lines"]]
    lines += [copy.deepcopy(lines[0]) for _ in range(6)]
    messy = {**claim, "service_date_to": values["date"], "service_lines": lines,
             "subscriber": {**claim["subscriber"], "phone": values["phone"],
                            "address": {**claim["subscriber"]["address"], "zip": values["zip"]}}}
    err = rejected(messy)
    assert err.reason_code == "std_bad_zip"  # subscriber comes before the service lines in the structure
    assert err.detail.startswith("std_bad_zip at $.subscriber.address.zip; std_bad_phone at $.subscriber.phone; ")
    assert "std_bad_date at $.service_date_to" in err.detail
    assert f"(+{len(lines) - 5} more)" in err.detail
    for value in values.values():
        assert value not in err.detail


def test_unknown_record_type_is_rejected(claim: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as info:
        standardize(claim, "remit", MESSY)
    assert info.value.reason_code == "unknown_record_type"


def test_options_from_a_contract() -> None:
    opts = StandardizeOptions.from_contract({"date_formats": ["%m/%d/%Y"], "timezone": "America/Chicago"})
    assert opts.date_formats == ("%m/%d/%Y",) and opts.timezone == "America/Chicago"
    assert opts.phone_region == "US"
    assert StandardizeOptions.from_contract(None) == StandardizeOptions()
    assert opts == StandardizeOptions(date_formats=("%m/%d/%Y",), timezone="America/Chicago")


@pytest.mark.parametrize(("options", "message"), [
    ({"timezone": "Mars/Olympus"}, "standardize.timezone"),
    ({"timezone": 5}, "standardize.timezone"),
    ({"phone_region": "ZZ"}, "standardize.phone_region"),
    ({"date_formats": "%Y%m%d"}, "standardize.date_formats"),
    ({"date_formats": ["YYYYMMDD"]}, "standardize.date_formats"),
    ({"datetime_formats": ["%Q"]}, "standardize.datetime_formats"),
    ({"date_format": ["%Y"]}, "unknown option"),
])
def test_bad_contract_options_fail_at_start_up_naming_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StandardizeOptions.from_contract(options)


# --- properties -------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
    st.text(alphabet="0123456789-/.:$, TZ+", max_size=30), st.decimals(allow_nan=True, allow_infinity=True),
    # Huge strings built by repetition: drawing 3000 random characters would dominate the run time.
    st.builds(lambda chunk, n: chunk * n, st.text(min_size=1, max_size=6), st.integers(300, 3000)),
)
_json = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                          max_size=4), max_leaves=12)


def _follow(spec: Spec, leaf: Callable[[str], st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Values shaped like `spec`, `leaf(kind)` at the leaves, and sometimes anything at all instead."""
    if isinstance(spec, str):
        return leaf(spec)
    if isinstance(spec, Each):
        return st.lists(_follow(spec.item, leaf), max_size=3) | _json
    return st.fixed_dictionaries({}, optional={k: _follow(v, leaf) for k, v in spec.items()}) | _json


@FUZZ
@given(st.sampled_from(sorted(SPECS)), st.data())
def test_standardize_never_raises_anything_but_rejected(record_type: str, data: st.DataObject) -> None:
    record = data.draw(_follow(SPECS[record_type], lambda kind: _json_leaf).filter(lambda v: isinstance(v, dict)))
    before = copy.deepcopy(record)
    try:
        standardize(record, record_type, MESSY)
    except Rejected as err:
        assert_phi_free(err.detail)
    assert repr(record) == repr(before)  # repr: NaN != NaN would fail a plain equality


_text = st.text(alphabet=" \t\u00a0abcXYZ0123456789-.\u00df\ufb01\u01c5", max_size=12)
# Readable-but-messy values of each kind, and sometimes any text, which may be rejected.
_MESSY: dict[str, st.SearchStrategy[Any]] = {
    "date": st.sampled_from(["2025-06-01", "6/1/2025", "20250601", " 1999-12-31", "2024-02-29"]),
    "datetime": st.sampled_from(["2025-06-02T08:00:01Z", "2025-06-02 04:00:01", "2025-06-02t08:00:01.5+01:00",
                                 "202506020400", "2025-11-02 01:30:00"]),
    "money": st.sampled_from(["$1,234.5", " 12", "0.1", "12.500", ".5"]) | st.integers(0, 10**6)
    | st.decimals(min_value=0, max_value=10**6, places=2),
    "signed_money": st.sampled_from(["-$1,234.5", "-0", "12.5"]) | st.integers(-(10**6), 10**6)
    | st.decimals(min_value=-(10**6), max_value=10**6, places=2),
    "phone": st.sampled_from(["(206) 555-0100", "+44 20 7946 0000", "206.555.0101", "+12065550100"]),
    "state": st.sampled_from(["new york", " wa", "D.C.", "Guam", "armed forces europe"]),
    "zip": st.sampled_from(["981011234", "98101 1234", "02134", "98101-1234"]),
    "icd10": st.sampled_from(["e119", "S93401A", " z23 ", "u071", "E11.9", "m5450"]) | _text,
}


@FUZZ
@given(st.sampled_from(sorted(SPECS)), st.data())
def test_standardize_is_idempotent(record_type: str, data: st.DataObject) -> None:
    messy = _follow(SPECS[record_type], lambda kind: _MESSY.get(kind, _text) | st.text(max_size=8))
    record = data.draw(messy.filter(lambda v: isinstance(v, dict)))
    try:
        once = standardize(record, record_type, MESSY)
    except Rejected:
        return
    assert standardize(once, record_type, MESSY) == once

"""udfs.decoders.csv: round trips through the CSV encoder, header drift, every reason code, the corpus, fuzzing."""

from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local.encoders.csv import encode_csv
from infra.local.synthetic import Mix, generate
from schemas import validator
from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.decoders import csv as csv_decoder
from udfs.mapping import compile_mapping, map_record, required_source_fields, source_columns
from udfs.reasons import REASONS

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "csv"
MAPPING = json.loads((CORPUS / "eligibility_mapping.json").read_text())
MEMBERS = ["member_id", "first_name", "last_name"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(data: bytes, **options: Any) -> list[Item]:
    """All items of one unit (raises Rejected like the decoder)."""
    return list(csv_decoder.decode(data, options))


def outcome(data: bytes, **options: Any) -> tuple[list[Item], str | None]:
    """The items yielded before any Rejected, and its reason code (None if the unit ended cleanly)."""
    items: list[Item] = []
    try:
        for item in csv_decoder.decode(data, options):
            items.append(item)
    except Rejected as err:
        return items, err.reason_code
    return items, None


@functools.cache
def _eligibility(n: int, seed: int) -> tuple[bytes, ...]:
    return tuple(g.payload for g in generate(n, seed, mix=Mix(0, 0, 1), duplicate_rate=0, invalid_rate=0))


def eligibility(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Valid synthetic eligibility records (one seed: the generator builds its fake people once per seed)."""
    return [orjson.loads(p) for p in _eligibility(n, seed)]


def without_empty(value: Any) -> Any:
    """A record as CSV gives it back: empty lists and objects are absent."""
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in ([], {})}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


# --- round trips ---------------------------------------------------------------------------------

def test_eligibility_round_trip_is_exact_and_schema_valid() -> None:
    records = eligibility(40)
    mapping = compile_mapping(MAPPING)
    data = encode_csv(records, MAPPING)
    items = decode(data, columns=source_columns(mapping))
    assert [i.position for i in items] == [f"row {n}" for n in range(1, 41)]
    mapped = [map_record(i.record, mapping) for i in items if i.record is not None]
    assert mapped == [without_empty(r) for r in records]
    check = validator("eligibility")
    assert [list(check.iter_errors(r)) for r in mapped] == [[]] * len(records)
    assert any("dependents" in r for r in mapped) and any("end_date" in r["coverage"] for r in mapped)


@pytest.mark.parametrize(("encoding", "bom", "delimiter", "header"), [
    ("utf-8", True, ";", True), ("latin-1", False, "\t", True), ("cp1252", False, "|", False),
])
def test_round_trip_in_other_dialects(encoding: str, bom: bool, delimiter: str, header: bool) -> None:
    records = eligibility(10)
    data = encode_csv(records, MAPPING, encoding=encoding, bom=bom, delimiter=delimiter, header=header)
    items = decode(data, encoding=encoding, delimiter=delimiter, header=header, columns=source_columns(MAPPING))
    assert [map_record(i.record or {}, MAPPING) for i in items] == [without_empty(r) for r in records]


def test_messy_mode_sends_partner_style_dates_and_phones() -> None:
    record = eligibility(30)
    data = encode_csv(record, MAPPING, date_format="%m/%d/%Y", phone_style="national")
    mapped = [map_record(i.record or {}, MAPPING) for i in decode(data, columns=source_columns(MAPPING))]
    first, original = mapped[0]["member"], record[0]["member"]
    year, month, day = original["birth_date"].split("-")
    assert first["birth_date"] == f"{month}/{day}/{year}"
    digits = original["phone"][2:]
    assert first["phone"] == f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    # Nothing else changed: the rest of the record still round-trips.
    for m, r in zip(mapped, record, strict=True):
        assert m["member"]["last_name"] == r["member"]["last_name"] and m["plan"] == r["plan"]


def test_encoder_refuses_to_drop_data_the_mapping_cannot_carry() -> None:
    record = eligibility(1)[0]
    record["dependents"] = [dict(record["member"], relationship="19")] * 5  # the mapping has 4 dependent slots
    with pytest.raises(ValueError, match="no column"):
        encode_csv([record], MAPPING)


# --- header drift --------------------------------------------------------------------------------

def test_header_names_match_up_to_case_space_and_order_and_extras_are_ignored() -> None:
    data = b"\xef\xbb\xbf  Last   Name ,EXTRA,member_ID,\tFIRST_name\r\nExample,x,M0001,Alex\r\n"
    (item,) = decode(data, columns=["member_id", "first_name", "last  name"])
    # Keys are the contract's spelling, whatever the header's.
    assert item.record == {"member_id": "M0001", "first_name": "Alex", "last  name": "Example"}
    with pytest.raises(Rejected, match="csv_missing_column"):
        decode(b"First Name\r\nAlex\r\n", columns=["first_name"])  # an underscore is not a space


def test_missing_column_rejects_the_unit_naming_only_contract_columns() -> None:
    # A feed that forgot its header sends a data row in its place: its cells must not reach the detail.
    with pytest.raises(Rejected) as err:
        decode(b"M0001,Alex,Example\r\n", columns=MEMBERS)
    assert err.value.reason_code == "csv_missing_column"
    assert "member_id, first_name, last_name" in err.value.detail
    assert "Alex" not in err.value.detail and "M0001" not in err.value.detail


def test_without_columns_every_header_column_is_kept() -> None:
    (item,) = decode(b"a, B  c ,\r\n1,2,3\r\n")
    assert item.record == {"a": "1", "B c": "2"}  # the nameless third column is not a record key


def test_required_source_fields_make_the_header_check() -> None:
    data = encode_csv(eligibility(2), MAPPING)
    header = data.split(b"\r\n", 1)[0].decode().split(",")
    assert set(header) == required_source_fields(MAPPING)


# --- rows ----------------------------------------------------------------------------------------

def test_bad_rows_are_error_items_and_the_rest_flow() -> None:
    data = b"member_id,first_name,last_name\r\nM1,A,B\r\nM2,A\r\n\r\nM3,=1+1,B\r\nM4,C,D\r\n"
    items = decode(data)
    assert [(i.position, i.error.reason_code if i.error else None) for i in items] == [
        ("row 1", None), ("row 2", "csv_row_width"), ("row 3", None), ("row 4", None)]
    assert items[3].record == {"member_id": "M4", "first_name": "C", "last_name": "D"}


@pytest.mark.parametrize("cell", ["=1+1", "@SUM(A1)", "\t=1", "-12.50", "+1 (206) 555-0123", "O'Brien"])
def test_cells_pass_as_sent_formulas_are_judged_by_the_hygiene_step(cell: str) -> None:
    # One rule for every format lives in udfs/hygiene.py (tests/unit/test_hygiene.py), not per decoder.
    (item,) = decode(_csv([MEMBERS, ["M1", cell, "B"]]))
    assert item.record is not None and item.record["first_name"] == cell


def test_field_size_is_measured_in_bytes_of_the_declared_encoding() -> None:
    data = _csv([MEMBERS, ["M1", "é" * 60, "B"], ["M2", "e" * 60, "B"]])  # 120 vs 60 UTF-8 bytes
    first, second = decode(data, max_field_bytes=100)
    assert first.error is not None and first.error.reason_code == "csv_field_too_large"
    assert second.record is not None
    (latin,) = decode(_csv([MEMBERS, ["M1", "é" * 60, "B"]]).decode().encode("latin-1"),
                      encoding="latin-1", max_field_bytes=100)
    assert latin.record is not None


def test_a_field_beyond_the_parsers_own_limit_ends_the_unit() -> None:
    items, code = outcome(_csv([MEMBERS, ["M1", "A", "B"], ["M2", "x" * (csv.field_size_limit() + 1), "B"]]))
    assert code == "csv_field_too_large" and len(items) == 1


def test_quoted_cells_keep_delimiters_quotes_and_line_breaks() -> None:
    (item,) = decode(b'member_id,first_name,last_name\n"M,1","A ""B""","C\r\nD"\n')
    assert item.record == {"member_id": "M,1", "first_name": 'A "B"', "last_name": "C\r\nD"}


# --- encodings -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "options"), [
    (b"member_id\r\nM\xff1\r\n", {}),
    (b"member_id\r\nM\x811\r\n", {"encoding": "cp1252"}),
    (b"\xef\xbb\xbfmember_id\r\nM1\r\n", {"encoding": "latin-1"}),
    (b"member_id\r\nM\x001\r\n", {}),
    ("member_id\r\nM1\r\n".encode("utf-16"), {}),
])
def test_text_that_is_not_the_declared_encoding_rejects_the_unit(data: bytes, options: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as err:
        decode(data, **options)
    assert err.value.reason_code == "csv_encoding"


def test_bom_is_dropped_and_cp1252_specials_decode() -> None:
    # cp1252 has a curly apostrophe where latin-1 has a control character.
    (item,) = decode("\ufeffmember_id,first_name,last_name\r\nM1,Zoë,O\u2019Neil\r\n".encode("cp1252", "ignore"),
                     encoding="windows-1252")
    assert item.record == {"member_id": "M1", "first_name": "Zoë", "last_name": "O\u2019Neil"}
    (item,) = decode("\ufeffmember_id\r\nM1\r\n".encode())
    assert item.record == {"member_id": "M1"}


# --- every reason code ---------------------------------------------------------------------------

REASON_CASES: dict[str, tuple[bytes, dict[str, Any]]] = {
    "csv_empty": (b"\r\n\r\n", {}),
    "csv_encoding": (b"member_id\r\n\xc3\x28\r\n", {}),
    "csv_missing_column": (b"member_id\r\nM1\r\n", {"columns": MEMBERS}),
    "csv_duplicate_column": (b"a,A\r\n1,2\r\n", {}),
    "csv_quoting": (b'a,b\r\n"1"2,3\r\n', {}),
    "csv_row_width": (b"a,b\r\n1\r\n", {}),
    "csv_field_too_large": (b"a\r\n12345\r\n", {"max_field_bytes": 4}),
}


def test_every_csv_reason_code_has_a_case() -> None:
    assert set(REASON_CASES) == {code for code in REASONS if code.startswith("csv_")}
    assert all(REASONS[code].category == "decode" for code in REASON_CASES)


@pytest.mark.parametrize("code", sorted(REASON_CASES))
def test_reason_code_is_raised(code: str) -> None:
    data, options = REASON_CASES[code]
    items, raised = outcome(data, **options)
    assert code in {raised, *(i.error.reason_code for i in items if i.error)}


def test_header_false_needs_columns_and_empty_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="columns is required"):
        decode(b"1,2\r\n", header=False)
    assert outcome(b"", header=False, columns=["a"]) == ([], "csv_empty")
    assert outcome(b"a,b\r\n") == ([], None)  # a header and no rows: a quiet day, not an error


@pytest.mark.parametrize("options", [
    {"delimiter": ",,"}, {"delimiter": "\n"}, {"quotechar": ","}, {"encoding": "utf-16"}, {"encoding": "nope"},
    {"header": "yes"}, {"columns": "a,b"}, {"columns": 3}, {"columns": []}, {"columns": ["a", 1]},
    {"columns": ["a", " A "]}, {"max_field_bytes": 0},
    {"max_field_bytes": True}, {"max_field_bytes": 10**9}, {"formula_cells": "reject"}, {"delimeter": ";"},
])
def test_bad_options_fail_at_start_up(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="csv options"):
        csv_decoder.check_options(options)


# --- corpus --------------------------------------------------------------------------------------

CASES = json.loads((CORPUS / "cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{c['file']}-{i}" for i, c in enumerate(CASES)])
def test_corpus(case: dict[str, Any]) -> None:
    options = dict(case["options"])
    mapping = json.loads((CORPUS / case["mapping"]).read_text()) if "mapping" in case else None
    if mapping:
        options["columns"] = source_columns(mapping)
    items, code = outcome((CORPUS / case["file"]).read_bytes(), **options)
    assert code == case.get("rejected")
    assert {i.position: i.error.reason_code for i in items if i.error} == case.get("errors", {})
    records = [i.record for i in items if i.record is not None]
    assert len(records) == case.get("records", 0)
    if mapping:
        mapped = [map_record(r, mapping) for r in records]
        assert all(m["record_type"] == "eligibility" and m["member"]["member_id"] for m in mapped)
        if case.get("validate"):
            assert [list(validator("eligibility").iter_errors(m)) for m in mapped] == [[]] * len(mapped)


# --- fuzzing -------------------------------------------------------------------------------------

def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


def _never_crashes(data: bytes, **options: Any) -> list[Item]:
    items, _ = outcome(data, **options)
    for item in items:
        assert (item.record is None) != (item.error is None)
    return items


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(data: bytes) -> None:
    _never_crashes(data)
    _never_crashes(data, encoding="latin-1", header=False, columns=["a", "b"])


@FUZZ
@given(st.text(alphabet=',"\r\n=+-@\t ab1é\x00\ufeff;', max_size=300))
def test_csv_shaped_text_never_crashes(text: str) -> None:
    _never_crashes(text.encode(), columns=["a"])
    _never_crashes(text.encode("utf-8"), delimiter=";")


CELL = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)


@FUZZ
@given(st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=6))
def test_any_cells_written_by_csv_come_back_exactly(rows: list[list[str]]) -> None:
    items = _never_crashes(_csv([MEMBERS, *rows]))
    assert [list((i.record or {}).values()) for i in items] == rows


def test_truncation_at_every_position_never_crashes() -> None:
    data = encode_csv(eligibility(2), MAPPING, delimiter=";")[:2500]
    columns = source_columns(MAPPING)
    for end in range(len(data) + 1):
        _never_crashes(data[:end], delimiter=";", columns=columns)


@FUZZ
@given(st.binary(min_size=1, max_size=4), st.integers(min_value=0, max_value=200))
def test_invalid_utf8_anywhere_rejects_the_unit(junk: bytes, at: int) -> None:
    data = _csv([MEMBERS, ["M1", "Alex", "Example"]] * 4)
    at = min(at, len(data))
    broken = data[:at] + b"\xff" + junk + data[at:]
    assert outcome(broken)[1] == "csv_encoding"


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=1, max_value=400_000))
def test_huge_fields_are_bounded(size: int) -> None:
    items, code = outcome(_csv([MEMBERS, ["M1", "x" * size, "B"], ["M2", "A", "B"]]), max_field_bytes=1000)
    if size <= 1000:
        assert code is None and all(i.record for i in items)
    elif size <= csv.field_size_limit():
        assert code is None and items[0].error is not None and items[0].error.reason_code == "csv_field_too_large"
        assert items[1].record is not None
    else:
        assert code == "csv_field_too_large"

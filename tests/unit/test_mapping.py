"""udfs.mapping: path syntax and conflicts at start-up, record shapes at run time, fuzzed mappings and sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.dead_letters import Rejected
from udfs.mapping import (
    check_mapping,
    compile_mapping,
    map_record,
    parse_path,
    required_source_fields,
    source_columns,
)

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "csv"
FUZZ = settings(max_examples=200, deadline=None)

CLAIM_LINES = {
    "claim_id": "claim",
    "diagnoses[0]": "dx1",
    "diagnoses[1]": "dx2",
    "diagnoses[2]": "dx3",
    "service_lines[0].line_number": {"field": "line1_number", "type": "integer"},
    "service_lines[0].modifiers": {"field": "line1_modifiers", "split": ";"},
    "service_lines[0].diagnosis_pointers": {"field": "line1_pointers", "split": ";", "type": "integer"},
    "service_lines[1].line_number": {"field": "line2_number", "type": "integer"},
    "record_type": {"const": "claim"},
    "payer": {"const": {"payer_id": "12345", "name": "Example Health Plan"}},
}
SOURCE = {
    "claim": "C1", "dx1": "E11.9", "dx2": "I10", "dx3": "", "line1_number": "1", "line1_modifiers": "25;59",
    "line1_pointers": "1;2", "line2_number": " ",
}


def test_nested_record_from_a_flat_source() -> None:
    assert map_record(SOURCE, CLAIM_LINES) == {
        "claim_id": "C1",
        "diagnoses": ["E11.9", "I10"],
        "service_lines": [{"line_number": 1, "modifiers": ["25", "59"], "diagnosis_pointers": [1, 2]}],
        "record_type": "claim",
        "payer": {"payer_id": "12345", "name": "Example Health Plan"},
    }


def test_empty_cells_and_emptied_objects_are_omitted() -> None:
    mapping = {"member.first_name": "first", "member.address.zip": "zip", "member.address.city": "city"}
    assert map_record({"first": "Ann", "zip": "", "city": "  "}, mapping) == {"member": {"first_name": "Ann"}}
    assert map_record({"first": None, "zip": "", "city": ""}, mapping) == {}


def test_an_empty_item_before_a_set_one_is_refused_not_closed_up() -> None:
    # diagnosis_pointers count into diagnoses: closing the gap would point lines at the wrong diagnosis.
    with pytest.raises(Rejected) as err:
        map_record(dict(SOURCE, dx1="", dx3="J06.9"), CLAIM_LINES)
    assert err.value.reason_code == "mapping_failed" and err.value.detail.startswith("diagnoses[0]")
    with pytest.raises(Rejected, match=r"service_lines\[0\].modifiers\[1\]"):
        map_record(dict(SOURCE, line1_modifiers="25;;59"), CLAIM_LINES)
    with pytest.raises(Rejected, match=r"service_lines\[0\] is empty"):
        map_record(dict(SOURCE, line1_number="", line1_modifiers="", line1_pointers="", line2_number="2"),
                   CLAIM_LINES)
    # Trailing empties only shorten the list.
    assert map_record(dict(SOURCE, line1_modifiers="25;59;; "), CLAIM_LINES)["service_lines"][0]["modifiers"] == [
        "25", "59"]


@pytest.mark.parametrize(("source", "rule"), [
    ({"claim": 7}, None),
    ({"line1_number": "1.5"}, "not an integer"),
    ({"line1_number": "one"}, "not an integer"),
    ({"line1_number": True}, "not an integer"),
    ({"line1_pointers": "1;x"}, "not an integer"),
    ({"line1_modifiers": ["25"]}, "not text to split"),
])
def test_wrong_shapes_are_mapping_failed_without_the_value(source: dict[str, Any], rule: str | None) -> None:
    record = dict(SOURCE, **source)
    if rule is None:
        assert map_record(record, CLAIM_LINES)["claim_id"] == 7  # types are the schema check's business
        return
    with pytest.raises(Rejected) as err:
        map_record(record, CLAIM_LINES)
    assert err.value.reason_code == "mapping_failed" and rule in err.value.detail
    assert all(str(v) not in err.value.detail for v in source.values())


def test_a_missing_source_field_is_mapping_failed() -> None:
    source = dict(SOURCE)
    del source["dx2"]
    with pytest.raises(Rejected, match="source field 'dx2' for diagnoses\\[1\\] is missing"):
        map_record(source, CLAIM_LINES)


def test_constants_are_not_shared_between_records() -> None:
    compiled = compile_mapping(CLAIM_LINES)
    first = map_record(SOURCE, compiled)
    first["payer"]["name"] = "changed"
    assert map_record(SOURCE, compiled)["payer"]["name"] == "Example Health Plan"


def test_source_fields_in_mapping_order() -> None:
    assert source_columns(CLAIM_LINES) == ["claim", "dx1", "dx2", "dx3", "line1_number", "line1_modifiers",
                                           "line1_pointers", "line2_number"]
    assert required_source_fields(CLAIM_LINES) == set(source_columns(CLAIM_LINES))
    assert required_source_fields({"a": "x", "b": "x", "c": {"const": 1}}) == {"x"}


def test_the_corpus_eligibility_mapping_is_valid() -> None:
    mapping = json.loads((CORPUS / "eligibility_mapping.json").read_text())
    check_mapping(mapping)
    assert len(required_source_fields(mapping)) == len(mapping) - 3  # all but the three constants


@pytest.mark.parametrize(("mapping", "message"), [
    ({"": "x"}, "non-empty"),
    ({"a..b": "x"}, "segment ''"),
    ({"a.": "x"}, "segment ''"),
    ({"1a": "x"}, "segment '1a'"),
    ({"a[01]": "x"}, "segment 'a\\[01\\]'"),
    ({"a[1000]": "x"}, "index 0..999"),
    ({"a[0][0]": "x"}, "segment"),
    ({"a b": "x"}, "segment"),
    ({"a": "x", "a.b": "y"}, "overlap"),
    ({"a.b": "y", "a": "x"}, "overlap"),
    ({"a[0]": "x", "a.b": "y"}, "disagree on list or object"),
    ({"a.b": "x", "a[0]": "y"}, "disagree on list or object"),
    ({"a[1]": "x"}, "index 0 is not mapped"),
    ({"a[0]": "x", "a[2]": "y"}, "index 1 is not mapped"),
    ({"a": ""}, "source must be"),
    ({"a": 3}, "source must be"),
    ({"a": {"const": 1, "field": "x"}}, "source must be"),
    ({"a": {"field": "x", "sep": ";"}}, "source must be"),
    ({"a": {"field": ""}}, "'field' must be"),
    ({"a": {"field": "x", "split": ""}}, "'split' must be"),
    ({"a": {"field": "x", "type": "float"}}, "'type' must be"),
    ({3: "x"}, "non-empty string"),
    (["a"], "must be an object"),
])
def test_bad_mappings_fail_at_start_up_with_the_path(mapping: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_mapping(mapping)


def test_parse_path() -> None:
    assert parse_path("service_lines[12].charge") == ("service_lines", 12, "charge")
    assert parse_path("member.address.zip") == ("member", "address", "zip")


# --- fuzzing -------------------------------------------------------------------------------------

PATH = st.text(alphabet="ab_.[]019", min_size=0, max_size=12)
SPEC = st.one_of(
    st.sampled_from(["f1", "f2", "f3", ""]),
    st.fixed_dictionaries({"const": st.one_of(st.none(), st.integers(), st.text(max_size=3))}),
    st.fixed_dictionaries({"field": st.sampled_from(["f1", "f2", "f3"])},
                          optional={"split": st.sampled_from([";", "|", ""]),
                                    "type": st.sampled_from(["string", "integer", "date"])}),
    st.integers(),
)
VALUE = st.one_of(st.none(), st.text(alphabet=" ;|a1-", max_size=8), st.integers(), st.booleans(),
                  st.lists(st.text(max_size=2), max_size=2), st.floats(allow_nan=True))
SOURCE_RECORD = st.dictionaries(st.sampled_from(["f1", "f2", "f3", "f4"]), VALUE)


@FUZZ
@given(st.dictionaries(PATH, SPEC, max_size=6), SOURCE_RECORD)
def test_random_mappings_raise_only_value_error_then_only_rejected(mapping: dict[str, Any],
                                                                    source: dict[str, Any]) -> None:
    try:
        compiled = compile_mapping(mapping)
    except ValueError:
        return
    try:
        result = map_record(source, compiled)
    except Rejected as err:
        assert err.reason_code == "mapping_failed"
        return
    assert isinstance(result, dict)


CELL = st.text(alphabet="xy ", max_size=2)
# No list directly inside a list: the canonical model has none, and a path segment holds one index.
def _objects(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.dictionaries(st.sampled_from("abc"), inner, min_size=1, max_size=3)


NODE = st.recursive(CELL, lambda inner: _objects(inner) | st.lists(CELL | _objects(inner), min_size=1, max_size=3),
                    max_leaves=12)
TREE = _objects(NODE)
HOLE = object()


def flatten(value: Any, path: str = "") -> dict[str, str]:
    """{canonical path: cell} for every leaf of a nested record."""
    if isinstance(value, dict):
        return {p: c for k, v in value.items() for p, c in flatten(v, f"{path}.{k}" if path else k).items()}
    if isinstance(value, list):
        return {p: c for i, v in enumerate(value) for p, c in flatten(v, f"{path}[{i}]").items()}
    return {path: value}


def expected(value: Any) -> Any:
    """The documented result: blank cells and emptied containers absent, an inner gap a HOLE."""
    if isinstance(value, dict):
        kept = {k: expected(v) for k, v in value.items()}
        if any(v is HOLE for v in kept.values()):
            return HOLE
        return {k: v for k, v in kept.items() if v is not None} or None
    if isinstance(value, list):
        items = [expected(v) for v in value]
        while items and items[-1] is None:
            items.pop()
        return HOLE if HOLE in items or None in items else (items or None)
    return value if value.strip() else None


@FUZZ
@given(TREE)
def test_flattened_records_map_back_to_their_shape(tree: dict[str, Any]) -> None:
    cells = flatten(tree)
    mapping = {path: f"f{i}" for i, path in enumerate(cells)}
    source = {f"f{i}": cell for i, cell in enumerate(cells.values())}
    want = expected(tree)
    if want is HOLE:
        with pytest.raises(Rejected, match="is empty but a later item is set"):
            map_record(source, mapping)
    else:
        assert map_record(source, mapping) == (want or {})

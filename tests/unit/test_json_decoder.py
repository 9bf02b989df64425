"""JSON decoder on its corpus (tests/corpus/json) and under fuzzing: objects out, or a reason code."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udfs.dead_letters import Rejected
from udfs.decoders.json import decode

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "json"
# file -> the outcome per item, or the reason code of the whole unit
EXPECTED: dict[str, list[tuple[str, str]] | str] = {
    "bom_prefixed.json": [("message", "record")],
    "csv_injection.json": [("message", "record")],  # data, not a formula: the CSV decoder guards its own cells
    "deeply_nested.json": "malformed_json",
    "deeply_nested_object.json": "malformed_json",
    "duplicate_keys.json": [("message", "record")],  # last key wins, as in every mainstream parser
    "empty.json": "malformed_json",
    "huge_number.json": "malformed_json",
    "invalid_utf8.json": "malformed_json",
    "lines_mixed.jsonl": [("line 1", "record"), ("line 2", "malformed_json"), ("line 3", "not_an_object"),
                          ("line 5", "malformed_json")],
    "lone_surrogate.json": "malformed_json",
    "nan.json": "malformed_json",
    "null_byte.json": "malformed_json",
    "top_level_array.json": "not_an_object",
    "top_level_number.json": "not_an_object",
    "top_level_string.json": "not_an_object",
    "trailing_garbage.json": "malformed_json",
    "whitespace.json": "malformed_json",
}


def outcome(payload: bytes, lines: bool) -> list[tuple[str, str]] | str:
    try:
        return [(i.position, i.error.reason_code if i.error else "record") for i in decode(payload, {"lines": lines})]
    except Rejected as err:
        return err.reason_code


def test_the_corpus_is_all_covered() -> None:
    assert {p.name for p in CORPUS.iterdir()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str) -> None:
    assert outcome((CORPUS / name).read_bytes(), name.endswith(".jsonl")) == EXPECTED[name]


def test_a_huge_string_is_read_or_refused_without_trouble() -> None:
    payload = b'{"notes": ["' + b"A" * 2_000_000 + b'"]}'
    assert outcome(payload, False) == [("message", "record")]  # the unit size limit is the stage's job


def test_refusals_never_quote_the_input() -> None:
    secret = b'{"member": {"first_name": "Zebediah Quill", "ssn": "900-12-3456"'
    with pytest.raises(Rejected) as err:
        list(decode(secret, {}))
    assert "Zebediah" not in str(err.value) and "900-12" not in str(err.value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096), st.booleans())
def test_arbitrary_bytes_never_crash(data: bytes, lines: bool) -> None:
    outcome(data, lines)


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=4)),
       st.integers(0, 200))
def test_truncated_json_never_crashes(value: object, cut: int) -> None:
    payload = orjson.dumps({"v": value})
    result = outcome(payload[: max(0, len(payload) - cut)], False)
    assert result == [("message", "record")] or result in ("malformed_json", "not_an_object")

"""udfs.hygiene: the one text-normalisation step, its rule per text class, and its PHI-free refusals."""

from __future__ import annotations

import copy
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import RECORD_TYPES, leaf_paths
from udfs import hygiene
from udfs.dead_letters import Rejected
from udfs.hygiene import CLASSES, SIGNED_NUMBER, clean, clean_text, text_classes

FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-1+cmd|' /C calc'!A0", "@SUM(A1)", "  =HYPERLINK(x)", "-", "+",
            "- Apt 3", "=", "-2+3*A1", "'=1+1", '"=1+1"', "\u201c=1+1", "\uff1dSUM(A1)", "\uff20x", "' @x"]
NOT_FORMULAS = ["-12.50", "+12065550123", "+1 (206) 555-0123", "-.5", "a=b", "O'Brien", "1-2", "E11.9",
                "Anne-Marie", "Saint-\u00c9tienne"]
BIDI = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u200e", "\u200f", "\u061c", "\U000e0041"]
CONTROLS = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\x9b"]


def refusal(value: str, cls: str) -> str:
    with pytest.raises(Rejected) as caught:
        clean_text(value, cls, "subscriber.first_name")
    err = caught.value
    assert "subscriber.first_name" in err.detail and cls in err.detail
    core = value.strip(" \t\r\n\"'")
    assert len(core) < 3 or core not in err.detail, "a refusal never quotes the value"
    return err.reason_code


@pytest.mark.parametrize("cls", ["name", "address", "code"])
@pytest.mark.parametrize("value", FORMULAS)
def test_formula_starts_are_refused_in_names_addresses_and_codes(value: str, cls: str) -> None:
    assert refusal(value, cls) == "text_formula"


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_starts_are_neutralised_in_free_text(value: str) -> None:
    assert clean_text(value, "text", "notes[]") == "'" + value


@pytest.mark.parametrize("value", ["\t=1", "\r\n@SUM(A1)", "\n+cmd|x"])
def test_a_formula_behind_a_tab_or_line_break_is_caught_in_every_class(value: str) -> None:
    assert refusal(value, "name") == "text_control_character"  # names refuse the break itself
    assert clean_text(value, "text", "notes[]").startswith("'")


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("value", NOT_FORMULAS)
def test_signed_numbers_phones_and_hyphenated_names_pass_unchanged(value: str, cls: str) -> None:
    assert clean_text(value, cls, "x") == value


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("char", CONTROLS)
def test_c0_and_c1_controls_are_refused_everywhere(char: str, cls: str) -> None:
    assert refusal(f"Ann{char}Lee", cls) == "text_control_character"


@pytest.mark.parametrize("cls", ["name", "address", "code"])
@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\u2028", "\u2029"])
def test_line_breaks_and_tabs_are_refused_outside_free_text(char: str, cls: str) -> None:
    assert refusal(f"12 Elm St{char}Apt 4", cls) == "text_control_character"


def test_free_text_keeps_tabs_and_line_breaks_with_one_line_ending() -> None:
    assert clean_text("a\r\nb\rc\td\u2028e", "text", "notes[]") == "a\nb\nc\td\ne"
    assert clean_text("seen today", "text", "notes[]") == "seen today"


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("char", BIDI)
def test_bidi_embeddings_overrides_and_isolates_are_refused_everywhere(char: str, cls: str) -> None:
    assert refusal(f"Ann{char}eeL", cls) == "text_bidi_control"


@pytest.mark.parametrize("cls", ["name", "address", "text"])
@pytest.mark.parametrize("char", INVISIBLE)
def test_invisible_characters_are_stripped_from_free_text_classes(char: str, cls: str) -> None:
    assert clean_text(f"Ann{char}a Lee", cls, "x") == "Anna Lee"


@pytest.mark.parametrize("char", INVISIBLE)
def test_invisible_characters_are_refused_in_codes(char: str) -> None:
    assert refusal(f"MBR{char}0042", "code") == "text_invisible_character"


def test_nfc_and_unicode_spaces() -> None:
    decomposed = "Rene\u0301e\u00a0Zoe\u0308"
    assert clean_text(decomposed, "name", "x") == "Ren\u00e9e Zo\u00eb"
    assert clean_text("Ren\u00e9e", "name", "x") == "Ren\u00e9e"
    assert clean_text("A\u3000B\u2009C", "address", "x") == "A B C"
    assert clean_text("A\u00a0B", "code", "x") == "A\u00a0B"  # a code is never rewritten, only refused
    assert clean_text("I\u0307", "code", "x") == unicodedata.normalize("NFC", "I\u0307")


def test_lone_surrogates_are_refused() -> None:
    assert refusal("Ann\ud800", "name") == "text_bad_code_point"


def test_unchanged_strings_are_returned_as_the_same_object() -> None:
    value = "Maria Example"
    assert clean_text(value, "name", "x") is value


def test_the_schema_classes_name_every_free_text_field() -> None:
    # A string field without a pattern, enum, format or x-text would get the strict code rule by
    # accident; the schemas name a class for every one of them (names, address lines, notes).
    classes = {t: text_classes(t) for t in RECORD_TYPES}
    assert classes["claim"]["subscriber.first_name"] == "name"
    assert classes["claim"]["billing_provider.address.line1"] == "address"
    assert classes["payment"]["notes[]"] == "text"
    assert classes["eligibility"]["member.address.city"] == "address"
    for record_type in RECORD_TYPES:
        assert set(classes[record_type]) <= set(leaf_paths(record_type))
        assert set(classes[record_type].values()) <= {"name", "address", "text"}


def test_clean_walks_a_whole_record_by_class_and_names_unknown_keys_only_as_unknown() -> None:
    record = {"claim_id": "C1", "subscriber": {"first_name": "Ann\u200bie", "address": {"line1": "1\u00a0Elm"}},
              "notes": ["=1+1", "ok"], "diagnoses": ["E11.9"]}
    assert clean(record, "claim") == {"claim_id": "C1", "subscriber": {"first_name": "Annie",
                                                                      "address": {"line1": "1 Elm"}},
                                      "notes": ["'=1+1", "ok"], "diagnoses": ["E11.9"]}
    with pytest.raises(Rejected) as caught:
        clean({"subscriber": {"maria.example@example.invalid": "\x00"}}, "claim")
    assert "maria" not in caught.value.detail and "(unknown field)" in caught.value.detail
    with pytest.raises(Rejected) as caught:
        clean({"diagnoses": ["E11.9", "=cmd"]}, "claim")
    assert caught.value.reason_code == "text_formula" and caught.value.detail.startswith("diagnoses[]")


@settings(max_examples=300, deadline=None)
@given(value=st.text(max_size=40), cls=st.sampled_from(CLASSES))
def test_any_text_is_cleaned_to_a_safe_form_or_refused_without_quoting_it(value: str, cls: str) -> None:
    try:
        out = clean_text(value, cls, "f")
    except Rejected as err:
        assert err.reason_code.startswith("text_")
        assert err.detail.startswith("f (")
        return
    assert unicodedata.is_normalized("NFC", out)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in "\t\n" for c in out)
    assert cls == "text" or not any(c in "\t\n" for c in out)
    head = out.lstrip(" \t\r\n\"'\u2018\u2019\u201c\u201d\uff02\uff07")
    signed_number = SIGNED_NUMBER.fullmatch(head) is not None  # "-0", "+1 206 555 0123": no function call
    if head[:1] in ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20") and cls == "text" and not signed_number:
        assert out.startswith("'") and clean_text(out[1:], cls, "f") == out  # neutralised exactly once
    assert clean_text(out, cls, "f") in (out, "'" + out)  # a second pass changes nothing but a prefix


# Mostly plain values (so the fast path is taken), some with a suspect first character or any ASCII.
ASCII_TEXT = st.tuples(
    st.sampled_from(["", "", "", "=", "+", "-", "@", " ", "'", '"', "\t", "\x7f"]),
    st.one_of(st.text(string.ascii_letters + string.digits + " .,-=+@'", max_size=10),
              st.text(st.characters(max_codepoint=127), max_size=6)),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(ASCII_TEXT, min_size=1, max_size=8), record_type=st.sampled_from(RECORD_TYPES))
def test_the_whole_record_fast_path_agrees_with_the_walk(values: list[str], record_type: str) -> None:
    # clean() skips the walk when the record's JSON shows nothing to look at; it must never skip a change.
    paths = [*sorted(text_classes(record_type)), "record_id", "feed"]
    record: dict[str, object] = {}
    for i, value in enumerate(values):
        node = record
        *parents, leaf = paths[i % len(paths)].replace("[]", "").split(".")
        for parent in parents:
            node = node.setdefault(parent, {})  # type: ignore[assignment]
        node[leaf] = [value] if paths[i % len(paths)].endswith("[]") else value
    walked = copy.deepcopy(record)
    try:
        hygiene._walk_dict(walked, hygiene.shape(record_type), "")
    except Rejected as err:
        with pytest.raises(Rejected) as caught:
            clean(record, record_type)
        assert caught.value.reason_code == err.reason_code
        return
    assert clean(record, record_type) == walked

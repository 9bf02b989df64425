"""standardize's fast paths for contract dates and US national phones agree with strptime and phonenumbers.

`_strptime_date` reads "%m/%d/%Y" and "%Y%m%d" with a regex and date(); `_parse_phone` reads the common
US national forms with a regex. Each must give exactly what `datetime.strptime` / `phonenumbers.parse`
give (the same value, or a refusal where they refuse) on every input, and `_date` / `_phone` must
return what their strptime-only / parse-only references return, or raise the same reason code.
Inputs are generated (hypothesis) around the accepted shapes and exhaustive over edge grids: leap
days, day 0 and 32, month 0 and 13, one-digit fields, years 0 and 9999, extensions, letters,
non-ASCII digits, + forms, too few and too many digits. All values are synthetic.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import phonenumbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.contracts import load_contracts
from udfs import standardize as std
from udfs.standardize import StandardizeOptions

FAST_FORMATS = tuple(std._FAST_DATE_FORMATS)
CONTRACT_OPTIONS = sorted({StandardizeOptions.from_contract(c.standardize) for c in load_contracts().values()},
                          key=repr)
DATE_OPTIONS = [*CONTRACT_OPTIONS, StandardizeOptions(date_formats=FAST_FORMATS),
                StandardizeOptions(date_formats=FAST_FORMATS[::-1]),
                StandardizeOptions(date_formats=("%d.%m.%Y", *FAST_FORMATS))]
PHONE_OPTIONS = [StandardizeOptions(phone_region=r) for r in ("US", "CA", "PR", "GB", "DE")]
MANY = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Digits other scripts write: strptime's \d and phonenumbers both read some of them.
OTHER_DIGITS = tuple("".join(chr(zero + i) for i in range(10)) for zero in (0x660, 0xFF10, 0x7C0, 0x6F0))


def _outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except std._Bad as bad:
        return ("bad", bad.code)
    except ValueError as err:
        return ("ValueError", str(err))


def _strptime(text: str, fmt: str) -> str:
    return datetime.strptime(text, fmt).date().isoformat()


def _parse(fn: Any, text: str, region: str) -> tuple[Any, ...]:
    try:
        number = fn(text, region)
    except phonenumbers.NumberParseException as err:
        return ("refused", err.error_type, str(err))
    return ("ok", number)


def _assert_date_equal(text: str) -> None:
    for fmt in FAST_FORMATS:
        # Fast path and strptime: same ISO day, or both ValueError (messages may differ: the fast path
        # falls back to strptime for every text it does not read, so its ValueErrors are strptime's own).
        fast, slow = _outcome(std._strptime_date, text, fmt), _outcome(_strptime, text, fmt)
        assert fast[0] == slow[0] and (fast[0] != "ok" or fast == slow), (text, fmt, fast, slow)
        if fast[0] == "ValueError":
            assert fast == slow, (text, fmt, fast, slow)
    for options in DATE_OPTIONS:
        assert _outcome(std._date, text, options) == _outcome(std._date_reference, text, options), (text, options)


def _assert_phone_equal(text: str) -> None:
    for region in ("US", "CA"):
        assert _parse(std._parse_phone, text, region) == _parse(phonenumbers.parse, text, region), (text, region)
    for options in PHONE_OPTIONS:
        assert _outcome(std._phone, text, options) == _outcome(std._phone_reference, text, options), (text, options)


# --- dates -----------------------------------------------------------------------------------------

def _number_forms(n: int) -> list[str]:
    return sorted({str(n), f"{n:02d}", f" {n}", f"{n:03d}"})


def test_date_grid_every_month_and_day_form() -> None:
    """Every month 0-13 and day 0-32, in 1-, 2- and 3-digit and space-padded forms, over leap and edge years."""
    fast_hits = 0
    for year in ("0000", "0099", "1900", "2000", "2023", "2024", "2100", "9999", "999"):
        for month, day in itertools.product(range(14), range(33)):
            for m, d in itertools.product(_number_forms(month), _number_forms(day)):
                for text in (f"{m}/{d}/{year}", f"{year}{m}{d}"):
                    _assert_date_equal(text)
                    fast_hits += any(p.fullmatch(text) for p, _ in std._FAST_DATE_FORMATS.values())
    assert fast_hits > 10_000  # the grid exercised the fast path, not only the fallback


def test_date_leap_days_and_month_ends() -> None:
    for year in (1600, 1700, 1900, 2000, 2023, 2024, 2100, 2400):
        for month, day in ((2, 28), (2, 29), (2, 30), (4, 30), (4, 31), (12, 31), (1, 32)):
            for text in (f"{month:02d}/{day:02d}/{year}", f"{month}/{day}/{year}", f"{year}{month:02d}{day:02d}"):
                _assert_date_equal(text)
                _assert_date_equal(f"  {text}\t")


_DATE_ALPHABET = "0123456789/ -.T:+Z" + OTHER_DIGITS[0][:4] + OTHER_DIGITS[1][:4]


@MANY
@given(st.text(alphabet=_DATE_ALPHABET, max_size=14))
def test_date_random_text(text: str) -> None:
    _assert_date_equal(text)


@MANY
@given(st.integers(0, 14), st.integers(0, 33), st.integers(0, 10_000), st.sampled_from(["/", "-", "", " ", "//"]),
       st.sampled_from([(2, 2, 4), (1, 1, 4), (2, 2, 2), (1, 2, 4), (2, 1, 3)]),
       st.sampled_from(["", " ", "x", "0"]), st.integers(0, len(OTHER_DIGITS)))
def test_date_generated_fields(month: int, day: int, year: int, sep: str, widths: tuple[int, int, int],
                               tail: str, script: int) -> None:
    mw, dw, yw = widths
    m, d, y = f"{month:0{mw}d}", f"{day:0{dw}d}", f"{year:0{yw}d}"
    texts = [f"{m}{sep}{d}{sep}{y}{tail}", f"{y}{m}{d}{tail}", f"{y}{sep}{m}{sep}{d}"]
    if script < len(OTHER_DIGITS):  # the same text in another script's digits
        table = str.maketrans("0123456789", OTHER_DIGITS[script])
        texts += [t.translate(table) for t in texts]
    for text in texts:
        _assert_date_equal(text)


def test_date_fast_path_is_taken_for_contract_forms() -> None:
    assert std._FAST_DATE_FORMATS["%m/%d/%Y"][0].fullmatch("03/17/1939")
    assert std._FAST_DATE_FORMATS["%Y%m%d"][0].fullmatch("19390317")
    assert std._strptime_date("3/7/2024", "%m/%d/%Y") == "2024-03-07"
    assert std._strptime_date("20240229", "%Y%m%d") == "2024-02-29"


# --- phones ----------------------------------------------------------------------------------------

_PREFIXES = ("", "1", "1-", "1 ", "+1", "+1-", "+1 ", "+", "+ 1 ", "01", "011", "0", "11", "+44 ", " ", "(1)",
             "1(", "tel:", "+1.", "1.")
_AREA_FORMS = ("{a}", "({a})", "({a}) ", "({a}", "{a})", "( {a} )", "[{a}]")
_SEPARATORS = ("", "-", ".", " ", "  ", "/", "\u2013", "-.", "\t")
_SUFFIXES = ("", " x123", " ext. 5", "x", "#12", " ", "a", ";ext=1", ",", "0", "-", "\u200b")


def _phone_text(prefix: str, area: str, area_form: str, sep1: str, exchange: str, sep2: str, line: str,
                suffix: str) -> str:
    return f"{prefix}{area_form.format(a=area)}{sep1}{exchange}{sep2}{line}{suffix}"


def test_phone_grid_every_area_code() -> None:
    """Every area code 000-999 in the forms the fast path reads and their near misses."""
    fast_hits = 0
    forms = [("", "({a}) ", "", "-"), ("", "{a}", "-", "-"), ("", "{a}", ".", "."), ("", "{a}", "", ""),
             ("+1 ", "{a}", " ", " "), ("1-", "{a}", "-", "-"), ("1", "{a}", "", ""), ("+1", "({a})", "", "-"),
             ("", "({a})", " ", "-"), ("", "({a}", " ", "-"), ("1 ", "({a}) ", "", "-")]
    for area in range(1000):
        for exchange, line in (("555", "0134"), ("011", "1234")):
            for prefix, area_form, sep1, sep2 in forms:
                text = _phone_text(prefix, f"{area:03d}", area_form, sep1, exchange, sep2, line, "")
                _assert_phone_equal(text)
                fast_hits += std._US_NATIONAL.fullmatch(text) is not None
    assert fast_hits > 10_000  # most of the grid went through the fast path


@MANY
@given(st.sampled_from(_PREFIXES), st.text("0123456789", min_size=1, max_size=5), st.sampled_from(_AREA_FORMS),
       st.sampled_from(_SEPARATORS), st.text("0123456789", min_size=1, max_size=5), st.sampled_from(_SEPARATORS),
       st.text("0123456789", min_size=1, max_size=6), st.sampled_from(_SUFFIXES),
       st.integers(0, 2 * len(OTHER_DIGITS)))
def test_phone_generated_forms(prefix: str, area: str, area_form: str, sep1: str, exchange: str, sep2: str,
                               line: str, suffix: str, script: int) -> None:
    text = _phone_text(prefix, area, area_form, sep1, exchange, sep2, line, suffix)
    if script < len(OTHER_DIGITS):  # one group or all of it in another script's digits
        table = str.maketrans("0123456789", OTHER_DIGITS[script])
        text = _phone_text(prefix, area.translate(table), area_form, sep1, exchange, sep2, line, suffix)
        _assert_phone_equal(text.translate(table))
    _assert_phone_equal(text)


@MANY
@given(st.text(alphabet="0123456789()+-. xXetTABCDEFGHIJKLMNOPQRSTUVWXYZ#;=*" + OTHER_DIGITS[1][:3], max_size=24))
def test_phone_random_text(text: str) -> None:
    _assert_phone_equal(text)


def test_phone_letters_and_long_forms_take_the_slow_path() -> None:
    for text in ("1-800-FLOWERS", "(415) 555-O134", "+1 415 555 0134 x12", "415-555-01345", "415-555-013",
                 "+1 415 555 0134" + "0" * 60, "+1 (415) 555-0134", "1 (415) 555-0134"):
        _assert_phone_equal(text)
    assert std._US_NATIONAL.fullmatch("1-800-FLOWERS") is None
    assert std._US_NATIONAL.fullmatch("(415) 555-0134") is not None

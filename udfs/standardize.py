"""Standardization: rewrite a mapped record's dates, money, codes, names, phones, states and ZIPs to canonical form.

Runs before the JSON Schema check, on a canonical-shaped record that a mapping built from a CSV,
X12 or JSON feed. Each record type's structure is data (`SPECS`): only the fields named there are
touched, so a key that merely looks like a date elsewhere is never rewritten. What it guarantees:

- A value already canonical comes back unchanged, so standardize is idempotent.
- Text of a known kind that cannot be read (a date in no accepted format, a phone that is not a
  number) is a `Rejected` with a `std_bad_*` code naming every bad field's JSON path, never a value.
- A value of the wrong JSON type (a list where a date goes, a number where a phone goes) is left
  as it is: the schema check reports it with its path. Money is the exception below.
- Money is exact: strings and ints go through `Decimal` text, never binary floating point. A JSON
  float is rejected (std_bad_money), not rounded: by the time a float reaches us the sender's digits
  may already be lost, and the canonical contract says money is never a JSON number. A value with
  more than two significant decimal places ("12.345") is rejected too; "12.500" is fine.
- The input is never mutated. Every dict and list on a walked path is a new object; values outside
  the structure (unknown keys, which the schema then refuses) are shared, not copied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from udfs.canonical_fields import (
    CODE,
    CODE2,
    CODE3,
    DATE,
    DATETIME,
    ICD10,
    ID,
    KEEP,
    LOWER_CODE,
    MONEY,
    NAME,
    PHONE,
    SIGNED_MONEY,
    SPECS,
    STATE,
    ZIP,
    Each,
    Spec,
)
from udfs.dead_letters import Rejected
from udfs.reasons import UNKNOWN_RECORD_TYPE, define
from udfs.us_states import usps_code

BAD_DATE = define("std_bad_date", "validation", "a date is not ISO YYYY-MM-DD, a contract date format or a real day")
BAD_DATETIME = define(
    "std_bad_datetime", "validation", "a date-time is not RFC 3339, a contract format or a real instant"
)
BAD_MONEY = define(
    "std_bad_money", "validation", "an amount is not an exact decimal with at most two places (floats refused)"
)
BAD_PHONE = define("std_bad_phone", "validation", "a phone number is not a valid number in the feed's region")
BAD_STATE = define("std_bad_state", "validation", "a state is not a USPS state, territory or military code or name")
BAD_ZIP = define("std_bad_zip", "validation", "a ZIP is not 5 digits or ZIP+4")


# --- options -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StandardizeOptions:
    """A feed contract's `standardize:` options, checked when the job starts."""

    date_formats: tuple[str, ...] = ()  # strptime formats accepted besides ISO, e.g. "%m/%d/%Y"
    datetime_formats: tuple[str, ...] = ()  # strptime formats accepted besides RFC 3339, e.g. "%Y%m%d%H%M"
    timezone: str = "UTC"  # IANA zone of a date-time that carries no offset
    phone_region: str = "US"  # region a phone without a country code is dialled from
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"standardize.timezone: {self.timezone!r} is not an IANA time zone") from None
        object.__setattr__(self, "zone", zone)
        if self.phone_region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"standardize.phone_region: {self.phone_region!r} is not a phone region")
        probe = datetime(2024, 11, 28, 13, 45, 30)
        for key, formats in (("date_formats", self.date_formats), ("datetime_formats", self.datetime_formats)):
            for fmt in formats:
                # A format that cannot read back what it writes would reject every record of the feed.
                try:
                    if "%" not in fmt:
                        raise ValueError(fmt)
                    datetime.strptime(probe.strftime(fmt), fmt)
                except ValueError:
                    raise ValueError(f"standardize.{key}: {fmt!r} is not a usable strptime format") from None

    @classmethod
    def from_contract(cls, options: Mapping[str, Any] | None) -> StandardizeOptions:
        """Build the options from a feed contract's `standardize:` mapping, naming any bad key."""
        options = options or {}
        known = {"date_formats", "datetime_formats", "timezone", "phone_region"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"standardize: unknown option(s) {unknown}; expected some of {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key in ("date_formats", "datetime_formats"):
            if key in options:
                value = options[key]
                if isinstance(value, str) or not all(isinstance(f, str) for f in value):
                    raise ValueError(f"standardize.{key}: expected a list of strptime formats")
                kwargs[key] = tuple(value)
        for key in ("timezone", "phone_region"):
            if key in options:
                if not isinstance(options[key], str):
                    raise ValueError(f"standardize.{key}: expected a string")
                kwargs[key] = options[key]
        return cls(**kwargs)


DEFAULT_OPTIONS = StandardizeOptions()


# --- leaf normalizers --------------------------------------------------------------------------

class _Bad(Exception):
    """A leaf value of a known kind that cannot be read; carries only the reason code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


_MAX_TEXT = 64  # longer than any date, amount, phone or ZIP: refuse before parsing, cheaply
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2})(:[0-9]{2})?(?:\.([0-9]{1,9}))?"
    r" ?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)
_MONEY = re.compile(
    r"(-)?\$? ?(-)?([0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.([0-9]*))?"
)
_ZIP = re.compile(r"([0-9]{5})(?:[- ]?([0-9]{4}))?")
_NANP_E164 = re.compile(r"\+1[2-9][0-9]{9}")
_ICD10_NO_DOT = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{1,4}")


# Fast paths for the contract date formats feeds actually use. Each regex accepts only ASCII text that
# strptime reads with the same fields (its %m/%d alternations pick the same split on these shapes); a
# match that is not a real day, and anything else, goes to strptime, so results and refusals are its own
# (tests/unit/test_standardize_fast_paths.py compares both over generated and edge inputs).
_FAST_DATE_FORMATS: dict[str, tuple[re.Pattern[str], tuple[int, int, int]]] = {  # groups of (year, month, day)
    "%m/%d/%Y": (re.compile(r"(1[0-2]|0[1-9]|[1-9])/(3[01]|[12][0-9]|0[1-9]|[1-9])/([0-9]{4})"), (3, 1, 2)),
    "%Y%m%d": (re.compile(r"([0-9]{4})(1[0-2]|0[1-9])(3[01]|[12][0-9]|0[1-9])"), (1, 2, 3)),
}


def _strptime_date(text: str, fmt: str) -> str:
    """strptime(text, fmt)'s day as ISO text, by a regex and date() where fmt has a fast path."""
    fast = _FAST_DATE_FORMATS.get(fmt)
    if fast is not None:
        m = fast[0].fullmatch(text)
        if m is not None:
            y, mo, d = fast[1]
            try:
                return date(int(m[y]), int(m[mo]), int(m[d])).isoformat()
            except ValueError:
                pass  # not a real day (02/30, year 0): strptime raises for it below
    return datetime.strptime(text, fmt).date().isoformat()


def _date(value: Any, options: StandardizeOptions) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise _Bad(BAD_DATE)
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise _Bad(BAD_DATE) from None
    for fmt in options.date_formats:
        try:
            return _strptime_date(text, fmt)
        except ValueError:
            continue
    raise _Bad(BAD_DATE)


def _date_reference(value: Any, options: StandardizeOptions) -> Any:
    """_date with strptime alone: the behaviour the fast paths must keep (tests compare the two)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise _Bad(BAD_DATE)
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            raise _Bad(BAD_DATE) from None
    for fmt in options.date_formats:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise _Bad(BAD_DATE)


def _utc_text(moment: datetime, fraction: str) -> str:
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{utc.isoformat(timespec='seconds')}{'.' + fraction if fraction else ''}Z"


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    local = naive.replace(tzinfo=zone)  # fold=0: the repeated autumn hour reads as daylight time
    # A wall time skipped by a DST change (02:30 on a spring-forward night) names no instant.
    if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise _Bad(BAD_DATETIME)
    return local


def _datetime(value: Any, options: StandardizeOptions) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) > _MAX_TEXT:
        raise _Bad(BAD_DATETIME)
    try:
        m = _DATETIME.fullmatch(text)
        if m:
            day, hm, sec, fraction, zulu, sign, oh, om = m.groups()
            naive = datetime.fromisoformat(f"{day}T{hm}{sec or ':00'}")
            if zulu:
                moment = naive.replace(tzinfo=UTC)
            elif sign:
                if int(oh) > 23 or int(om) > 59:
                    raise _Bad(BAD_DATETIME)
                offset = timedelta(hours=int(oh), minutes=int(om))
                moment = naive.replace(tzinfo=timezone(-offset if sign == "-" else offset))
            else:
                moment = _localize(naive, options.zone)
            return _utc_text(moment, fraction or "")
        for fmt in options.datetime_formats:
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            moment = parsed if parsed.tzinfo else _localize(parsed, options.zone)
            return _utc_text(moment.replace(microsecond=0), f"{parsed.microsecond:06d}" if parsed.microsecond else "")
    except (ValueError, OverflowError):
        # Out-of-range fields (month 13, 25:00) and instants that leave datetime's years 1-9999 in UTC.
        raise _Bad(BAD_DATETIME) from None
    raise _Bad(BAD_DATETIME)


def _money_text(text: str, signed: bool) -> str:
    m = _MONEY.fullmatch(text)
    if not m:
        raise _Bad(BAD_MONEY)
    sign1, sign2, whole, fraction = m.groups()
    whole = whole.replace(",", "")
    fraction = fraction or ""
    if (sign1 and sign2) or not (whole or fraction):
        raise _Bad(BAD_MONEY)
    kept = fraction.rstrip("0")
    if len(kept) > 2:
        # "12.345" has a third significant place: rounding it would change the amount the sender meant.
        raise _Bad(BAD_MONEY)
    whole = whole.lstrip("0") or "0"
    cents = kept.ljust(2, "0")
    negative = bool(sign1 or sign2) and (whole != "0" or cents != "00")
    if negative and not signed:
        raise _Bad(BAD_MONEY)
    return f"{'-' if negative else ''}{whole}.{cents}"


def _money_of(value: Any, signed: bool) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT:
            raise _Bad(BAD_MONEY)
        return _money_text(text, signed)
    if isinstance(value, bool):
        return value  # a JSON true/false is a type error for the schema to name
    if isinstance(value, int):
        if abs(value) >= 10**_MAX_TEXT:
            raise _Bad(BAD_MONEY)
        return _money_text(str(value), signed)
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value.adjusted()) > _MAX_TEXT:
            raise _Bad(BAD_MONEY)
        return _money_text(format(value, "f"), signed)
    if isinstance(value, float):
        raise _Bad(BAD_MONEY)
    return value


def _money(value: Any, options: StandardizeOptions) -> Any:
    return _money_of(value, signed=False)


def _signed_money(value: Any, options: StandardizeOptions) -> Any:
    return _money_of(value, signed=True)


def _code(value: Any, options: StandardizeOptions) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _padded(width: int) -> Callable[[Any, StandardizeOptions], Any]:
    def pad(value: Any, options: StandardizeOptions) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip().upper()
        # Spreadsheets turn "01" into 1; a short all-digit code of a fixed-width set lost its zeros.
        if text.isascii() and text.isdigit() and len(text) < width:
            return text.zfill(width)
        return text
    return pad


def _lower_code(value: Any, options: StandardizeOptions) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _icd10(value: Any, options: StandardizeOptions) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip().upper()
    if _ICD10_NO_DOT.fullmatch(text):
        # ICD-10-CM puts the dot after the three-character category: E119 -> E11.9.
        return f"{text[:3]}.{text[3:]}"
    return text


def _name(value: Any, options: StandardizeOptions) -> Any:
    return " ".join(value.split()) if isinstance(value, str) else value


def _id(value: Any, options: StandardizeOptions) -> Any:
    return value.strip() if isinstance(value, str) else value


# The US national forms feeds send: (415) 555-0134, 415-555-0134, 415.555.0134, 415 555 0134,
# 4155550134, each optionally after "1", "1-", "1 ", "+1", "+1-" or "+1 ". ASCII digits only (phonenumbers
# also reads other scripts' digits and letters: those take the slow path). For this text phonenumbers.parse
# with a NANP region yields exactly PhoneNumber(country_code=1, national_number=<the ten digits>), which
# tests/unit/test_standardize_fast_paths.py checks against it over generated and edge inputs.
_US_NATIONAL = re.compile(
    r"(?:\+?1[ -]?)?(?:\(([2-9][0-9]{2})\) ?|([2-9][0-9]{2})[-. ]?)([0-9]{3})[-. ]?([0-9]{4})"
)


def _parse_phone(value: str, region: str) -> phonenumbers.PhoneNumber:
    """phonenumbers.parse(value, region), without its free-form parser for the common US forms."""
    if region == "US":
        m = _US_NATIONAL.fullmatch(value)
        if m is not None:
            return phonenumbers.PhoneNumber(country_code=1, national_number=int(f"{m[1] or m[2]}{m[3]}{m[4]}"))
    return phonenumbers.parse(value, region)


def _phone(value: Any, options: StandardizeOptions) -> Any:
    if not isinstance(value, str):
        return value
    if len(value) > _MAX_TEXT:
        raise _Bad(BAD_PHONE)
    if _NANP_E164.fullmatch(value):
        # Already E.164 in the NANP, the usual case: the free-form parser would cost most of the stage's time.
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int(value[2:]))
    else:
        try:
            number = _parse_phone(value, options.phone_region)
        except phonenumbers.NumberParseException:
            raise _Bad(BAD_PHONE) from None
        if number.extension:
            raise _Bad(BAD_PHONE)  # E.164 has no extension: dropping it would lose part of the number
    # The feed's own region first: is_valid_number tries every region of the country code in turn.
    if not (phonenumbers.is_valid_number_for_region(number, options.phone_region)
            or phonenumbers.is_valid_number(number)):
        raise _Bad(BAD_PHONE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_reference(value: Any, options: StandardizeOptions) -> Any:
    """_phone with phonenumbers.parse alone: the behaviour the fast path must keep (tests compare the two)."""
    if not isinstance(value, str):
        return value
    if len(value) > _MAX_TEXT:
        raise _Bad(BAD_PHONE)
    if _NANP_E164.fullmatch(value):
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int(value[2:]))
    else:
        try:
            number = phonenumbers.parse(value, options.phone_region)
        except phonenumbers.NumberParseException:
            raise _Bad(BAD_PHONE) from None
        if number.extension:
            raise _Bad(BAD_PHONE)
    if not (phonenumbers.is_valid_number_for_region(number, options.phone_region)
            or phonenumbers.is_valid_number(number)):
        raise _Bad(BAD_PHONE)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _state(value: Any, options: StandardizeOptions) -> Any:
    if not isinstance(value, str):
        return value
    code = usps_code(value) if len(value) <= _MAX_TEXT else None
    if code is None:
        raise _Bad(BAD_STATE)
    return code


def _zip(value: Any, options: StandardizeOptions) -> Any:
    if not isinstance(value, str):
        return value
    m = _ZIP.fullmatch(value.strip())
    if not m:
        raise _Bad(BAD_ZIP)
    return f"{m[1]}-{m[2]}" if m[2] else m[1]


def _keep(value: Any, options: StandardizeOptions) -> Any:
    return value


_KINDS: dict[str, Callable[[Any, StandardizeOptions], Any]] = {
    DATE: _date, DATETIME: _datetime, MONEY: _money, SIGNED_MONEY: _signed_money,
    CODE: _code, CODE2: _padded(2), CODE3: _padded(3), LOWER_CODE: _lower_code, ICD10: _icd10,
    NAME: _name, ID: _id, PHONE: _phone, STATE: _state, ZIP: _zip, KEEP: _keep,
}


# --- the walk ----------------------------------------------------------------------------------

Path: TypeAlias = tuple[str | int, ...]


def json_path(path: Iterable[str | int]) -> str:
    """Render a path as JSONPath ($.a[0].b); keys come from the specs, so no record text appears."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def describe_failures(failures: Iterable[tuple[str, Path]], per_code: int = 5) -> str:
    """PHI-free detail: each failing code once, in first-seen order, with up to `per_code` JSON paths."""
    grouped: dict[str, list[Path]] = {}
    for code, path in failures:
        grouped.setdefault(code, []).append(path)
    parts = []
    for code, paths in grouped.items():
        shown = ", ".join(json_path(p) for p in paths[:per_code])
        more = f" (+{len(paths) - per_code} more)" if len(paths) > per_code else ""
        parts.append(f"{code} at {shown}{more}")
    return "; ".join(parts)


_Failures: TypeAlias = list[tuple[str, Path]]
_Step: TypeAlias = Callable[[Any, Path, "str | int | None", StandardizeOptions, _Failures], Any]


def _compile(spec: Spec, kinds: Mapping[str, Callable[[Any, StandardizeOptions], Any]] = _KINDS) -> _Step:
    """Turn a spec into nested closures once, so a record costs no spec interpretation.

    A step gets its parent's path and its own key, and builds its path only when it needs one:
    leaves never do unless they fail, which keeps tuple building off the hot path.
    """
    if isinstance(spec, str):
        normalize = kinds[spec]

        def leaf(value: Any, parent: Path, key: str | int | None, options: StandardizeOptions,
                 failures: _Failures) -> Any:
            try:
                return normalize(value, options)
            except _Bad as bad:
                failures.append((bad.code, (*parent, key) if key is not None else parent))
                return value
        return leaf
    if isinstance(spec, Each):
        if spec.item == KEEP:
            return lambda value, parent, key, options, failures: list(value) if isinstance(value, list) else value
        item = _compile(spec.item, kinds)

        def each(value: Any, parent: Path, key: str | int | None, options: StandardizeOptions,
                 failures: _Failures) -> Any:
            if not isinstance(value, list):
                return value
            path = (*parent, key) if key is not None else parent
            return [item(v, path, i, options, failures) for i, v in enumerate(value)]
        return each
    fields = tuple((name, _compile(sub, kinds)) for name, sub in spec.items())

    def obj(value: Any, parent: Path, key: str | int | None, options: StandardizeOptions,
            failures: _Failures) -> Any:
        if not isinstance(value, dict):
            return value  # the schema check names the wrong type
        path = (*parent, key) if key is not None else parent
        out = dict(value)
        for name, step in fields:
            if name in out:
                out[name] = step(out[name], path, name, options, failures)
        return out
    return obj


# The spec interpreted closure by closure, with strptime and phonenumbers.parse alone (no fast path): the
# reference the generated walk below must agree with (tests/unit/test_standardize_generated.py runs both
# on generated and broken records; test_record_path_equivalence.py runs the whole stage both ways).
_REFERENCE_KINDS = {**_KINDS, DATE: _date_reference, PHONE: _phone_reference}
REFERENCE_STEPS: dict[str, _Step] = {
    record_type: _compile(spec, _REFERENCE_KINDS) for record_type, spec in SPECS.items()
}


# --- the generated walk ------------------------------------------------------------------------
#
# The same walk as _compile's closures, written out once per record type as straight-line Python:
# one function per object spec, leaves inlined, no call or try block for a kind that cannot fail,
# and a value already in canonical form (an ISO date, "12.50") kept after the cheapest check that
# proves it canonical. Field order, failure order and paths are the closures' own.

_NEVER_FAIL = {  # kind -> inline expression of the normalized value (v is a str here)
    CODE: "v.strip().upper()", ID: "v.strip()", LOWER_CODE: "v.strip().lower()", NAME: '" ".join(v.split())',
}
_CALL_NEVER_FAIL = (CODE2, CODE3, ICD10)  # the normalizer is called, but raises nothing
# Already canonical, so the normalizer would return an equal string: money with no leading zero and at
# most 64 characters (_MAX_TEXT), an ISO date that names a real day (date.fromisoformat checks that).
_CANONICAL_MONEY = re.compile(r"(?:0|[1-9][0-9]{0,59})\.[0-9]{2}")


class _Generator:
    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {
            "_Bad": _Bad, "_KINDS": _KINDS, "_date_fromisoformat": date.fromisoformat,
            "_iso_date": _ISO_DATE.fullmatch, "_canonical_money": _CANONICAL_MONEY.fullmatch,
        }
        self.functions: list[str] = []
        self.count = 0

    def leaf(self, kind: str, target: str, where: str, pad: str) -> list[str]:
        """Lines normalizing `v` into `target`; a failure is recorded at the path expression `where`."""
        if kind == KEEP:
            return []
        if kind in _NEVER_FAIL:
            return [f"{pad}if isinstance(v, str):\n{pad}    {target} = {_NEVER_FAIL[kind]}\n"]
        fn = f"_KINDS[{kind!r}]"
        if kind in _CALL_NEVER_FAIL:
            return [f"{pad}{target} = {fn}(v, options)\n"]
        fast = {
            DATE: "v.__class__ is str and len(v) == 10 and _iso_date(v)",
            MONEY: "v.__class__ is str and _canonical_money(v)",
            SIGNED_MONEY: "v.__class__ is str and _canonical_money(v)",
        }.get(kind)
        lines = []
        inner = pad
        if fast:
            lines.append(f"{pad}if {fast}:\n")
            if kind == DATE:  # canonical form, but is it a real day? (2024-02-30 is not)
                lines.append(f"{pad}    try:\n{pad}        _date_fromisoformat(v)\n"
                             f"{pad}    except ValueError:\n{pad}        failures.append(({BAD_DATE!r}, {where}))\n")
            else:
                lines.append(f"{pad}    pass\n")
            lines.append(f"{pad}else:\n")
            inner = pad + "    "
        lines.append(f"{inner}try:\n{inner}    {target} = {fn}(v, options)\n"
                     f"{inner}except _Bad as bad:\n{inner}    failures.append((bad.code, {where}))\n")
        return lines

    def value(self, spec: Spec, target: str, path: str, key: str, pad: str) -> list[str]:
        """Lines standardizing `v` (the value at `path` + `key`) into `target`."""
        where = f"({path}) + ({key},)" if path != "()" else f"({key},)"
        if isinstance(spec, str):
            return self.leaf(spec, target, where, pad)
        if isinstance(spec, Each):
            self.count += 1
            n = self.count
            if spec.item == KEEP:
                return [f"{pad}if isinstance(v, list):\n{pad}    {target} = list(v)\n"]
            lines = [f"{pad}if isinstance(v, list):\n", f"{pad}    _p{n} = {where}\n", f"{pad}    _l{n} = []\n",
                     f"{pad}    for _i{n}, v in enumerate(v):\n"]
            if isinstance(spec.item, str):
                lines.append(f"{pad}        _o{n} = v\n")
                lines += self.leaf(spec.item, f"_o{n}", f"_p{n} + (_i{n},)", pad + "        ")
                lines.append(f"{pad}        _l{n}.append(_o{n})\n")
            elif isinstance(spec.item, Each):
                raise ValueError("a list of lists has no canonical field")
            else:
                obj = self.object(spec.item)
                lines.append(f"{pad}        _l{n}.append({obj}(v, _p{n} + (_i{n},), options, failures) "
                             f"if isinstance(v, dict) else v)\n")
            lines.append(f"{pad}    {target} = _l{n}\n")
            return lines
        obj = self.object(spec)
        return [f"{pad}if isinstance(v, dict):\n{pad}    {target} = {obj}(v, {where}, options, failures)\n"]

    def object(self, spec: Mapping[str, Spec]) -> str:
        """A function `name(value, path, options, failures) -> dict` for an object spec (value is a dict)."""
        self.count += 1
        name = f"_obj{self.count}"
        lines = [f"def {name}(value, path, options, failures):\n", "    out = dict(value)\n"]
        for field_name, sub in spec.items():
            lines.append(f"    if {field_name!r} in out:\n        v = out[{field_name!r}]\n")
            lines += self.value(sub, f"out[{field_name!r}]", "path", repr(field_name), "        ")
        lines.append("    return out\n")
        self.functions.append("".join(lines))
        return name

    def build(self, spec: Spec) -> Callable[[dict[str, Any], StandardizeOptions, _Failures], Any]:
        if not isinstance(spec, Mapping):
            raise ValueError("a record spec is an object")
        top = self.object(spec)
        exec(compile("\n".join(self.functions), "<standardize>", "exec"), self.namespace)  # noqa: S102 - generated here
        walk = self.namespace[top]

        def run(record: dict[str, Any], options: StandardizeOptions, failures: _Failures) -> Any:
            return walk(record, (), options, failures) if isinstance(record, dict) else record
        return run


_WALKS = {record_type: _Generator().build(spec) for record_type, spec in SPECS.items()}


def standardize(record: dict[str, Any], record_type: str,
                options: StandardizeOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """Return a canonical copy of `record`, or raise Rejected naming every field it cannot read."""
    walk = _WALKS.get(record_type)
    if walk is None:
        raise Rejected(UNKNOWN_RECORD_TYPE, "record_type is missing or not supported")
    failures: _Failures = []
    out: dict[str, Any] = walk(record, options, failures)
    if failures:
        raise Rejected(failures[0][0], describe_failures(failures))
    return out


def standardize_reference(record: dict[str, Any], record_type: str,
                          options: StandardizeOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """standardize by the spec's closures (REFERENCE_STEPS): the behaviour the generated walk must keep."""
    step = REFERENCE_STEPS.get(record_type)
    if step is None:
        raise Rejected(UNKNOWN_RECORD_TYPE, "record_type is missing or not supported")
    failures: _Failures = []
    out: dict[str, Any] = step(record, (), None, options, failures)
    if failures:
        raise Rejected(failures[0][0], describe_failures(failures))
    return out

"""X12 element values -> canonical forms: dates, times, money, counts, ZIPs, phones, ICD-10 codes.

Every converter names the element it reads (`where`, e.g. "2010BA DMG02") in its Rejected detail and
never the value, so a bad element cannot leak PHI into a dead letter.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from udfs.dead_letters import Rejected
from udfs.decoders.x12_envelope import X12_BAD_ELEMENT, X12_MISSING_SEGMENT, is_digits

CENT = Decimal("0.01")
_MONEY_CHARS = frozenset("0123456789.-")
# 834 BGN05 time zone codes -> fixed offsets (standard/daylight) or IANA zones (local time).
_ZONE_CODES: dict[str, str | timedelta] = {
    "UT": timedelta(0), "GM": timedelta(0),
    "ES": timedelta(hours=-5), "ED": timedelta(hours=-4), "CS": timedelta(hours=-6), "CD": timedelta(hours=-5),
    "MS": timedelta(hours=-7), "MD": timedelta(hours=-6), "PS": timedelta(hours=-8), "PD": timedelta(hours=-7),
    "ET": "America/New_York", "CT": "America/Chicago", "MT": "America/Denver", "PT": "America/Los_Angeles",
}


def el(seg: list[str], i: int) -> str:
    """Element i of a segment, "" when the segment is shorter (X12 drops trailing empty elements)."""
    return seg[i] if i < len(seg) else ""


def required(seg: list[str], i: int, where: str) -> str:
    """Element i, which the canonical record needs: empty is a bad element."""
    value = seg[i] if i < len(seg) else ""
    if not value:
        raise Rejected(X12_BAD_ELEMENT, f"{where} is empty")
    return value


def missing(where: str) -> Rejected:
    """The error for a segment the canonical record needs."""
    return Rejected(X12_MISSING_SEGMENT, f"{where} is missing")


def within(prefix: str, err: Rejected) -> Rejected:
    """The same rejection with its detail prefixed by where it happened.

    Decoders label elements with constants ("NM104") and add the position only on failure:
    formatting positions for every element cost more than decoding it.
    """
    return Rejected(err.reason_code, f"{prefix} {err.detail}")


@functools.lru_cache(maxsize=8192)
def _calendar_date(value: str) -> str | None:
    # Cached: an interchange repeats the same few dates on every line.
    if len(value) == 8 and is_digits(value, 8):
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:])).isoformat()
        except ValueError:
            return None
    return None


def iso_date(value: str, where: str) -> str:
    """CCYYMMDD -> YYYY-MM-DD, checking the calendar."""
    day = _calendar_date(value)
    if day is None:
        raise Rejected(X12_BAD_ELEMENT, f"{where} is not a CCYYMMDD date")
    return day


def date_range(qualifier: str, value: str, where: str) -> tuple[str, str]:
    """A DTP/DTM date or range (D8 CCYYMMDD or RD8 CCYYMMDD-CCYYMMDD) -> (from, to)."""
    if qualifier == "RD8" and len(value) == 17 and value[8] == "-":
        return iso_date(value[:8], where), iso_date(value[9:], where)
    if qualifier == "D8":
        day = iso_date(value, where)
        return day, day
    raise Rejected(X12_BAD_ELEMENT, f"{where} is not a D8 date or RD8 range")


@functools.lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone of the feed contract's `timezone` option (ValueError for an unknown name)."""
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError) as err:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown timezone {name!r} in the X12 decoder options") from err


def timestamp(day: str, hhmm: str, where: str, tz: ZoneInfo, zone_code: str = "") -> str:
    """X12 date CCYYMMDD and time HHMM[SS[D[D]]] -> RFC 3339 with the zone, keeping the given fraction."""
    if not (is_digits(hhmm, 8) and len(hhmm) in (4, 6, 7, 8)):
        raise Rejected(X12_BAD_ELEMENT, f"{where} time is not HHMM[SS[DD]]")
    iso = iso_date(day, f"{where} date")
    h, m, s = int(hhmm[:2]), int(hhmm[2:4]), int(hhmm[4:6] or 0)
    frac = hhmm[6:]
    if h > 23 or m > 59 or s > 59:
        raise Rejected(X12_BAD_ELEMENT, f"{where} time is out of range")
    local = datetime(int(iso[:4]), int(iso[5:7]), int(iso[8:]), h, m, s)
    code = _ZONE_CODES.get(zone_code) if zone_code and zone_code != "LT" else None
    if zone_code and zone_code != "LT" and code is None:
        raise Rejected(X12_BAD_ELEMENT, f"{where} time zone code is not one this decoder knows")
    offset = code if isinstance(code, timedelta) else local.replace(tzinfo=zone(code) if code else tz).utcoffset()
    minutes = int(offset.total_seconds()) // 60 if offset else 0
    sign = "-" if minutes < 0 else "+"
    suffix = "Z" if minutes == 0 else f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return f"{iso}T{h:02d}:{m:02d}:{s:02d}{'.' + frac if frac else ''}{suffix}"


def money(value: str, where: str) -> Decimal:
    """An X12 R amount with at most two decimal places, exactly (no float anywhere)."""
    if value[-3:-2] == "." and value[:-3].isdigit() and value[-2:].isdigit() and value.isascii() and len(value) < 19:
        return Decimal(value)  # the common "123.45": nothing else to check
    body = value[1:] if value[:1] == "-" else value
    # A character allow-list and a length bound first: Decimal() alone would accept "1e9", "NaN", " 1".
    if not (0 < len(body) <= 18 and _MONEY_CHARS.issuperset(body) and "-" not in body and body.count(".") <= 1
            and body != "."):
        raise Rejected(X12_BAD_ELEMENT, f"{where} is not an amount")
    try:
        amount = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the checks above admit only valid decimals
        raise Rejected(X12_BAD_ELEMENT, f"{where} is not an amount") from None
    if amount != amount.quantize(CENT):
        raise Rejected(X12_BAD_ELEMENT, f"{where} has more than two decimal places")
    return amount


def money_text(amount: Decimal) -> str:
    """A Decimal as the canonical 2-place string ("-0.00" never appears)."""
    return "0.00" if amount == 0 else str(amount.quantize(CENT))


_SMALL_COUNTS = {str(i): i for i in range(10000)}  # line numbers, units, pointers: the fast path


def count(value: str, where: str, default: int | None = None) -> int:
    """A whole count from an X12 N0 or R element ("2", "2.0"); fractions are bad elements."""
    known = _SMALL_COUNTS.get(value)
    if known is not None:
        return known
    if not value and default is not None:
        return default
    whole, dot, frac = value.partition(".")
    if is_digits(whole, 9) and (not dot or frac.strip("0") == "") and (not frac or is_digits(frac, 9)):
        return int(whole)
    raise Rejected(X12_BAD_ELEMENT, f"{where} is not a whole number")


def zip_code(value: str, where: str) -> str:
    """N403 (5 or 9 digits, no hyphen) -> canonical ZIP or ZIP+4 with its hyphen."""
    if is_digits(value, 9) and len(value) in (5, 9):
        return value if len(value) == 5 else f"{value[:5]}-{value[5:]}"
    raise Rejected(X12_BAD_ELEMENT, f"{where} is not a 5 or 9 digit ZIP code")


def e164(value: str, where: str) -> str:
    """A NANP number as X12 sends it (10 digits, or 11 with the leading 1) -> E.164."""
    if is_digits(value, 11) and len(value) == 10:
        return "+1" + value
    if is_digits(value, 11) and len(value) == 11 and value[0] == "1":
        return "+" + value
    raise Rejected(X12_BAD_ELEMENT, f"{where} is not a 10-digit NANP phone number")


def icd10(code: str) -> str:
    """X12 sends ICD-10-CM without its dot; the canonical form has it after the category (3 chars)."""
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 and "." not in code else code


def address(n3: list[str] | None, n4: list[str] | None) -> dict[str, Any]:
    """N3/N4 -> canonical address; both segments are needed."""
    if n3 is None:
        raise missing("N3")
    if n4 is None:
        raise missing("N4")
    out = {"line1": required(n3, 1, "N301"), "city": required(n4, 1, "N401"),
           "state": required(n4, 2, "N402"), "zip": zip_code(el(n4, 3), "N403")}
    if el(n3, 2):
        out["line2"] = n3[2]
    return out


def person_name(nm1: list[str]) -> str:
    """NM1 -> one name: an organization's NM103, or a person's "NM104 NM103" (first last)."""
    last = required(nm1, 3, "NM103")
    first = el(nm1, 4)
    return f"{first} {last}" if el(nm1, 2) == "1" and first else last

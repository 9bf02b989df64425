"""X12 5010 interchange layer: delimiters from the ISA, segments, and the ISA/GS/ST envelope checks.

`read_interchange` checks the whole interchange envelope before any record is decoded, so a broken
envelope rejects the unit before a single record has flowed. A broken transaction set (ST/SE) only
marks that set; the others still decode. Details name segments, element positions and control
numbers, never an element's value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from udfs.dead_letters import Rejected
from udfs.reasons import define

X12_NOT_X12 = define("x12_not_x12", "decode", "the payload is not X12 text: not UTF-8, or no ISA segment at its start")
X12_ENVELOPE_INVALID = define(
    "x12_envelope_invalid", "envelope",
    "the ISA/GS/ST envelope is malformed: ISA length or delimiters, a missing or misplaced ISA/GS/GE/IEA/ST/SE",
)
X12_CONTROL_NUMBER_MISMATCH = define(
    "x12_control_number_mismatch", "envelope",
    "a trailer's control number differs from its header's (IEA02/ISA13, GE02/GS06, SE02/ST02) or an ST02 repeats",
)
X12_SEGMENT_COUNT_MISMATCH = define(
    "x12_segment_count_mismatch", "envelope",
    "a trailer's count is wrong: SE01 segments in the set, GE01 sets in the group, IEA01 groups in the interchange",
)
X12_WRONG_TRANSACTION = define(
    "x12_wrong_transaction", "envelope",
    "the interchange or a set is not the transaction the feed contract names (GS01/GS08/ST01/ST03)", alert=True,
)
X12_MISSING_SEGMENT = define("x12_missing_segment", "decode", "a segment the canonical record needs is missing")
X12_BAD_ELEMENT = define(
    "x12_bad_element", "decode", "an element the canonical record needs is empty or has the wrong form",
)
X12_AMOUNT_UNBALANCED = define(
    "x12_amount_unbalanced", "validation",
    "amounts do not balance: CLM02 vs line charges; 835 SVC/CLP vs CAS adjustments; BPR02 vs CLP04 and PLB",
)

ISA_LENGTH = 106
# Offsets of the 16 element separators in the fixed-width ISA (ISA01..ISA16 have fixed widths).
_ISA_SEPARATORS = (3, 6, 17, 20, 31, 34, 50, 53, 69, 76, 81, 83, 89, 99, 101, 103)
_ENVELOPE_IDS = frozenset({"SE", "ST", "GE", "GS", "IEA", "ISA"})


@dataclass(frozen=True)
class Transaction:
    """What the feed contract says the interchange holds: ST01, GS01, GS08 (= ST03)."""

    code: str
    functional_id: str
    version: str


@dataclass(frozen=True)
class TransactionSet:
    """One ST..SE set: its segments (split into elements), where it is, and whether its envelope is sound."""

    position: str  # "ST 0001", or "ST #3" when ST02 is unusable; prefixed "GS n " when there are several groups
    group: str  # GS06
    segments: list[list[str]]
    gs_date: str  # GS04 CCYYMMDD, the default for sent_at
    gs_time: str  # GS05 HHMM[SS[D[D]]]
    component: str  # the component separator, for composites
    error: Rejected | None


def is_digits(value: str, max_len: int = 9) -> bool:
    """True for 1..max_len ASCII digits (str.isdigit alone accepts other scripts' digits)."""
    return 0 < len(value) <= max_len and value.isascii() and value.isdigit()


def _is_count(value: str, count: int) -> bool:
    # X12 N0 counts may carry leading zeros, so compare numbers, not strings.
    return is_digits(value) and int(value) == count


def _envelope(detail: str) -> Rejected:
    return Rejected(X12_ENVELOPE_INVALID, detail)


def _text(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(X12_NOT_X12, "payload is not UTF-8 text") from None
    # Landed files often carry a BOM or a blank line before the ISA; nothing else may precede it.
    text = text.lstrip("\ufeff\r\n\t ")
    if not text.startswith("ISA"):
        raise Rejected(X12_NOT_X12, "payload does not start with an ISA segment")
    return text


def _segments(text: str) -> tuple[list[list[str]], str]:
    """Split the interchange into segments of elements; return them and the component separator."""
    if len(text) < ISA_LENGTH:
        raise _envelope(f"ISA is shorter than {ISA_LENGTH} characters")
    element, repetition, component, terminator = text[3], text[82], text[104], text[105]
    if any(text[i] != element for i in _ISA_SEPARATORS) or text.count(element, 0, 104) != len(_ISA_SEPARATORS):
        raise _envelope("ISA elements are not at their fixed offsets (ISA must be 106 characters)")
    delimiters = (element, repetition, component, terminator)
    if len(set(delimiters)) != 4 or any(d.isalnum() or d == " " for d in delimiters):
        raise _envelope("ISA delimiters (element, ISA11, ISA16, terminator) are not four distinct symbols")
    pieces = text.split(terminator)
    # A terminator followed by CR/LF is common in files; the line break is not part of the next segment.
    if pieces[-1].strip("\r\n\t "):
        raise _envelope("data after the last segment terminator (truncated interchange?)")
    if "\n" in text or "\r" in text:
        return [p.strip("\r\n").split(element) for p in pieces[:-1]], component
    return [p.split(element) for p in pieces[:-1]], component


def _check_isa(isa: list[str]) -> str:
    if isa[12] != "00501":
        raise Rejected(X12_WRONG_TRANSACTION, "ISA12 is not 00501 (5010)")
    if not (is_digits(isa[13]) and is_digits(isa[9]) and is_digits(isa[10]) and isa[14] in ("0", "1")
            and isa[15] in ("P", "T")):
        raise _envelope("ISA09/ISA10/ISA13/ISA14/ISA15 have the wrong form")
    return isa[13]


def _check_gs(gs: list[str], expected: Transaction, ordinal: int) -> None:
    if len(gs) < 9:
        raise _envelope(f"GS {ordinal} has fewer than 8 elements")
    if gs[1] != expected.functional_id or gs[8] != expected.version:
        raise Rejected(X12_WRONG_TRANSACTION, f"GS {ordinal}: GS01/GS08 are not {expected.functional_id} "
                                              f"{expected.version}")
    control, date, time = gs[6], gs[4], gs[5]
    if not (is_digits(control) and len(date) == 8 and is_digits(date) and len(time) in (4, 6, 7, 8)
            and is_digits(time)):
        raise _envelope(f"GS {ordinal}: GS04/GS05/GS06 have the wrong form")


def read_interchange(payload: bytes, expected: Transaction) -> list[TransactionSet]:
    """Check the interchange and group envelopes; return its transaction sets, each checked on its own."""
    segments, component = _segments(_text(payload))
    if segments[0][0] != "ISA" or len(segments[0]) != 17:
        raise _envelope("ISA does not have 16 elements")
    isa13 = _check_isa(segments[0])
    sets: list[TransactionSet] = []
    groups: list[tuple[list[str], int]] = []  # (GS, index of its first set in `sets`)
    seen: set[str] = set()  # GS06|ST02 pairs, to catch a repeated ST02
    i, n = 1, len(segments)
    while i < n and segments[i][0] == "GS":
        gs = segments[i]
        _check_gs(gs, expected, len(groups) + 1)
        groups.append((gs, len(sets)))
        i += 1
        while i < n and segments[i][0] not in ("GE", "GS", "IEA", "ISA"):
            if segments[i][0] != "ST":
                raise _envelope(f"segment {i + 1} is outside any ST/SE transaction set")
            start = i
            i += 1
            while i < n and segments[i][0] not in _ENVELOPE_IDS:
                i += 1
            has_se = i < n and segments[i][0] == "SE"
            end = i + 1 if has_se else i
            sets.append(_transaction_set(segments[start:end], gs, component, has_se, len(sets) + 1, expected, seen))
            i = end
        if i >= n or segments[i][0] != "GE":
            raise _envelope(f"GS {len(groups)} has no GE trailer")
        ge, first = segments[i], groups[-1][1]
        if len(ge) < 3 or not _is_count(ge[1], len(sets) - first):
            raise Rejected(X12_SEGMENT_COUNT_MISMATCH, f"GE01 of group {gs[6]} is not its number of ST sets")
        if ge[2] != gs[6]:
            raise Rejected(X12_CONTROL_NUMBER_MISMATCH, f"GE02 differs from GS06 {gs[6]}")
        i += 1
    if not groups:
        raise _envelope("the interchange has no GS functional group")
    if i >= n or segments[i][0] != "IEA":
        raise _envelope("the interchange has no IEA trailer where one is due")
    iea = segments[i]
    if len(iea) < 3 or not _is_count(iea[1], len(groups)):
        raise Rejected(X12_SEGMENT_COUNT_MISMATCH, "IEA01 is not the number of functional groups")
    if iea[2] != isa13:
        raise Rejected(X12_CONTROL_NUMBER_MISMATCH, f"IEA02 differs from ISA13 {isa13}")
    if i + 1 != n:
        raise _envelope("segments after IEA (one interchange per unit)")
    if len(groups) > 1:  # ST02 is unique within a group only, so positions name the group too
        sets = [replace(ts, position=f"GS {ts.group} {ts.position}") for ts in sets]
    return sets


def _transaction_set(segs: list[list[str]], gs: list[str], component: str, has_se: bool, ordinal: int,
                     expected: Transaction, seen: set[str]) -> TransactionSet:
    st = segs[0]
    control = st[2] if len(st) > 2 else ""
    ok_control = 4 <= len(control) <= 9 and control.isascii() and control.isalnum()
    position = f"ST {control}" if ok_control else f"ST #{ordinal}"
    error: Rejected | None = None
    if not ok_control:
        error = Rejected(X12_BAD_ELEMENT, f"{position}: ST02 is not a 4-9 character control number")
    elif st[1] != expected.code or (len(st) > 3 and st[3] not in ("", expected.version)):
        error = Rejected(X12_WRONG_TRANSACTION, f"{position}: ST01/ST03 are not {expected.code} {expected.version}")
    elif f"{gs[6]}|{control}" in seen:
        error = Rejected(X12_CONTROL_NUMBER_MISMATCH, f"{position}: ST02 repeats within its group")
    elif not has_se:
        error = _envelope(f"{position} has no SE trailer")
    else:
        error = _check_se(segs, control, position)
    seen.add(f"{gs[6]}|{control}")
    return TransactionSet(position, gs[6], segs, gs[4], gs[5], component, error)


def _check_se(segs: list[list[str]], control: str, position: str) -> Rejected | None:
    se = segs[-1]
    if len(se) < 3 or se[2] != control:
        return Rejected(X12_CONTROL_NUMBER_MISMATCH, f"{position}: SE02 differs from ST02")
    if not _is_count(se[1], len(segs)):
        return Rejected(X12_SEGMENT_COUNT_MISMATCH, f"{position}: SE01 is not the set's {len(segs)} segments")
    for sid in {s[0] for s in segs}:  # each distinct id once: a set repeats a few dozen ids
        if not (2 <= len(sid) <= 3 and sid.isascii() and sid.isalnum() and sid.isupper() and sid[0].isalpha()):
            k = next(k for k, s in enumerate(segs) if s[0] == sid)
            return _envelope(f"{position}: segment {k + 1} has no valid segment id")
    return None

"""834: each INS loop (2000) -> one canonical eligibility record.

A subscriber's record (INS01 Y) lists as `dependents` the INS*N loops that follow it with the same
subscriber id (REF*0F); each dependent is also a record of its own and, as 834 senders do, takes the
subscriber's address when its own N3/N4 are left out. A dependent whose loop is broken is dead-lettered
on its own and left out of the subscriber's list. member_id is 2000 REF*ZZ, else REF*23 (client
number), else REF*ABB (personal id), else NM109 when NM108 is ZZ, else (for a subscriber) the
subscriber id; NM108 34 carries the SSN. Only the first HD loop (2300) maps to plan and coverage;
later coverages are not canonical.

Usage follows the 5010 guide (udfs/decoders/x12_usage.py): INS, REF*0F and NM1*IL are required;
DMG, N3/N4, PER, REF*ZZ and the whole 2300 HD loop are situational, so maintenance, change and
termination records that omit them decode, with those parts left out. Coverage dates are the HD
loop's DTP*348/349, else the member's eligibility dates (2000 DTP*356/357).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.decoders.x12_elements import address, date_range, e164, el, iso_date, missing, required, timestamp, within
from udfs.decoders.x12_envelope import X12_BAD_ELEMENT, TransactionSet

_PHONE_QUALIFIERS = frozenset({"TE", "HP", "WP", "CP"})
_DEPENDENT_FIELDS = ("member_id", "first_name", "last_name", "birth_date", "gender")
_MEMBER_REFS = ("ZZ", "23", "ABB")  # 2000 REF qualifiers that identify the member, in order of preference


def members(ts: TransactionSet, tz: ZoneInfo) -> Iterator[Item]:
    """Yield one Item per INS loop of an 834 transaction set."""
    segs = ts.segments
    try:
        if len(segs) < 3 or segs[1][0] != "BGN":
            raise missing("BGN")
        bgn = segs[1]
        sent_at = timestamp(el(bgn, 3), el(bgn, 4), "BGN03/BGN04", tz, zone_code=el(bgn, 5))
    except Rejected as err:
        yield Item(ts.position, error=within(ts.position, err))
        return
    loops: list[list[list[str]]] = []
    master_policy: list[str] | None = None
    for s in segs[2:-1]:
        if s[0] == "INS":
            loops.append([s])
        elif loops:
            loops[-1].append(s)
        elif s[0] == "REF" and el(s, 1) == "38" and master_policy is None:
            master_policy = s
    items: list[Item] = []
    household: _Scan | None = None  # the last subscriber's loop: its address serves its dependents
    subscriber: dict[str, Any] | None = None  # the last subscriber's record, to list its dependents
    for k, loop in enumerate(loops, 1):
        position = f"{ts.position} INS {k}"
        scan = _scan(loop)
        if el(loop[0], 1) == "Y":
            household, subscriber = scan, None
        try:
            record = _member(scan, master_policy, household)
        except Rejected as err:
            items.append(Item(position, error=within(position, err)))
            continue
        record["sent_at"] = sent_at
        if el(loop[0], 1) == "Y":
            subscriber = record
        elif subscriber is not None and subscriber["subscriber_id"] == record["subscriber_id"]:
            member = record["member"]
            subscriber["dependents"].append(
                {**{f: member[f] for f in _DEPENDENT_FIELDS if f in member}, "relationship": record["relationship"]})
        items.append(Item(position, record=record))
    if not loops:
        items.append(Item(ts.position, error=within(ts.position, missing("INS"))))
    yield from items


@dataclass
class _Scan:
    """The segments of one INS loop that the canonical record reads, found without judging them."""

    ins: list[str]
    refs: dict[str, list[str]] = field(default_factory=dict)  # 2000 REF by qualifier
    dates: dict[str, list[str]] = field(default_factory=dict)  # 2000 DTP by qualifier (356/357 eligibility)
    person: dict[str, list[str]] = field(default_factory=dict)  # 2100A NM1, PER, N3, N4, DMG
    hd: list[str] | None = None
    hd_dates: dict[str, list[str]] = field(default_factory=dict)
    hd_refs: dict[str, list[str]] = field(default_factory=dict)

    def subscriber_id(self) -> str:
        """REF*0F REF02, or "" when absent."""
        return el(self.refs.get("0F", []), 2)


def _scan(loop: list[list[str]]) -> _Scan:
    scan = _Scan(loop[0])
    area = "2000"  # 2000 -> 2100A (member) / 2100x (others) -> 2300 (first HD) -> tail (ignored)
    for s in loop[1:]:
        sid = s[0]
        if sid == "HD":
            area = "2300" if scan.hd is None else "tail"
            scan.hd = scan.hd or s
        elif sid in ("LX", "COB", "LS") or area == "tail":
            area = "tail"  # 2310 providers, 2320 COB, 2700 reporting categories: not canonical
        elif area == "2300":
            if sid == "DTP":
                scan.hd_dates.setdefault(el(s, 1), s)
            elif sid == "REF":
                scan.hd_refs.setdefault(el(s, 1), s)
        elif sid == "NM1":
            area = "2100A" if el(s, 1) == "IL" else "2100"
            if area == "2100A":
                scan.person.setdefault("NM1", s)
        elif sid == "REF" and area == "2000":
            scan.refs.setdefault(el(s, 1), s)
        elif sid == "DTP" and area == "2000":
            scan.dates.setdefault(el(s, 1), s)
        elif area == "2100A" and sid in ("PER", "N3", "N4", "DMG"):
            scan.person.setdefault(sid, s)
    return scan


def _member(scan: _Scan, master_policy: list[str] | None, household: _Scan | None) -> dict[str, Any]:
    ins, refs, person = scan.ins, scan.refs, scan.person
    nm1, dmg = person.get("NM1"), person.get("DMG")
    if nm1 is None:
        raise missing("2100A NM1*IL")
    if "0F" not in refs:
        raise missing("REF*0F")
    subscriber_id = required(refs["0F"], 2, "REF*0F REF02")
    if el(ins, 1) not in ("Y", "N"):
        raise Rejected(X12_BAD_ELEMENT, "INS01 is not Y or N")
    is_subscriber = ins[1] == "Y"
    member_ref = next((refs[q] for q in _MEMBER_REFS if q in refs), None)
    member_id = (required(member_ref, 2, "REF02 (member identifier)") if member_ref
                 else nm1[9] if el(nm1, 8) == "ZZ" and el(nm1, 9) else subscriber_id if is_subscriber else "")
    if not member_id:
        # A dependent with no identifier of its own cannot be told from its household: the key needs one.
        raise missing("REF*ZZ, REF*23 or REF*ABB (a dependent's member identifier)")
    member: dict[str, Any] = {"member_id": member_id, "last_name": required(nm1, 3, "NM103")}
    if el(nm1, 4):
        member["first_name"] = nm1[4]
    if dmg is not None:
        if el(dmg, 1) != "D8":
            raise Rejected(X12_BAD_ELEMENT, "DMG01 is not D8")
        member["birth_date"], member["gender"] = iso_date(el(dmg, 2), "DMG02"), required(dmg, 3, "DMG03")
    home = person
    if not is_subscriber and "N3" not in person and "N4" not in person and household is not None \
            and household.subscriber_id() == subscriber_id:
        home = household.person
    if "N3" in home or "N4" in home:
        try:
            member["address"] = address(home.get("N3"), home.get("N4"))
        except Rejected as err:
            raise within("2100A", err) from None
    per = person.get("PER")
    phones = [el(per, k + 1) for k in (3, 5, 7) if el(per, k) in _PHONE_QUALIFIERS] if per else []
    if phones:
        member["phone"] = e164(phones[0], "PER")
    if el(nm1, 8) == "34":
        member["ssn"] = required(nm1, 9, "NM109")
    record: dict[str, Any] = {"record_type": "eligibility", "member": member, "subscriber_id": subscriber_id,
                              "relationship": required(ins, 2, "INS02")}
    plan = _plan(scan.hd, scan.hd_refs, refs, master_policy)
    if plan:
        record["plan"] = plan
    record["coverage"] = _coverage(ins, scan.hd_dates, scan.dates)
    record["dependents"] = []
    return record


def _plan(hd: list[str] | None, hd_refs: dict[str, list[str]], refs: dict[str, list[str]],
          master_policy: list[str] | None) -> dict[str, str]:
    """2300 HD04 plan, HD05 level and REF*1L group (from the HD loop, the member loop or the header)."""
    if hd is None:
        return {}  # no 2300 loop: a maintenance record that changes no coverage
    plan = {}
    if el(hd, 4):
        plan["plan_code"] = hd[4]
    group = hd_refs.get("1L") or refs.get("1L") or master_policy
    if group is not None:
        plan["group_number"] = required(group, 2, "REF*1L")
    if el(hd, 5):
        plan["coverage_level"] = hd[5]
    return plan


def _coverage(ins: list[str], hd_dates: dict[str, list[str]], member_dates: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    begin = hd_dates.get("348") or member_dates.get("356")
    if begin is not None:
        out["start_date"] = date_range(el(begin, 2), el(begin, 3), f"DTP*{el(begin, 1)}")[0]
    end = hd_dates.get("349") or member_dates.get("357")
    if end is not None:
        out["end_date"] = date_range(el(end, 2), el(end, 3), f"DTP*{el(end, 1)}")[1]
    out["maintenance_type_code"] = required(ins, 3, "INS03")
    return out

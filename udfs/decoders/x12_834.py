"""834: each INS loop (2000) -> one canonical eligibility record.

A subscriber's record (INS01 Y) lists as `dependents` the INS*N loops that follow it with the same
subscriber id (REF*0F); each dependent is also a record of its own and, as 834 senders do, takes the
subscriber's address when its own N3/N4 are left out. A dependent whose loop is broken is dead-lettered
on its own and left out of the subscriber's list. member_id is 2000 REF*ZZ, else NM109 when
NM108 is ZZ, else (for a subscriber) the subscriber id; NM108 34 carries the SSN. Only the first HD
loop (2300) maps to plan and coverage; later coverages are not canonical.
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
                {**{f: member[f] for f in _DEPENDENT_FIELDS}, "relationship": record["relationship"]})
        items.append(Item(position, record=record))
    if not loops:
        items.append(Item(ts.position, error=within(ts.position, missing("INS"))))
    yield from items


@dataclass
class _Scan:
    """The segments of one INS loop that the canonical record reads, found without judging them."""

    ins: list[str]
    refs: dict[str, list[str]] = field(default_factory=dict)  # 2000 REF by qualifier
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
        elif area == "2100A" and sid in ("PER", "N3", "N4", "DMG"):
            scan.person.setdefault(sid, s)
    return scan


def _member(scan: _Scan, master_policy: list[str] | None, household: _Scan | None) -> dict[str, Any]:
    ins, refs, person = scan.ins, scan.refs, scan.person
    nm1, dmg = person.get("NM1"), person.get("DMG")
    if nm1 is None or dmg is None:
        raise missing("2100A NM1*IL and DMG")
    if "0F" not in refs:
        raise missing("REF*0F")
    subscriber_id = required(refs["0F"], 2, "REF*0F REF02")
    if el(ins, 1) not in ("Y", "N"):
        raise Rejected(X12_BAD_ELEMENT, "INS01 is not Y or N")
    is_subscriber = ins[1] == "Y"
    member_ref = refs.get("ZZ")
    member_id = (required(member_ref, 2, "REF*ZZ REF02") if member_ref
                 else nm1[9] if el(nm1, 8) == "ZZ" and el(nm1, 9) else subscriber_id if is_subscriber else "")
    if not member_id:
        raise missing("REF*ZZ (member identifier)")
    if el(dmg, 1) != "D8":
        raise Rejected(X12_BAD_ELEMENT, "DMG01 is not D8")
    member: dict[str, Any] = {
        "member_id": member_id, "first_name": required(nm1, 4, "NM104"),
        "last_name": required(nm1, 3, "NM103"),
        "birth_date": iso_date(el(dmg, 2), "DMG02"), "gender": required(dmg, 3, "DMG03"),
    }
    home = person
    if not is_subscriber and "N3" not in person and "N4" not in person and household is not None \
            and household.subscriber_id() == subscriber_id:
        home = household.person
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
    return {"record_type": "eligibility", "member": member, "subscriber_id": subscriber_id,
            "relationship": required(ins, 2, "INS02"),
            "plan": _plan(scan.hd, scan.hd_refs, refs, master_policy),
            "coverage": _coverage(ins, scan.hd_dates), "dependents": []}


def _plan(hd: list[str] | None, hd_refs: dict[str, list[str]], refs: dict[str, list[str]],
          master_policy: list[str] | None) -> dict[str, str]:
    if hd is None:
        raise missing("HD (health coverage)")
    group = hd_refs.get("1L") or refs.get("1L") or master_policy
    if group is None:
        raise missing("REF*1L (group or policy number)")
    return {"plan_code": required(hd, 4, "HD04"), "group_number": required(group, 2, "REF*1L"),
            "coverage_level": required(hd, 5, "HD05")}


def _coverage(ins: list[str], dates: dict[str, list[str]]) -> dict[str, str]:
    begin = dates.get("348")
    if begin is None:
        raise missing("2300 DTP*348 (benefit begin)")
    out = {"start_date": date_range(el(begin, 2), el(begin, 3), "DTP*348")[0]}
    end = dates.get("349")
    if end is not None:
        out["end_date"] = date_range(el(end, 2), el(end, 3), "DTP*349")[1]
    out["maintenance_type_code"] = required(ins, 3, "INS03")
    return out

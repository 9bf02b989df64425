"""837P/837I: each CLM (loop 2300) -> one canonical claim, with the HL parties above it.

Parties come from the HL hierarchy: 20 billing provider (2010AA), 22 subscriber (2010BA) and payer
(2010BB), 23 patient (2010CA). Usage follows the 5010 guides (udfs/decoders/x12_usage.py): NM104
first names and the subscriber's DMG and N3/N4 are situational (required only when the subscriber
is the patient, i.e. no 2000C loop follows); what is situational and not sent is left out of the
record. Where the canonical claim needs what X12 leaves out, the mapping is:
837P service_date_from/to are the earliest/latest line DTP*472 (the 837P has no claim-level service
period); 837I lines point at diagnosis 1 (UB-04 lines carry no pointers), default their date to
the statement start (DTP*434) and carry SV201 as revenue_code, SV202's procedure only when sent;
a patient's member_id is 2010CA REF*1W, else NM109, else the subscriber's (5010 gives a patient in
loop 2000C no id of its own).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.decoders.x12_elements import (
    address,
    count,
    date_range,
    el,
    icd10,
    iso_date,
    missing,
    money,
    money_text,
    person_name,
    required,
    timestamp,
    within,
)
from udfs.decoders.x12_envelope import X12_AMOUNT_UNBALANCED, X12_BAD_ELEMENT, TransactionSet, is_digits

Party = dict[str, list[str]]  # "NM1:IL", "N3:IL", "REF:85:EI", "SBR", ... -> the first such segment
_Context = tuple[Party | None, Party | None, Party | None, Rejected | None]  # billing, subscriber, patient, HL error


def claims(ts: TransactionSet, kind: str, tz: ZoneInfo) -> Iterator[Item]:
    """Yield one Item per CLM of an 837 transaction set (kind "P" or "I")."""
    segs = ts.segments
    try:
        if len(segs) < 3 or segs[1][0] != "BHT":
            raise missing("BHT")
        sent_at = timestamp(el(segs[1], 4), el(segs[1], 5), "BHT04/BHT05", tz)
    except Rejected as err:
        yield Item(ts.position, error=within(ts.position, err))
        return
    billing: Party | None = None
    subscriber: Party | None = None
    patient: Party | None = None
    current: Party | None = None  # the party that NM1/N3/N4/DMG/REF segments belong to
    ids: dict[str, str] = {}  # HL01 -> HL03 level
    parents = {"20": "", "22": ""}  # the open HL of each parent level: a child must name it in HL02
    hl_error: Rejected | None = None
    claim: list[list[str]] | None = None
    context: _Context = (None, None, None, None)
    n = 0
    entity = ""
    for s in segs[2:-1]:
        sid = s[0]
        if sid == "HL" or sid == "CLM":
            if claim is not None:
                n += 1
                yield _item(claim, context, kind, ts.component, sent_at, f"{ts.position} CLM {n}")
                claim = None
            if sid == "CLM":
                claim, context = [s], (billing, subscriber, patient, hl_error)
                continue
            hid, parent, level = el(s, 1), el(s, 2), el(s, 3)
            hl_error, current, entity = None, {}, ""
            if level in parents:  # a broken HL must not adopt children through a stale parent
                parents[level] = ""
            if not is_digits(hid, 12) or hid in ids:
                hl_error = Rejected(X12_BAD_ELEMENT, "HL01 is not a new HL number")
            elif level == "20" and not parent:
                billing, subscriber, patient = current, None, None
                parents["20"] = hid
            elif level == "22" and billing is not None and parent == parents["20"]:
                subscriber, patient = current, None
                parents["22"] = hid
            elif level == "23" and subscriber is not None and parent == parents["22"]:
                patient = current
            else:
                hl_error = Rejected(X12_BAD_ELEMENT, f"HL {hid}: HL02/HL03 do not fit the 20/22/23 hierarchy")
            if hl_error is None:
                ids[hid] = level
        elif claim is not None:
            claim.append(s)
        elif current is not None:
            if sid == "NM1":
                entity = el(s, 1)
                current.setdefault(f"NM1:{entity}", s)
            elif sid == "REF":
                current.setdefault(f"REF:{entity}:{el(s, 1)}", s)
            elif sid in ("N3", "N4", "DMG"):
                current.setdefault(f"{sid}:{entity}", s)
            else:
                current.setdefault(sid, s)
    if claim is not None:
        yield _item(claim, context, kind, ts.component, sent_at, f"{ts.position} CLM {n + 1}")


def _item(claim: list[list[str]], context: _Context, kind: str, comp: str, sent_at: str, position: str) -> Item:
    billing, subscriber, patient, hl_error = context
    try:
        if hl_error is not None:
            raise hl_error
        if billing is None or subscriber is None:
            raise missing("HL 20/22 above the claim")
        return Item(position, record=_claim(claim, billing, subscriber, patient, kind, comp, sent_at))
    except Rejected as err:
        return Item(position, error=within(position, err))


def _person(p: Party, q: str, loop: str, demographics: bool) -> dict[str, Any]:
    """NM1 (NM104 situational) with DMG and N3/N4: required when `demographics`, else read when sent.

    5010 makes the subscriber's DMG and N3/N4 (2010BA) situational: required when the subscriber is
    the patient. The patient's own (2010CA) are always required.
    """
    try:
        nm1, dmg = p.get(f"NM1:{q}"), p.get(f"DMG:{q}")
        if nm1 is None:
            raise missing(f"NM1*{q}")
        person: dict[str, Any] = {"member_id": el(nm1, 9), "last_name": required(nm1, 3, "NM103")}
        if el(nm1, 4):
            person["first_name"] = nm1[4]
        if dmg is None and demographics:
            raise missing("DMG")
        if dmg is not None:
            if el(dmg, 1) != "D8":
                raise Rejected(X12_BAD_ELEMENT, "DMG01 is not D8")
            person["birth_date"], person["gender"] = iso_date(el(dmg, 2), "DMG02"), required(dmg, 3, "DMG03")
        n3, n4 = p.get(f"N3:{q}"), p.get(f"N4:{q}")
        if demographics or n3 is not None or n4 is not None:
            person["address"] = address(n3, n4)
        return person
    except Rejected as err:
        raise within(loop, err) from None


def _provider(nm1: list[str], loop: str) -> dict[str, str]:
    try:
        if el(nm1, 8) != "XX":
            raise Rejected(X12_BAD_ELEMENT, "NM108 is not XX (NPI)")
        return {"npi": required(nm1, 9, "NM109"), "name": person_name(nm1)}
    except Rejected as err:
        raise within(loop, err) from None


def _claim(segs: list[list[str]], billing: Party, subscriber: Party, patient: Party | None, kind: str,
           comp: str, sent_at: str) -> dict[str, Any]:
    clm = segs[0]
    lines: list[dict[str, list[str]]] = []
    his: list[list[str]] = []
    notes: list[str] = []
    dates: dict[str, list[str]] = {}
    rendering: list[str] | None = None
    other_payer = False  # after an SBR (loop 2320), NM1*82 is another payer's rendering provider
    for s in segs[1:]:
        sid = s[0]
        if sid == "LX":
            lines.append({"LX": s})
        elif lines:
            if sid in ("SV1", "SV2"):
                lines[-1].setdefault("SV", s)
            elif sid == "DTP" and el(s, 1) == "472":
                lines[-1].setdefault("DTP", s)
        elif sid == "HI":
            his.append(s)
        elif sid == "NTE":
            notes.append(required(s, 2, "NTE02"))
        elif sid == "DTP":
            dates.setdefault(el(s, 1), s)
        elif sid == "SBR":
            other_payer = True
        elif sid == "NM1" and el(s, 1) == "82" and rendering is None and not other_payer:
            rendering = s
    pos, qualifier, frequency = [*el(clm, 5).split(comp), "", "", ""][:3]
    if qualifier != ("B" if kind == "P" else "A") or not pos or not frequency:
        raise Rejected(X12_BAD_ELEMENT, f"CLM05 is not place:{'B' if kind == 'P' else 'A'}:frequency")
    statement = None
    if kind == "I":
        dtp = dates.get("434")
        if dtp is None:
            raise missing("DTP*434 (statement dates)")
        statement = date_range(el(dtp, 2), el(dtp, 3), "DTP*434")
    service_lines = [_line(line, k, kind, comp, statement) for k, line in enumerate(lines, 1)]
    if not service_lines:
        raise missing("LX (service line)")
    total = money(required(clm, 2, "CLM02"), "CLM02")
    if sum((Decimal(x["charge"]) for x in service_lines), Decimal(0)) != total:
        raise Rejected(X12_AMOUNT_UNBALANCED, "CLM02 is not the sum of the line charges")
    ends = [x.pop("_to") for x in service_lines]
    if statement is None:
        statement = (min(x["service_date"] for x in service_lines), max(ends))
    bp, payer = billing.get("NM1:85"), subscriber.get("NM1:PR")
    tax = billing.get("REF:85:EI") or billing.get("REF:85:SY")
    if bp is None or tax is None:
        raise missing("2010AA NM1*85 or REF*EI")
    if payer is None:
        raise missing("2010BB NM1*PR")
    sub = _person(subscriber, "IL", "2010BA", demographics=patient is None)
    if not sub["member_id"]:
        raise Rejected(X12_BAD_ELEMENT, "2010BA NM109 is empty")
    sbr = subscriber.get("SBR")
    if sbr is None:
        raise missing("2000B SBR")
    relationship = el(sbr, 2)
    if relationship:
        sub["relationship_code"] = relationship
    try:
        billing_address = address(billing.get("N3:85"), billing.get("N4:85"))
    except Rejected as err:
        raise within("2010AA", err) from None
    record: dict[str, Any] = {
        "record_type": "claim", "sent_at": sent_at, "claim_id": required(clm, 1, "CLM01"),
        "frequency_code": frequency, "claim_kind": "professional" if kind == "P" else "institutional",
        "payer": {"payer_id": required(payer, 9, "2010BB NM109"), "name": required(payer, 3, "2010BB NM103")},
        "billing_provider": {**_provider(bp, "2010AA"), "tax_id": required(tax, 2, "2010AA REF02"),
                             "address": billing_address},
    }
    if rendering is not None:
        record["rendering_provider"] = _provider(rendering, "2310B NM1*82")
    record["subscriber"] = sub
    if patient is not None:
        record["patient"] = _patient(patient, sub["member_id"])
    record.update({
        "diagnoses": _diagnoses(his, comp), "service_lines": service_lines, "total_charge": money_text(total),
        "service_date_from": statement[0], "service_date_to": statement[1], "place_of_service": pos,
    })
    if notes:
        record["notes"] = notes
    return record


def _patient(p: Party, subscriber_id: str) -> dict[str, Any]:
    pat = p.get("PAT")
    if pat is None:
        raise missing("2010CA PAT")
    person = _person(p, "QC", "2010CA", demographics=True)
    ref = p.get("REF:QC:1W")
    person["member_id"] = required(ref, 2, "2010CA REF02") if ref else person["member_id"] or subscriber_id
    person["relationship_code"] = required(pat, 1, "2000C PAT01")
    return person


def _diagnoses(his: list[list[str]], comp: str) -> list[str]:
    principal: list[str] = []
    others: list[str] = []
    for hi in his:
        for element in hi[1:]:
            qualifier, _, rest = element.partition(comp)
            code = rest.partition(comp)[0]
            if qualifier in ("BK", "BF"):
                raise Rejected(X12_BAD_ELEMENT, "HI holds ICD-9 codes (BK/BF); the canonical claim is ICD-10")
            if qualifier in ("ABK", "ABF"):
                if not code:
                    raise Rejected(X12_BAD_ELEMENT, f"HI {qualifier} has no code")
                (principal if qualifier == "ABK" else others).append(icd10(code))
    if len(principal) != 1:
        raise missing("HI ABK (one principal diagnosis)")
    return principal + others


# Per kind: the service segment, and the positions of its procedure, charge and units elements.
_SERVICE = {"P": ("SV1", 1, 2, 4), "I": ("SV2", 2, 3, 5)}
_LABELS = {k: tuple(f"{v[0]}{i:02d}" for i in v[1:]) for k, v in _SERVICE.items()}  # "SV101", "SV102", ...


def _line(line: dict[str, list[str]], k: int, kind: str, comp: str, statement: tuple[str, str] | None
          ) -> dict[str, Any]:
    try:
        return _line_fields(line, kind, comp, statement)
    except Rejected as err:
        raise within(f"LX {k}", err) from None


def _line_fields(line: dict[str, list[str]], kind: str, comp: str, statement: tuple[str, str] | None
                 ) -> dict[str, Any]:
    name, proc_at, charge_at, units_at = _SERVICE[kind]
    sv = line.get("SV")
    if sv is None or sv[0] != name:
        raise missing(name)
    if len(sv) < 8:  # X12 drops trailing empty elements; pad once instead of bounds-checking each read
        sv = sv + [""] * (8 - len(sv))
    procedure = sv[proc_at].split(comp)
    out: dict[str, Any] = {"line_number": count(el(line["LX"], 1), "LX01")}
    if kind == "I":
        # SV201 revenue code is required; SV202 is situational (outpatient lines when a procedure code
        # exists; inpatient lines carry the revenue code alone), so it is read only when sent.
        out["revenue_code"] = required(sv, 1, "SV201")
    if len(procedure) >= 2 and procedure[1]:
        out["procedure_code"] = procedure[1]
    elif kind == "P" or sv[proc_at]:
        raise Rejected(X12_BAD_ELEMENT, f"{_LABELS[kind][0]} has no procedure code")
    out.update({
        "modifiers": [m for m in procedure[2:6] if m] if len(procedure) > 2 else [], "diagnosis_pointers": [1],
        "units": count(sv[units_at], _LABELS[kind][2]), "charge": money_text(money(sv[charge_at], _LABELS[kind][1])),
    })
    if kind == "P":
        pointers = _pointers(sv[7], comp)
        if pointers is None:
            raise Rejected(X12_BAD_ELEMENT, "SV107 is not 1 to 4 diagnosis pointers")
        out["diagnosis_pointers"] = list(pointers)
        if sv[5]:
            out["place_of_service"] = sv[5]
    dtp = line.get("DTP")
    if dtp is not None:
        out["service_date"], out["_to"] = date_range(el(dtp, 2), el(dtp, 3), "DTP*472")
    elif statement is not None:
        out["service_date"], out["_to"] = statement[0], statement[0]
    else:
        raise missing("DTP*472")
    return out


@functools.lru_cache(maxsize=1024)
def _pointers(text: str, comp: str) -> tuple[int, ...] | None:
    """SV107 "1:3" -> (1, 3); None unless 1 to 4 whole numbers (cached: a few forms repeat everywhere)."""
    parts = [p for p in text.split(comp) if p]
    if not 1 <= len(parts) <= 4 or not all(is_digits(p, 2) for p in parts):
        return None
    return tuple(int(p) for p in parts)

"""Canonical claim, payment and eligibility records -> X12 5010 interchanges (837P/837I, 835, 834).

The inverse of udfs.decoders.x12, for synthetic test data: every interchange has one functional
group, correct control numbers and segment counts, and fixed placeholders (submitter, bank
accounts, payer address) where an implementation guide requires a segment the canonical record
has no data for. Values are never rewritten: one holding a delimiter raises ValueError.

Canonical fields X12 cannot carry (decode(encode(r)) differs from r there, by design):
- every record: record_id, feed, schema_version (the pipeline adds them); sent_at keeps hundredths
  of a second at most (BHT05/GS05/BGN04 are HHMMSSDD) and is one per transaction set (837 BHT, 834
  BGN: the set's first record's) or per group (835 GS04/GS05: the interchange's first payment's).
- claim: received_at; phones (837 2010BA/2010CA have no PER outside property and casualty);
  notes past the first (837P allows one 2300 NTE) or past ten (837I); the subscriber gains
  relationship_code "18" when there is no patient loop (SBR02 says so); 837P service_date_from/to
  are the earliest/latest line DTP*472 (the 837P has no claim-level service period); 837I lines
  carry no diagnosis pointers (decoded as [1], the principal) and no place of service.
- payment: payment_id (decoded as TRN03-TRN02, the payer's id and its trace number); notes (the
  835 has no NTE); line_number is the SVC's position within its claim.
- eligibility: notes (the 834 has no NTE); each dependent is also an INS loop of its own, so it
  decodes to an eligibility record too, with the subscriber's address, plan and coverage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

ELEMENT, SEGMENT, COMPONENT, REPETITION = "*", "~", ":", "^"
_RESERVED = frozenset(ELEMENT + SEGMENT + COMPONENT + REPETITION + "\r\n")
IMPLEMENTATION = {"837P": "005010X222A1", "837I": "005010X223A2", "835": "005010X221A1", "834": "005010X220A1"}
_FUNCTIONAL_ID = {"837": "HC", "835": "HP", "834": "BE"}


Element = str | tuple[str, ...]  # a tuple is a composite element


def seg(*elements: Element) -> str:
    """One segment with its terminator; trailing empty elements and components are dropped as X12 requires."""
    items: list[str] = []
    for element in elements:
        parts = list(element) if isinstance(element, tuple) else [element]
        while parts and parts[-1] == "":
            parts.pop()
        if any(_RESERVED & set(p) for p in parts):
            raise ValueError(f"a {elements[0]} element holds an X12 delimiter; the encoder never rewrites values")
        items.append(COMPONENT.join(parts))
    while items and items[-1] == "":
        items.pop()
    return ELEMENT.join(items) + SEGMENT


def _d8(iso: str) -> str:
    return iso.replace("-", "")


def _zip(z: str) -> str:
    return z.replace("-", "")


def _when(rfc3339: str, tz: str) -> datetime:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(ZoneInfo(tz))


def _time8(t: datetime) -> str:
    """HHMMSSDD: X12 times carry hundredths of a second at most."""
    return f"{t:%H%M%S}{t.microsecond // 10000:02d}"


def _address(a: dict[str, Any]) -> list[str]:
    return [seg("N3", a["line1"], a.get("line2", "")), seg("N4", a["city"], a["state"], _zip(a["zip"]))]


def _person_name(name: str) -> tuple[str, str]:
    """Split "First Last" at its last space: (last, first); the decoder joins them back."""
    first, _, last = name.rpartition(" ")
    return (last, first) if first else (name, "")


def _interchange(
    code: Literal["837", "835", "834"], version: str, sets: Sequence[list[str]], *,
    sender_id: str, receiver_id: str, control_number: int, created: datetime,
) -> bytes:
    if not 0 < control_number < 10**9:
        raise ValueError("control_number must be 1..999999999")
    for name, value in (("sender_id", sender_id), ("receiver_id", receiver_id)):
        if not 2 <= len(value) <= 15:
            raise ValueError(f"{name} must be 2 to 15 characters")
    ctl = f"{control_number:09d}"
    # ISA is fixed-width and names the delimiters themselves, so it is built by hand, not by seg().
    isa = ELEMENT.join(["ISA", "00", " " * 10, "00", " " * 10, "ZZ", sender_id.ljust(15), "ZZ",
                        receiver_id.ljust(15), f"{created:%y%m%d}", f"{created:%H%M}", REPETITION, "00501",
                        ctl, "0", "T", COMPONENT]) + SEGMENT
    out = [
        isa,
        seg("GS", _FUNCTIONAL_ID[code], sender_id, receiver_id, f"{created:%Y%m%d}", _time8(created),
            str(control_number), "X", version),
    ]
    for i, body in enumerate(sets, 1):
        st02 = f"{i:04d}"
        header = [code, st02] + ([version] if code != "835" else [])
        out.append(seg("ST", *header))
        out.extend(body)
        out.append(seg("SE", str(len(body) + 2), st02))
    out += [seg("GE", str(len(sets)), str(control_number)), seg("IEA", "1", ctl)]
    return "".join(out).encode()


def _chunks(records: Sequence[dict[str, Any]], size: int) -> list[Sequence[dict[str, Any]]]:
    if size < 1:
        raise ValueError("per_transaction must be at least 1")
    if not records:
        raise ValueError("an interchange needs at least one record")
    return [records[i:i + size] for i in range(0, len(records), size)]


def encode_837(
    claims: Sequence[dict[str, Any]], kind: Literal["P", "I"], *, sender_id: str, receiver_id: str,
    control_number: int, per_transaction: int = 1, timezone: str = "UTC",
) -> bytes:
    """Encode canonical claims as one 837P or 837I interchange, `per_transaction` claims per ST."""
    if kind not in ("P", "I"):
        raise ValueError("kind must be 'P' or 'I'")
    version = IMPLEMENTATION[f"837{kind}"]
    sets: list[list[str]] = []
    for chunk in _chunks(claims, per_transaction):
        t = _when(chunk[0]["sent_at"], timezone)
        body = [
            seg("BHT", "0019", "00", f"B{len(sets) + 1}", f"{t:%Y%m%d}", _time8(t), "CH"),
            seg("NM1", "41", "2", "MEDISTREAM SYNTHETIC", "", "", "", "", "46", sender_id),
            seg("PER", "IC", "EDI DESK", "TE", "8005550100"),
            seg("NM1", "40", "2", "MEDISTREAM RECEIVER", "", "", "", "", "46", receiver_id),
        ]
        hl = 0
        for claim in chunk:
            body += _claim_837(claim, kind, hl)
            hl += 3 if "patient" in claim else 2
        sets.append(body)
    return _interchange("837", version, sets, sender_id=sender_id, receiver_id=receiver_id,
                        control_number=control_number, created=_when(claims[0]["sent_at"], timezone))


def _claim_837(c: dict[str, Any], kind: str, hl: int) -> list[str]:
    """One claim with its own billing-provider, subscriber and (optional) patient HL chain."""
    bp, sub, patient = c["billing_provider"], c["subscriber"], c.get("patient")
    out = [seg("HL", str(hl + 1), "", "20", "1"),
           seg("NM1", "85", "2", bp["name"], "", "", "", "", "XX", bp["npi"]), *_address(bp["address"]),
           seg("REF", "EI", bp["tax_id"]),
           seg("HL", str(hl + 2), str(hl + 1), "22", "1" if patient else "0"),
           seg("SBR", "P", "" if patient else sub.get("relationship_code", "18"), "", "", "", "", "", "", "CI"),
           *_person_837(sub, "IL"),
           seg("NM1", "PR", "2", c["payer"]["name"], "", "", "", "", "PI", c["payer"]["payer_id"])]
    if patient:
        out += [seg("HL", str(hl + 3), str(hl + 2), "23", "0"), seg("PAT", patient["relationship_code"]),
                *_person_837(patient, "QC")]
    facility = "B" if kind == "P" else "A"
    clm05 = (c["place_of_service"], facility, c["frequency_code"])
    if kind == "P":
        out.append(seg("CLM", c["claim_id"], c["total_charge"], "", "", clm05, "Y", "A", "Y", "Y"))
    else:
        out.append(seg("CLM", c["claim_id"], c["total_charge"], "", "", clm05, "", "A", "Y", "Y"))
        out.append(seg("DTP", "434", "RD8", f"{_d8(c['service_date_from'])}-{_d8(c['service_date_to'])}"))
        out.append(seg("CL1", "3", "", "01"))
    # 837P allows one claim note (ADD: additional information), 837I ten, and has no ADD code (UPI: updated).
    out += [seg("NTE", "ADD" if kind == "P" else "UPI", n) for n in c.get("notes", [])[:1 if kind == "P" else 10]]
    dx = [d.replace(".", "") for d in c["diagnoses"]]
    if kind == "P":
        out.append(seg("HI", *(("ABK" if i == 0 else "ABF", d) for i, d in enumerate(dx))))
    else:
        out.append(seg("HI", ("ABK", dx[0])))
        if dx[1:]:
            out.append(seg("HI", *(("ABF", d) for d in dx[1:])))
    if "rendering_provider" in c:
        last, first = _person_name(c["rendering_provider"]["name"])
        out.append(seg("NM1", "82", "1", last, first, "", "", "", "XX", c["rendering_provider"]["npi"]))
    for line in c["service_lines"]:
        proc = ("HC", line["procedure_code"], *line["modifiers"]) if "procedure_code" in line else ""
        out.append(seg("LX", str(line["line_number"])))
        if kind == "P":
            out.append(seg("SV1", proc, line["charge"], "UN", str(line["units"]), line.get("place_of_service", ""),
                           "", tuple(str(p) for p in line["diagnosis_pointers"])))
        else:
            # SV201 is required: a line without a canonical revenue code gets 0510 (clinic), a neutral placeholder.
            out.append(seg("SV2", line.get("revenue_code", "0510"), proc, line["charge"], "UN", str(line["units"])))
        out.append(seg("DTP", "472", "D8", _d8(line["service_date"])))
        # Line item control number: what an 835 SVC loop's REF*6R echoes back to match the line.
        out.append(seg("REF", "6R", f"{c['claim_id']}-{line['line_number']}"))
    return out


def _person_837(p: dict[str, Any], qualifier: str) -> list[str]:
    if qualifier == "IL":
        name = seg("NM1", "IL", "1", p["last_name"], p["first_name"], "", "", "", "MI", p["member_id"])
    else:
        name = seg("NM1", "QC", "1", p["last_name"], p["first_name"])
    tail = [seg("REF", "1W", p["member_id"])] if qualifier == "QC" else []
    return [name, *_address(p["address"]), seg("DMG", "D8", _d8(p["birth_date"]), p["gender"]), *tail]


def encode_835(
    payments: Sequence[dict[str, Any]], *, sender_id: str, receiver_id: str, control_number: int,
    timezone: str = "UTC",
) -> bytes:
    """Encode canonical payments as one 835 interchange, one transaction set per payment."""
    sets = [_payment_835(p) for p in payments]
    if not sets:
        raise ValueError("an interchange needs at least one record")
    return _interchange("835", IMPLEMENTATION["835"], sets, sender_id=sender_id, receiver_id=receiver_id,
                        control_number=control_number, created=_when(payments[0]["sent_at"], timezone))


def _payer_tin(payer_id: str) -> str:
    # TRN03 is "1" + the payer's 9-digit TIN; synthetic payer ids are 5 digits, so pad them.
    return "1" + (payer_id.zfill(9)[-9:] if payer_id.isdigit() else "999999999")


def _payment_835(p: dict[str, Any]) -> list[str]:
    date, amount = _d8(p["payment_date"]), p["payment_amount"]
    if p["method"] == "ACH":  # placeholder bank routing and account numbers: not canonical
        bpr = seg("BPR", "I", amount, "C", "ACH", "CCP", "01", "999999999", "DA", "000000001",
                  _payer_tin(p["payer"]["payer_id"]), "", "01", "999999999", "DA", "000000002", date)
    else:
        bpr = seg("BPR", "I", amount, "C", "CHK", *[""] * 11, date)
    out = [bpr, seg("TRN", "1", p["trace_number"], _payer_tin(p["payer"]["payer_id"])),
           seg("N1", "PR", p["payer"]["name"]), seg("N3", "PO BOX 1000"), seg("N4", "AUSTIN", "TX", "78701"),
           seg("REF", "2U", p["payer"]["payer_id"]), seg("PER", "BL", "PROVIDER SERVICES", "TE", "8005550199"),
           seg("N1", "PE", p["payee"]["name"], "XX", p["payee"]["npi"]), seg("LX", "1")]
    for c in p["claims"]:
        pt = c["patient"]
        out.append(seg("CLP", c["claim_id"], c["status_code"], c["charge"], c["paid"],
                       c["patient_responsibility"], "12", f"X{c['claim_id']}"))
        out += _cas(c["adjustments"])
        out.append(seg("NM1", "QC", "1", pt["last_name"], pt["first_name"], "", "", "", "MI", pt["member_id"]))
        for line in c["lines"]:
            # SVC01 is a procedure (HC) or, for an institutional line without one, the revenue code (NU);
            # SVC04 carries a revenue code beside a procedure.
            svc01 = (("HC", line["procedure_code"], *line["modifiers"]) if "procedure_code" in line
                     else ("NU", line["revenue_code"]))
            svc04 = line.get("revenue_code", "") if "procedure_code" in line else ""
            out.append(seg("SVC", svc01, line["charge"], line["paid"], svc04, str(line["units"])))
            out.append(seg("DTM", "472", _d8(line["service_date"])))
            out += _cas(line["adjustments"])
            out.append(seg("REF", "6R", f"{c['claim_id']}-{line['line_number']}"))  # the 837's line control number
    return out


def _cas(adjustments: Iterable[dict[str, Any]]) -> list[str]:
    """CAS segments, one per run of equal group codes (at most six reasons each), keeping the order."""
    out: list[list[str]] = []
    group = None
    for a in adjustments:
        if a["group_code"] != group or len(out[-1]) >= 1 + 3 * 6:
            group = a["group_code"]
            out.append([group])
        out[-1] += [a["reason_code"], a["amount"], ""]
    return [seg("CAS", *elements) for elements in out]


def encode_834(
    eligibility: Sequence[dict[str, Any]], *, sender_id: str, receiver_id: str, control_number: int,
    per_transaction: int = 1, timezone: str = "UTC",
) -> bytes:
    """Encode canonical eligibility records as one 834 interchange; dependents become INS*N loops."""
    sets: list[list[str]] = []
    for chunk in _chunks(eligibility, per_transaction):
        t = _when(chunk[0]["sent_at"], timezone)
        body = [seg("BGN", "00", f"E{len(sets) + 1}", f"{t:%Y%m%d}", _time8(t), "UT" if timezone == "UTC" else "",
                    "", "", "2"),
                seg("N1", "P5", "MEDISTREAM SPONSOR", "FI", "999999991"),
                seg("N1", "IN", "MEDISTREAM INSURER", "FI", "999999992")]
        for r in chunk:
            body += _member_834(r, r["member"], r["relationship"], with_address=True)
            for d in r.get("dependents", []):
                body += _member_834(r, d, d["relationship"], with_address=False)
        sets.append(body)
    return _interchange("834", IMPLEMENTATION["834"], sets, sender_id=sender_id, receiver_id=receiver_id,
                        control_number=control_number, created=_when(eligibility[0]["sent_at"], timezone))


def _member_834(r: dict[str, Any], m: dict[str, Any], relationship: str, *, with_address: bool) -> list[str]:
    cov, plan = r["coverage"], r["plan"]
    maint = cov["maintenance_type_code"]
    if relationship == "18":
        ins = seg("INS", "Y", "18", maint, "", "A", "", "", "FT")
    else:
        ins = seg("INS", "N", relationship, maint, "", "A")
    ssn = m.get("ssn")
    out = [ins, seg("REF", "0F", r["subscriber_id"]), seg("REF", "ZZ", m["member_id"]),
           seg("NM1", "IL", "1", m["last_name"], m["first_name"], "", "", "", *(("34", ssn) if ssn else ()))]
    if m.get("phone"):
        out.append(seg("PER", "IP", "", "TE", m["phone"].removeprefix("+1")))
    if with_address:
        out += _address(m["address"])
    out += [seg("DMG", "D8", _d8(m["birth_date"]), m["gender"]),
            seg("HD", maint, "", "HLT", plan["plan_code"], plan["coverage_level"]),
            seg("DTP", "348", "D8", _d8(cov["start_date"]))]
    if cov.get("end_date"):
        out.append(seg("DTP", "349", "D8", _d8(cov["end_date"])))
    out.append(seg("REF", "1L", plan["group_number"]))
    return out

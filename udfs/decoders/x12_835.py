"""835: each transaction set (BPR/TRN, payer and payee, its CLP loops) -> one canonical payment.

The 835 has no payment identifier apart from its reassociation trace (TRN): payment_id is
"TRN03-TRN02", the originator's id and its check/EFT number, which X12 defines as unique together.
A line's number is its SVC's position within the claim. Amounts must balance as the guide demands:
SVC02 - line CAS = SVC03, CLP03 - claim and line CAS = CLP04, sum(CLP04) - PLB = BPR02.
Usage follows the 5010 guide (udfs/decoders/x12_usage.py): the payee is identified by NPI (N103 XX)
or tax id (N103 FI; REF*TJ adds it beside an NPI); SVC loops are situational (a claim-level payment
has none); SVC01 is a procedure (HC) or an institutional revenue code (NU), SVC04 a revenue code beside a
procedure; the patient's NM109 and NM104 are situational; PLB adjustments become
`provider_adjustments`; BPR04 may be ACH, CHK, BOP, FWT or NON (no payment).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.decoders.x12_elements import count, el, iso_date, missing, money, money_text, required, timestamp, within
from udfs.decoders.x12_envelope import X12_AMOUNT_UNBALANCED, X12_BAD_ELEMENT, TransactionSet

Loop = dict[str, Any]  # "CLP"/"SVC": segment, "CAS": [segments], "DTM": {qualifier: segment}, ...
_METHODS = frozenset({"ACH", "CHK", "BOP", "FWT", "NON"})


def payments(ts: TransactionSet, tz: ZoneInfo) -> Iterator[Item]:
    """Yield the one payment Item of an 835 transaction set."""
    try:
        yield Item(ts.position, record=_payment(ts, tz))
    except Rejected as err:
        yield Item(ts.position, error=within(ts.position, err))


def _payment(ts: TransactionSet, tz: ZoneInfo) -> dict[str, Any]:
    comp = ts.component
    header: dict[str, list[str]] = {}
    claims: list[Loop] = []
    provider_adjustments: list[dict[str, str]] = []
    entity = ""
    for s in ts.segments[1:-1]:
        sid = s[0]
        if sid == "CLP":
            claims.append({"CLP": s, "CAS": [], "DTM": {}, "lines": []})
        elif sid == "SVC":
            if not claims:
                raise missing("CLP before the first SVC")
            claims[-1]["lines"].append({"SVC": s, "CAS": [], "DTM": {}})
        elif sid == "PLB":
            provider_adjustments += _plb(s, comp)
        elif claims:
            loop = claims[-1]["lines"][-1] if claims[-1]["lines"] else claims[-1]
            if sid == "CAS":
                loop["CAS"].append(s)
            elif sid == "DTM":
                loop["DTM"].setdefault(el(s, 1), s)
            elif sid == "NM1" and not claims[-1]["lines"]:
                loop.setdefault(f"NM1:{el(s, 1)}", s)
        elif sid == "N1":
            entity = el(s, 1)
            header.setdefault(f"N1:{entity}", s)
        elif sid == "REF":
            header.setdefault(f"REF:{entity}:{el(s, 1)}", s)
        else:
            header.setdefault(sid, s)
    bpr, trn, payer, payee = (header.get(k) for k in ("BPR", "TRN", "N1:PR", "N1:PE"))
    if bpr is None or trn is None or payer is None or payee is None:
        raise missing("BPR, TRN, N1*PR or N1*PE")
    method = el(bpr, 4)
    if method not in _METHODS:
        raise Rejected(X12_BAD_ELEMENT, "BPR04 is not ACH, CHK, BOP, FWT or NON")
    amount = money(required(bpr, 2, "BPR02"), "BPR02")
    trace, originator = required(trn, 2, "TRN02"), required(trn, 3, "TRN03")
    payer_ref = header.get("REF:PR:2U")
    paid_claims = [_claim(c, comp, k) for k, c in enumerate(claims, 1)]
    if not paid_claims:
        raise missing("CLP")
    plb = sum((Decimal(a["amount"]) for a in provider_adjustments), Decimal(0))
    if sum((Decimal(c["paid"]) for c in paid_claims), Decimal(0)) - plb != amount:
        raise Rejected(X12_AMOUNT_UNBALANCED, "BPR02 is not the sum of CLP04 less PLB adjustments")
    record = {
        "record_type": "payment", "sent_at": timestamp(ts.gs_date, ts.gs_time, "GS04/GS05", tz),
        "payment_id": f"{originator}-{trace}", "trace_number": trace,
        "payer": {"payer_id": el(payer_ref, 2) if payer_ref else el(payer, 4) or originator,
                  "name": required(payer, 2, "1000A N102")},
        "payee": _payee(payee, header.get("REF:PE:TJ")),
        "payment_date": iso_date(el(bpr, 16), "BPR16"), "payment_amount": money_text(amount),
        "method": method, "claims": paid_claims,
    }
    if provider_adjustments:
        record["provider_adjustments"] = provider_adjustments
    return record


def _payee(n1: list[str], tj: list[str] | None) -> dict[str, str]:
    """1000B N1*PE: identified by NPI (N103 XX) or by tax id (N103 FI); REF*TJ gives the tax id beside an NPI."""
    qualifier, code = el(n1, 3), required(n1, 4, "1000B N104")
    out = {"name": required(n1, 2, "1000B N102")}
    if qualifier == "XX":
        out["npi"] = code
        if tj is not None:
            out["tax_id"] = required(tj, 2, "1000B REF*TJ REF02")
    elif qualifier == "FI":
        out["tax_id"] = code
    else:
        raise Rejected(X12_BAD_ELEMENT, "1000B N103 is not XX (NPI) or FI (tax id)")
    return out


def _plb(plb: list[str], comp: str) -> list[dict[str, str]]:
    """PLB: up to six (reason composite, amount) pairs in PLB03/04 .. PLB13/14; the reason is PLB0n-1."""
    out = []
    for k in range(3, min(len(plb), 15), 2):
        if not el(plb, k) and not el(plb, k + 1):
            continue
        reason = el(plb, k).split(comp)[0]
        if not reason:
            raise Rejected(X12_BAD_ELEMENT, f"PLB{k:02d} has no adjustment reason")
        out.append({"reason_code": reason, "amount": money_text(money(el(plb, k + 1), f"PLB{k + 1:02d}"))})
    return out


def _adjustments(cas_segments: list[list[str]]) -> tuple[list[dict[str, str]], Decimal]:
    """CAS segments -> canonical adjustments (in order) and their total."""
    out: list[dict[str, str]] = []
    total = Decimal(0)
    for cas in cas_segments:
        group = required(cas, 1, "CAS01")
        for k in range(2, min(len(cas), 20), 3):  # up to six reason/amount/quantity triplets
            if not cas[k] and not el(cas, k + 1):
                continue
            amount = money(el(cas, k + 1), "CAS amount")
            total += amount
            out.append({"group_code": group, "reason_code": required(cas, k, "CAS reason code"),
                        "amount": money_text(amount)})
    return out, total


def _claim(c: Loop, comp: str, k: int) -> dict[str, Any]:
    try:
        return _claim_fields(c, comp)
    except Rejected as err:
        raise within(f"CLP {k}", err) from None


def _claim_fields(c: Loop, comp: str) -> dict[str, Any]:
    clp = c["CLP"]
    charge, paid = money(el(clp, 3), "CLP03"), money(el(clp, 4), "CLP04")
    patient = c.get("NM1:QC")
    if patient is None:
        raise missing("NM1*QC")
    adjustments, adjusted = _adjustments(c["CAS"])
    lines = []
    for k, line in enumerate(c["lines"], 1):
        try:
            out, line_adjusted = _line(line, k, comp, c["DTM"].get("232"))
        except Rejected as err:
            raise within(f"SVC {k}", err) from None
        adjusted += line_adjusted
        lines.append(out)
    if charge - adjusted != paid:
        raise Rejected(X12_AMOUNT_UNBALANCED, "CLP03 less claim and line CAS is not CLP04")
    return {
        "claim_id": required(clp, 1, "CLP01"), "status_code": required(clp, 2, "CLP02"),
        "patient": _patient(patient),
        "charge": money_text(charge), "paid": money_text(paid),
        "patient_responsibility": money_text(money(el(clp, 5), "CLP05") if el(clp, 5) else Decimal(0)),
        "adjustments": adjustments, "lines": lines,
    }


def _line(line: Loop, k: int, comp: str, claim_start: list[str] | None) -> tuple[dict[str, Any], Decimal]:
    svc = line["SVC"]
    procedure = el(svc, 1).split(comp)
    if len(procedure) < 2 or not procedure[1]:
        raise Rejected(X12_BAD_ELEMENT, "SVC01 has no procedure code")
    codes = _service_codes(procedure, el(svc, 4))
    charge, paid = money(el(svc, 2), "SVC02"), money(el(svc, 3), "SVC03")
    adjustments, adjusted = _adjustments(line["CAS"])
    if charge - adjusted != paid:
        raise Rejected(X12_AMOUNT_UNBALANCED, "SVC02 less CAS is not SVC03")
    dtm = line["DTM"].get("472") or line["DTM"].get("150") or claim_start
    if dtm is None:
        raise missing("DTM*472")
    return {
        "line_number": k, **codes, "modifiers": [m for m in procedure[2:6] if m],
        "units": count(el(svc, 5), "SVC05", default=1), "charge": money_text(charge),
        "paid": money_text(paid), "service_date": iso_date(el(dtm, 2), "DTM02"), "adjustments": adjustments,
    }, adjusted


def _service_codes(procedure: list[str], svc04: str) -> dict[str, str]:
    """SVC01 qualifier NU: an institutional revenue code; any other: a procedure, with SVC04's revenue code if sent."""
    if procedure[0] == "NU":
        return {"revenue_code": procedure[1]}
    return {"procedure_code": procedure[1], **({"revenue_code": svc04} if svc04 else {})}


def _patient(nm1: list[str]) -> dict[str, str]:
    """2100 NM1*QC: the last name is required; NM104 and the identifier NM109 are situational."""
    out = {"last_name": required(nm1, 3, "NM1*QC NM103")}
    if el(nm1, 4):
        out["first_name"] = nm1[4]
    if el(nm1, 9):
        out["member_id"] = nm1[9]
    return out

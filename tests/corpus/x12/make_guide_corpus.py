"""Guide-shaped X12 5010 interchanges: each valid shape the implementation guides allow, and what they refuse.

Written for this project from the guides' loop structure (837P 005010X222A1, 837I 005010X223A2,
835 005010X221A1, 834 005010X220A1), not copied from anyone's samples; every person is made up.
Each body is a list of tagged segments `(loop, key, elements)`, so a test can drop one segment by
its loop and key (`build(name, drop={("2010BA", "DMG")})`), or blank one element of it by its
position (`drop={("2400", "SV2", "2")}`), and see what the decoder makes of the shape without it
(tests/unit/test_x12_guide_corpus.py, driven by udfs/decoders/x12_usage.py).

Run `python -m tests.corpus.x12.make_guide_corpus` to (re)write the `guide_*.edi` files; the test
checks the files on disk are exactly what this module builds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from udfs.npi import npi_check_digit

HERE = Path(__file__).resolve().parent
Element = str | tuple[str, ...]  # a tuple is a composite
Tagged = tuple[str, str, tuple[Element, ...]]  # (loop, key, elements with the segment id first)
Drop = tuple[str, ...]  # (loop, key): leave the segment out; (loop, key, "n"): send its element n empty


def _npi(body: str) -> str:
    return body + str(npi_check_digit(body))


BILLING_NPI, RENDERING_NPI, PAYEE_NPI = _npi("154321098"), _npi("167890123"), _npi("112233445")


@dataclass(frozen=True)
class Delimiters:
    """ISA delimiters: element, repetition (ISA11), component (ISA16), segment terminator (+ a line break)."""

    element: str = "*"
    repetition: str = "^"
    component: str = ":"
    terminator: str = "~"
    line_break: str = "\n"


def seg(*elements: Element) -> tuple[Element, ...]:
    """One segment's elements, the segment id first."""
    return elements


def _text(elements: tuple[Element, ...], d: Delimiters) -> str:
    parts = [d.component.join(e) if isinstance(e, tuple) else e for e in elements]
    while parts and parts[-1] == "":
        parts.pop()
    return d.element.join(parts) + d.terminator + d.line_break


def _blank(elements: tuple[Element, ...], positions: set[int]) -> tuple[Element, ...]:
    return tuple("" if k in positions else e for k, e in enumerate(elements))


def interchange(transaction: str, groups: list[list[list[Tagged]]], d: Delimiters = Delimiters(),
                drop: Iterable[Drop] = ()) -> bytes:
    """An ISA..IEA interchange: groups of transaction sets, each set a list of tagged body segments."""
    st01, version, functional = {
        "837P": ("837", "005010X222A1", "HC"), "837I": ("837", "005010X223A2", "HC"),
        "835": ("835", "005010X221A1", "HP"), "834": ("834", "005010X220A1", "BE")}[transaction]
    dropped = {(x[0], x[1]) for x in drop if len(x) == 2}
    blanks: dict[tuple[str, str], set[int]] = {}
    for x in drop:
        if len(x) == 3:
            blanks.setdefault((x[0], x[1]), set()).add(int(x[2]))
    e, r, c = d.element, d.repetition, d.component
    out = [f"ISA{e}00{e}{' ' * 10}{e}00{e}{' ' * 10}{e}ZZ{e}{'MSGUIDESEND':<15}{e}ZZ{e}{'MSGUIDERECV':<15}"
           f"{e}250602{e}0800{e}{r}{e}00501{e}000000901{e}0{e}T{e}{c}{d.terminator}{d.line_break}"]
    for g, sets in enumerate(groups, 1):
        control = str(900 + g)
        out.append(_text(seg("GS", functional, "MSGUIDESEND", "MSGUIDERECV", "20250602", "0800", control, "X",
                             version), d))
        for s, body in enumerate(sets, 1):
            number = f"{g:02d}{s:02d}"
            kept = [_blank(elements, blanks.get((loop, key), set())) for loop, key, elements in body
                    if (loop, key) not in dropped]
            out.append(_text(seg("ST", st01, number, version), d))
            out += [_text(elements, d) for elements in kept]
            out.append(_text(seg("SE", str(len(kept) + 2), number), d))
        out.append(_text(seg("GE", str(len(sets)), control), d))
    out.append(_text(seg("IEA", str(len(groups)), "000000901"), d))
    return "".join(out).encode()


# --- 837 ---------------------------------------------------------------------------------------------

def _837_header(kind: str, billing_id: str = "EI") -> list[Tagged]:
    return [
        ("header", "BHT", seg("BHT", "0019", "00", "GUIDE1", "20250602", "0800", "CH")),
        ("1000A", "NM1*41", seg("NM1", "41", "2", "GUIDE CLEARING", "", "", "", "", "46", "MSGUIDESEND")),
        ("1000A", "PER", seg("PER", "IC", "EDI DESK", "TE", "8005550100")),
        ("1000B", "NM1*40", seg("NM1", "40", "2", "GUIDE RECEIVER", "", "", "", "", "46", "MSGUIDERECV")),
        ("2000A", "HL*20", seg("HL", "1", "", "20", "1")),
        ("2010AA", "NM1*85", seg("NM1", "85", "2", "NORTHWIND FAMILY CLINIC", "", "", "", "", "XX", BILLING_NPI)),
        ("2010AA", "N3", seg("N3", "400 HARBOR WAY")),
        ("2010AA", "N4", seg("N4", "SEATTLE", "WA", "981011234")),
        ("2010AA", "REF*EI", seg("REF", billing_id, "910000001")),
    ]


def _837_subscriber(self_pay: bool) -> list[Tagged]:
    sbr02 = "18" if self_pay else ""  # 5010: SBR02 is 18 when the subscriber is the patient, else not sent
    return [
        ("2000B", "HL*22", seg("HL", "2", "1", "22", "0" if self_pay else "1")),
        ("2000B", "SBR", seg("SBR", "P", sbr02, "GRP7700", "", "", "", "", "", "CI")),
        ("2010BA", "NM1*IL", seg("NM1", "IL", "1", "QUILLFEATHER", "ODESSA", "", "", "", "MI", "ZQM100200300")),
        ("2010BA", "N3", seg("N3", "77 LARCH COURT")),
        ("2010BA", "N4", seg("N4", "TACOMA", "WA", "98402")),
        ("2010BA", "DMG", seg("DMG", "D8", "19790412", "F")),
        ("2010BB", "NM1*PR", seg("NM1", "PR", "2", "EVERGREEN MUTUAL", "", "", "", "", "PI", "EVM01")),
    ]


_PATIENT: list[Tagged] = [
    ("2000C", "HL*23", seg("HL", "3", "2", "23", "0")),
    ("2000C", "PAT", seg("PAT", "19")),
    ("2010CA", "NM1*QC", seg("NM1", "QC", "1", "QUILLFEATHER", "MILO")),
    ("2010CA", "N3", seg("N3", "77 LARCH COURT")),
    ("2010CA", "N4", seg("N4", "TACOMA", "WA", "98402")),
    ("2010CA", "DMG", seg("DMG", "D8", "20140923", "M")),
]


def claim_837p(pcn: str = "PCN-2025-0001", dependent: bool = True, hi: tuple[Element, ...] = (
        ("ABK", "E119"), ("ABF", "I10")), billing_id: str = "EI") -> list[Tagged]:
    """An 837P claim: the patient a dependent (2000C) unless `dependent` is False."""
    return [
        *_837_header("P", billing_id), *_837_subscriber(self_pay=not dependent), *(_PATIENT if dependent else []),
        ("2300", "CLM", seg("CLM", pcn, "135.00", "", "", ("11", "B", "1"), "Y", "A", "Y", "Y")),
        ("2300", "NTE", seg("NTE", "ADD", "FOLLOW UP IN TWO WEEKS")),
        ("2300", "HI", seg("HI", *hi)),
        ("2310B", "NM1*82", seg("NM1", "82", "1", "ASHGROVE", "PELL", "", "", "", "XX", RENDERING_NPI)),
        ("2400", "LX", seg("LX", "1")),
        ("2400", "SV1", seg("SV1", ("HC", "99213"), "95.00", "UN", "1", "", "", ("1",))),
        ("2400", "DTP*472", seg("DTP", "472", "D8", "20250520")),
        ("2400", "LX#2", seg("LX", "2")),
        ("2400", "SV1#2", seg("SV1", ("HC", "36415"), "40.00", "UN", "1", "", "", ("1", "2"))),
        ("2400", "DTP*472#2", seg("DTP", "472", "D8", "20250520")),
    ]


def claim_837i() -> list[Tagged]:
    """An 837I claim for a dependent: statement dates, SV2 revenue lines."""
    return [
        *_837_header("I"), *_837_subscriber(self_pay=False), *_PATIENT,
        ("2300", "CLM", seg("CLM", "INST/2025.0042", "250.00", "", "", ("13", "A", "1"), "", "A", "Y", "Y")),
        ("2300", "DTP*434", seg("DTP", "434", "RD8", "20250501-20250502")),
        ("2300", "HI", seg("HI", ("ABK", "S93401A"))),
        ("2400", "LX", seg("LX", "1")),
        ("2400", "SV2", seg("SV2", "0450", ("HC", "99283"), "250.00", "UN", "1")),
    ]


def claim_837i_inpatient() -> list[Tagged]:
    """An inpatient interim bill (type of bill 112): revenue-code lines without SV202, no line dates."""
    return [
        *_837_header("I"), *_837_subscriber(self_pay=False), *_PATIENT,
        ("2300", "CLM", seg("CLM", "INPT-2025-0007", "3120.00", "", "", ("11", "A", "2"), "", "A", "Y", "Y")),
        ("2300", "DTP*434", seg("DTP", "434", "RD8", "20250503-20250505")),
        ("2300", "HI", seg("HI", ("ABK", "J189"), ("ABF", "E119"))),
        ("2400", "LX", seg("LX", "1")),
        ("2400", "SV2", seg("SV2", "0120", "", "2400.00", "DA", "2", "1200.00")),  # room and board: SV206 rate
        ("2400", "LX#2", seg("LX", "2")),
        ("2400", "SV2#2", seg("SV2", "0250", "", "320.00", "UN", "4")),  # pharmacy
        ("2400", "LX#3", seg("LX", "3")),
        ("2400", "SV2#3", seg("SV2", "0636", ("HC", "J1885"), "400.00", "UN", "2")),  # drug: HCPCS sent
    ]


# --- 835 ---------------------------------------------------------------------------------------------

def payment_835(payee: str = "XX", lines: bool = True, plb: bool = False, method: str = "ACH",
                payer_ref: bool = True) -> list[Tagged]:
    """One remittance: payee by NPI (XX, with REF*TJ) or tax id (FI); line- or claim-level; optional PLB.

    Charges 135.00: paid 120.00 with 15.00 patient responsibility (line- or claim-level CAS), or, for
    NON, denied whole (CAS CO 50). PLB takes 25.00 back (WO) and adds 5.00 interest (L6): BPR02 100.00.
    """
    denied = method == "NON"
    paid = "0.00" if denied else "120.00"
    total = "0.00" if denied else "100.00" if plb else "120.00"
    body: list[Tagged] = [
        ("header", "BPR", seg("BPR", "H" if denied else "I", total, "C", method, "" if denied else "CCP",
                              "", "", "", "", "", "", "", "", "", "", "20250610")),
        ("header", "TRN", seg("TRN", "1", "EFT77001", "1910000002")),
        ("1000A", "N1*PR", seg("N1", "PR", "EVERGREEN MUTUAL", *(() if payer_ref else ("XV", "EVM01")))),
        *([("1000A", "REF*2U", seg("REF", "2U", "EVM01"))] if payer_ref else []),
        ("1000B", "N1*PE", seg("N1", "PE", "NORTHWIND FAMILY CLINIC",
                               *(("XX", PAYEE_NPI) if payee == "XX" else (payee, "910000001")))),
    ]
    if payee == "XX":
        body.append(("1000B", "REF*TJ", seg("REF", "TJ", "910000001")))
    body += [
        ("2000", "LX", seg("LX", "1")),
        ("2100", "CLP", seg("CLP", "PCN-2025-0001", "4" if denied else "1", "135.00", paid,
                            "0.00" if denied else "15.00", "12", "EVM7788")),
        ("2100", "NM1*QC", seg("NM1", "QC", "1", "QUILLFEATHER", "MILO", "", "", "", "MI", "ZQM100200300")),
        ("2100", "DTM*232", seg("DTM", "232", "20250520")),
    ]
    if denied:
        body.append(("2100", "CAS", seg("CAS", "CO", "50", "135.00")))
    elif lines:
        body += [
            ("2110", "SVC", seg("SVC", ("HC", "99213"), "95.00", "80.00", "", "1")),
            ("2110", "DTM*472", seg("DTM", "472", "20250520")),
            ("2110", "CAS", seg("CAS", "PR", "1", "15.00")),
            ("2110", "SVC#2", seg("SVC", ("HC", "36415"), "40.00", "40.00", "", "1")),
        ]
    else:
        body.append(("2100", "CAS", seg("CAS", "PR", "1", "15.00")))  # claim-level adjudication: no 2110 loops
    if plb:
        body.append(("trailer", "PLB", seg("PLB", "1910000002", "20251231", ("WO", "EVM5500"), "25.00", ("L6",),
                                           "-5.00")))
    return body


def institutional_835() -> list[Tagged]:
    """An institutional remittance: one line by revenue code alone (SVC01 NU), one by procedure with SVC04."""
    return [
        ("header", "BPR", seg("BPR", "I", "2100.00", "C", "CHK", "", "", "", "", "", "", "", "", "", "", "",
                              "20250612")),
        ("header", "TRN", seg("TRN", "1", "CHK900123", "1910000002")),
        ("1000A", "N1*PR", seg("N1", "PR", "EVERGREEN MUTUAL")),
        ("1000A", "REF*2U", seg("REF", "2U", "EVM01")),
        ("1000B", "N1*PE", seg("N1", "PE", "HARBOR GENERAL HOSPITAL", "XX", PAYEE_NPI)),
        ("2000", "LX", seg("LX", "1")),
        ("2100", "CLP", seg("CLP", "INPT-2025-0007", "1", "2720.00", "2100.00", "120.00", "13", "EVM9911")),
        ("2100", "NM1*QC", seg("NM1", "QC", "1", "QUILLFEATHER", "MILO", "", "", "", "MI", "ZQM100200300")),
        ("2100", "DTM*232", seg("DTM", "232", "20250503")),
        ("2110", "SVC", seg("SVC", ("NU", "0120"), "2400.00", "1900.00", "", "2")),
        ("2110", "CAS", seg("CAS", "CO", "45", "380.00")),
        ("2110", "CAS*PR", seg("CAS", "PR", "1", "120.00")),
        ("2110", "SVC#2", seg("SVC", ("HC", "99283"), "320.00", "200.00", "0450", "1")),
        ("2110", "CAS#2", seg("CAS", "CO", "45", "120.00")),
    ]


# --- 834 ---------------------------------------------------------------------------------------------

def _834_header() -> list[Tagged]:
    return [
        ("header", "BGN", seg("BGN", "00", "ENR-0601", "20250601", "0800", "", "", "", "2")),
        ("header", "REF*38", seg("REF", "38", "POLICY7700")),
        ("1000A", "N1*P5", seg("N1", "P5", "HARBORVIEW OUTFITTERS", "FI", "910000003")),
        ("1000B", "N1*IN", seg("N1", "IN", "EVERGREEN MUTUAL", "FI", "910000004")),
    ]


_REASONS = {"021": "28", "001": "25", "025": "41", "024": "07", "030": "XN"}  # INS04 maintenance reason per INS03


def member_834(maintenance: str = "021", full: bool = True, dependent: bool = True, relationship: str = "19"
               ) -> list[Tagged]:
    """A subscriber (and a dependent): `full` sends DMG, N3/N4, PER and the HD loop; else only what is required."""
    body = _834_header()
    body += [
        ("2000", "INS", seg("INS", "Y", "18", maintenance, _REASONS[maintenance], "A", "", "", "FT")),
        ("2000", "REF*0F", seg("REF", "0F", "ZQS500600")),
        ("2000", "REF*1L", seg("REF", "1L", "GRP7700")),
    ]
    if maintenance == "024":
        body.append(("2000", "DTP*357", seg("DTP", "357", "D8", "20250630")))
    else:
        body.append(("2000", "DTP*356", seg("DTP", "356", "D8", "20250101")))
    body.append(("2100A", "NM1*IL", seg("NM1", "IL", "1", "QUILLFEATHER", "ODESSA", "", "", "", "ZZ", "ZQM100200300")))
    if full:
        body += [
            ("2100A", "PER", seg("PER", "IP", "", "HP", "2065550123")),
            ("2100A", "N3", seg("N3", "77 LARCH COURT")),
            ("2100A", "N4", seg("N4", "TACOMA", "WA", "98402")),
            ("2100A", "DMG", seg("DMG", "D8", "19790412", "F")),
            ("2300", "HD", seg("HD", maintenance, "", "HLT", "PLAN-GOLD", "FAM")),
            ("2300", "DTP*348", seg("DTP", "348", "D8", "20250101")),
        ]
    if dependent:
        body += [
            ("2000#2", "INS", seg("INS", "N", relationship, maintenance, _REASONS[maintenance], "A")),
            ("2000#2", "REF*0F", seg("REF", "0F", "ZQS500600")),
            ("2000#2", "REF*ZZ", seg("REF", "ZZ", "ZQM100200301")),
            ("2100A#2", "NM1*IL", seg("NM1", "IL", "1", "QUILLFEATHER", "MILO")),
            ("2100A#2", "DMG", seg("DMG", "D8", "20140923", "M")),
        ]
        if full:
            body += [("2300#2", "HD", seg("HD", maintenance, "", "HLT", "PLAN-GOLD", "FAM")),
                     ("2300#2", "DTP*348", seg("DTP", "348", "D8", "20250101"))]
    return body


def termination_834() -> list[Tagged]:
    """A termination: the coverage ends (HD without HD04/HD05, DTP*349); no demographics, no address."""
    return [*_834_header(),
            ("2000", "INS", seg("INS", "Y", "18", "024", "07", "A", "", "", "TE")),
            ("2000", "REF*0F", seg("REF", "0F", "ZQS500600")),
            ("2100A", "NM1*IL", seg("NM1", "IL", "1", "QUILLFEATHER", "ODESSA", "", "", "", "ZZ", "ZQM100200300")),
            ("2300", "HD", seg("HD", "024", "", "HLT")),
            ("2300", "DTP*349", seg("DTP", "349", "D8", "20250630"))]


# --- the corpus ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """One corpus file: its transaction, how it is built, and what each position decodes to (None = a record)."""

    transaction: str
    note: str
    build: Callable[[Iterable[Drop]], bytes]
    items: tuple[tuple[str, str | None], ...]


def _one(transaction: str, body: Callable[[], list[Tagged]], d: Delimiters = Delimiters()
         ) -> Callable[[Iterable[Drop]], bytes]:
    return lambda drop: interchange(transaction, [[body()]], d, drop)


VARIANTS: dict[str, Variant] = {
    "guide_837p_dependent.edi": Variant(
        "837P", "patient is a dependent (2000C); the subscriber's N3/N4 and DMG are sent",
        _one("837P", claim_837p), (("ST 0101 CLM 1", None),)),
    "guide_837p_dependent_subscriber_without_demographics.edi": Variant(
        "837P", "2000C patient; 2010BA without N3/N4/DMG (situational: the subscriber is not the patient)",
        lambda drop: interchange("837P", [[claim_837p()]], Delimiters(),
                                 {("2010BA", "N3"), ("2010BA", "N4"), ("2010BA", "DMG"), *drop}),
        (("ST 0101 CLM 1", None),)),
    "guide_837p_subscriber_is_patient.edi": Variant(
        "837P", "SBR02 18, no 2000C: the subscriber's demographics are required and sent",
        _one("837P", lambda: claim_837p(dependent=False)), (("ST 0101 CLM 1", None),)),
    "guide_837p_patient_control_number.edi": Variant(
        "837P", "CLM01 with characters of the X12 basic and extended sets",
        _one("837P", lambda: claim_837p(pcn="A&B (2025)/07.#4_x?")), (("ST 0101 CLM 1", None),)),
    "guide_837p_groups_and_sets.edi": Variant(
        "837P", "two functional groups of two transaction sets each",
        lambda drop: interchange("837P", [[claim_837p(), claim_837p("PCN-2")], [claim_837p("PCN-3"),
                                                                             claim_837p("PCN-4")]], Delimiters(), drop),
        (("GS 901 ST 0101 CLM 1", None), ("GS 901 ST 0102 CLM 1", None), ("GS 902 ST 0201 CLM 1", None),
         ("GS 902 ST 0202 CLM 1", None))),
    "guide_837p_other_delimiters.edi": Variant(
        "837P", "| elements, ! repetitions, } components, newline-only segment terminators",
        _one("837P", claim_837p, Delimiters("|", "!", "}", "\n", "")), (("ST 0101 CLM 1", None),)),
    "guide_837p_crlf_terminator.edi": Variant(
        "837P", "^ elements, { repetitions, > components, ~ then CR LF",
        _one("837P", claim_837p, Delimiters("^", "{", ">", "~", "\r\n")), (("ST 0101 CLM 1", None),)),
    "guide_837i_dependent.edi": Variant(
        "837I", "institutional claim for a dependent (2000C): statement dates, revenue-code lines",
        _one("837I", claim_837i), (("ST 0101 CLM 1", None),)),
    "guide_835_payee_npi_lines.edi": Variant(
        "835", "payee by NPI with REF*TJ; line-level adjudication (2110)", _one("835", payment_835),
        (("ST 0101", None),)),
    "guide_835_payee_tax_id_claim_level.edi": Variant(
        "835", "payee by tax id (N103 FI); claim-level adjudication, no 2110 loops",
        _one("835", lambda: payment_835(payee="FI", lines=False)), (("ST 0101", None),)),
    "guide_835_plb.edi": Variant(
        "835", "PLB provider adjustments (WO recovery, L6 interest): BPR02 = sum(CLP04) - PLB",
        _one("835", lambda: payment_835(plb=True)), (("ST 0101", None),)),
    "guide_835_non_payment.edi": Variant(
        "835", "BPR01 H, BPR04 NON: a denial with nothing paid", _one("835", lambda: payment_835(method="NON")),
        (("ST 0101", None),)),
    "guide_834_add.edi": Variant(
        "834", "addition (021): subscriber with DMG, N3/N4, PER, HD; a dependent taking the household address",
        _one("834", member_834), (("ST 0101 INS 1", None), ("ST 0101 INS 2", None))),
    "guide_834_change_minimal.edi": Variant(
        "834", "change (001): only INS, REF*0F, NM1 (no DMG, N3/N4, HD)",
        _one("834", lambda: member_834("001", full=False)), (("ST 0101 INS 1", None), ("ST 0101 INS 2", None))),
    "guide_834_termination.edi": Variant(
        "834", "termination (024): HD without plan or level, DTP*349; nothing else", _one("834", termination_834),
        (("ST 0101 INS 1", None),)),
    "guide_834_reinstatement.edi": Variant(
        "834", "reinstatement (025) with full details", _one("834", lambda: member_834("025")),
        (("ST 0101 INS 1", None), ("ST 0101 INS 2", None))),
    "guide_837p_billing_ssn.edi": Variant(
        "837P", "billing provider identified by REF*SY (a sole proprietor's SSN) instead of REF*EI",
        _one("837P", lambda: claim_837p(billing_id="SY")), (("ST 0101 CLM 1", None),)),
    "guide_837i_inpatient_interim.edi": Variant(
        "837I", "inpatient interim bill (frequency 2): revenue-code lines without SV202, one drug line with HCPCS",
        _one("837I", claim_837i_inpatient), (("ST 0101 CLM 1", None),)),
    "guide_835_institutional_revenue_lines.edi": Variant(
        "835", "institutional remittance: SVC01 NU (revenue code alone) and SVC04 beside a procedure; check",
        _one("835", institutional_835), (("ST 0101", None),)),
    "guide_835_payer_id_n104.edi": Variant(
        "835", "payer identified by 1000A N103 XV / N104, no REF*2U", _one("835", lambda: payment_835(payer_ref=False)),
        (("ST 0101", None),)),
    "guide_834_audit.edi": Variant(
        "834", "audit or compare (030) with full details", _one("834", lambda: member_834("030")),
        (("ST 0101 INS 1", None), ("ST 0101 INS 2", None))),
    "guide_834_stepchild_dependent.edi": Variant(
        "834", "a change (001) adding nothing but a stepchild's loop (INS02 17), no DMG/N3/N4 for the subscriber",
        _one("834", lambda: member_834("001", full=False, relationship="17")),
        (("ST 0101 INS 1", None), ("ST 0101 INS 2", None))),
    "guide_bad_837i_line_without_revenue_code.edi": Variant(
        "837I", "SV201 empty: the revenue code is required on every institutional line",
        lambda drop: interchange("837I", [[claim_837i()]], Delimiters(), {("2400", "SV2", "1"), *drop}),
        (("ST 0101 CLM 1", "x12_bad_element"),)),
    "guide_bad_837p_icd9.edi": Variant(
        "837P", "ICD-9 diagnoses (BK/BF): the canonical claim is ICD-10, refused with a reason",
        _one("837P", lambda: claim_837p(hi=(("BK", "25000"),))), (("ST 0101 CLM 1", "x12_bad_element"),)),
    "guide_bad_837p_patient_without_dmg.edi": Variant(
        "837P", "2010CA without DMG: required for the patient",
        lambda drop: interchange("837P", [[claim_837p()]], Delimiters(), {("2010CA", "DMG"), *drop}),
        (("ST 0101 CLM 1", "x12_missing_segment"),)),
    "guide_bad_837p_subscriber_patient_without_address.edi": Variant(
        "837P", "SBR02 18, no 2000C, no 2010BA N3/N4: required when the subscriber is the patient",
        lambda drop: interchange("837P", [[claim_837p(dependent=False)]], Delimiters(),
                                 {("2010BA", "N3"), ("2010BA", "N4"), *drop}),
        (("ST 0101 CLM 1", "x12_missing_segment"),)),
    "guide_bad_835_payee_xv.edi": Variant(
        "835", "payee identified by N103 XV (a plan id): neither NPI nor tax id, refused",
        _one("835", lambda: payment_835(payee="XV", lines=False)), (("ST 0101", "x12_bad_element"),)),
    "guide_bad_835_plb_unbalanced.edi": Variant(
        "835", "PLB sent but BPR02 ignores it", _one("835", lambda: [
            *((loop, key, seg("BPR", "I", "120.00", *e[3:]) if key == "BPR" else e)
              for loop, key, e in payment_835(plb=True))]), (("ST 0101", "x12_amount_unbalanced"),)),
    "guide_bad_834_dependent_without_id.edi": Variant(
        "834", "a dependent without REF*ZZ/23/ABB or NM109: it cannot be keyed; the subscriber still decodes",
        lambda drop: interchange("834", [[member_834()]], Delimiters(), {("2000#2", "REF*ZZ"), *drop}),
        (("ST 0101 INS 1", None), ("ST 0101 INS 2", "x12_missing_segment"))),
    "guide_bad_834_without_ref_0f.edi": Variant(
        "834", "no REF*0F: the subscriber identifier is required", lambda drop: interchange(
            "834", [[member_834(dependent=False)]], Delimiters(), {("2000", "REF*0F"), *drop}),
        (("ST 0101 INS 1", "x12_missing_segment"),)),
}

def main() -> None:
    """Write every guide_*.edi file."""
    for name, variant in VARIANTS.items():
        (HERE / name).write_bytes(variant.build(()))


if __name__ == "__main__":
    main()

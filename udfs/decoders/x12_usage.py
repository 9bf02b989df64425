"""The X12 5010 usage of every segment the decoders read, as data: required, or situational and when.

One row per (transaction, loop, segment): R (required by the implementation guide, or by the
canonical record where noted) or S (situational: the guide's condition), and the canonical fields
it fills. The decoders follow it; tests/unit/test_x12_guide_corpus.py holds them to it (a
situational segment dropped from a guide-shaped interchange still gives an accepted record, a
required one a refusal), and the README's X12 coverage table is `coverage_markdown()`. ELEMENTS
does the same one level down, for elements whose usage differs from their segment's (SV202, NM104,
CLP05, HD04, ...): blanked one at a time, a situational element still gives an accepted record, a
required one a refusal; `element_markdown()` renders it.
Segments a decoder does not read (PRV, CL1, AMT, QTY, K3, ...) are skipped wherever they stand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """One segment's usage in one loop of one transaction."""

    transaction: str  # 837P, 837I, 835, 834
    loop: str
    segment: str  # "DMG", "NM1*IL", or several that go together: "N3+N4"
    usage: str  # "R" or "S"
    condition: str  # for S: when the guide requires or allows it; for R: a note, if any
    fills: str  # the canonical fields, "" when the segment is structure only


_837_COMMON: tuple[tuple[str, str, str, str, str], ...] = (
    ("2010AA", "NM1*85", "R", "NM108 XX: billing NPI", "billing_provider.npi, .name"),
    ("2010AA", "N3+N4", "R", "", "billing_provider.address"),
    ("2010AA", "REF*EI", "R", "REF*SY (SSN) is read in its place", "billing_provider.tax_id"),
    ("2000B", "SBR", "R", "SBR02 18 when the subscriber is the patient", "subscriber.relationship_code"),
    ("2010BA", "NM1*IL", "R", "NM104 first name situational (persons without one)",
     "subscriber.member_id, .last_name, .first_name"),
    ("2010BA", "N3+N4", "S", "required when the subscriber is the patient (no 2000C loop)", "subscriber.address"),
    ("2010BA", "DMG", "S", "required when the subscriber is the patient (no 2000C loop)",
     "subscriber.birth_date, .gender"),
    ("2010BB", "NM1*PR", "R", "", "payer.payer_id, .name"),
    ("2000C", "PAT", "R", "when the patient is not the subscriber (the 2000C loop is then sent)",
     "patient.relationship_code"),
    ("2010CA", "NM1*QC", "R", "in 2000C; REF*1W gives the patient's own member id", "patient.last_name, .first_name"),
    ("2010CA", "N3+N4", "R", "in 2000C", "patient.address"),
    ("2010CA", "DMG", "R", "in 2000C", "patient.birth_date, .gender"),
    ("2300", "CLM", "R", "CLM01 any of the basic and extended character sets, 1-38",
     "claim_id, total_charge, place_of_service, frequency_code"),
    ("2300", "HI", "R", "one ABK principal diagnosis, ABF others; ICD-9 BK/BF refused", "diagnoses"),
    ("2300", "NTE", "S", "when the provider has remarks", "notes"),
)
_837P: tuple[tuple[str, str, str, str, str], ...] = (
    ("2310B", "NM1*82", "S", "when the rendering provider is not the billing provider", "rendering_provider"),
    ("2400", "SV1", "R", "", "service_lines[].procedure_code, .modifiers, .charge, .units, .diagnosis_pointers"),
    ("2400", "DTP*472", "R", "", "service_lines[].service_date, service_date_from/to"),
)
_837I: tuple[tuple[str, str, str, str, str], ...] = (
    ("2300", "DTP*434", "R", "statement dates", "service_date_from/to"),
    ("2400", "SV2", "R", "", "service_lines[].procedure_code, .charge, .units"),
)
_835: tuple[tuple[str, str, str, str, str], ...] = (
    ("header", "BPR", "R", "BPR04 ACH, CHK, BOP, FWT or NON", "payment_amount, method, payment_date"),
    ("header", "TRN", "R", "", "trace_number, payment_id"),
    ("1000A", "N1*PR", "R", "", "payer.name"),
    ("1000A", "REF*2U", "S", "when the payer has an additional id; else N104, else TRN03", "payer.payer_id"),
    ("1000B", "N1*PE", "R", "N103 XX (NPI) or FI (tax id); XV refused", "payee.npi or payee.tax_id, .name"),
    ("1000B", "REF*TJ", "S", "when the payee is identified by NPI and its tax id is known", "payee.tax_id"),
    ("2100", "CLP", "R", "", "claims[].claim_id, .status_code, .charge, .paid, .patient_responsibility"),
    ("2100", "CAS", "S", "when the claim is adjusted at claim level", "claims[].adjustments"),
    ("2100", "NM1*QC", "R", "NM104 and NM109 situational", "claims[].patient"),
    ("2100", "DTM*232", "S", "when the claim's service period is known; a line without DTM*472 takes it",
     "claims[].lines[].service_date"),
    ("2110", "SVC", "S", "when adjudicated at line level (a claim-level payment has none)", "claims[].lines[]"),
    ("trailer", "PLB", "S", "when the payee's payment is adjusted; BPR02 = sum(CLP04) - PLB", "provider_adjustments"),
)
_834: tuple[tuple[str, str, str, str, str], ...] = (
    ("header", "BGN", "R", "BGN05 time zone code read", "sent_at"),
    ("2000", "INS", "R", "INS03 001, 021, 024, 025, 030", "relationship, coverage.maintenance_type_code"),
    ("2000", "REF*0F", "R", "", "subscriber_id"),
    ("2000", "REF*1L", "S", "when the group is not in the HD loop or REF*38", "plan.group_number"),
    ("2000", "REF*ZZ", "S", "REF*23 or REF*ABB in its place; a dependent needs one (the canonical key)",
     "member.member_id"),
    ("2000", "DTP*356", "S", "eligibility begin: the coverage start when there is no HD loop", "coverage.start_date"),
    ("2100A", "NM1*IL", "R", "NM108 ZZ: member id; 34: SSN", "member.last_name, .first_name"),
    ("2100A", "PER", "S", "when the member has a contact number", "member.phone"),
    ("2100A", "N3+N4", "S", "a dependent without them takes its household's", "member.address"),
    ("2100A", "DMG", "S", "maintenance and terminations often omit it", "member.birth_date, .gender"),
    ("2300", "HD+DTP*348", "S", "when coverage is added, changed or ended; only the first HD loop is canonical",
     "plan.plan_code, .coverage_level, coverage.start_date"),
)


@dataclass(frozen=True)
class ElementUsage:
    """One element's usage inside a segment the table above lists (R or S, and when)."""

    transaction: str
    loop: str
    segment: str  # the segment's key in USAGE ("NM1*IL", "SV2")
    element: str  # "SV202"
    usage: str  # "R" or "S"
    condition: str
    fills: str


# Elements whose usage differs from their segment's, or that decide the canonical record's shape.
_837_ELEMENTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("2000B", "SBR", "SBR02", "S", "18 when the subscriber is the patient; not sent otherwise",
     "subscriber.relationship_code"),
    ("2010BA", "NM1*IL", "NM104", "S", "when the person has a first name", "subscriber.first_name"),
    ("2010CA", "NM1*QC", "NM104", "S", "when the person has a first name", "patient.first_name"),
    ("2300", "CLM", "CLM01", "R", "1-38 characters of the basic and extended sets", "claim_id"),
    ("2300", "CLM", "CLM05", "R", "place : B (837P) or A (837I) : frequency 1, 7, 8 (837I also 0, 2-5)",
     "place_of_service, frequency_code"),
)
_837P_ELEMENTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("2400", "SV1", "SV105", "S", "when the line's place of service differs from the claim's",
     "service_lines[].place_of_service"),
)
_837I_ELEMENTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("2400", "SV2", "SV201", "R", "NUBC revenue code", "service_lines[].revenue_code"),
    ("2400", "SV2", "SV202", "S", "outpatient lines when a procedure code exists; inpatient lines only for drugs "
     "(HCPCS) or HIPPS", "service_lines[].procedure_code, .modifiers"),
)
_835_ELEMENTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("1000A", "N1*PR", "N104", "S", "payer id (N103 XV) when no REF*2U is sent", "payer.payer_id"),
    ("2100", "NM1*QC", "NM104", "S", "when the patient has a first name", "claims[].patient.first_name"),
    ("2100", "NM1*QC", "NM109", "S", "when the patient's member id is known", "claims[].patient.member_id"),
    ("2100", "CLP", "CLP05", "S", "when the patient owes something (0.00 when absent)",
     "claims[].patient_responsibility"),
    ("2110", "SVC", "SVC01", "R", "HC procedure, or NU revenue code alone (institutional)",
     "claims[].lines[].procedure_code or .revenue_code"),
    ("2110", "SVC", "SVC04", "S", "revenue code beside a procedure in SVC01", "claims[].lines[].revenue_code"),
    ("2110", "SVC", "SVC05", "S", "units when not 1", "claims[].lines[].units"),
)
_834_ELEMENTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("2000", "INS", "INS02", "R", "18 self, or the dependent's relationship (01, 03-17, 19, 23-26, 31, 38, 53, 60, "
     "D2, G8, G9)", "relationship"),
    ("2100A", "NM1*IL", "NM104", "S", "when the member has a first name", "member.first_name"),
    ("2300", "HD+DTP*348", "HD04", "S", "plan coverage description, when the sponsor sends one", "plan.plan_code"),
    ("2300", "HD+DTP*348", "HD05", "S", "coverage level, when the sponsor sends one", "plan.coverage_level"),
)


def _element_rows(transaction: str, rows: tuple[tuple[str, str, str, str, str, str], ...]
                  ) -> tuple[ElementUsage, ...]:
    return tuple(ElementUsage(transaction, *row) for row in rows)


ELEMENTS: tuple[ElementUsage, ...] = (
    *_element_rows("837P", _837_ELEMENTS + _837P_ELEMENTS), *_element_rows("837I", _837_ELEMENTS + _837I_ELEMENTS),
    *_element_rows("835", _835_ELEMENTS), *_element_rows("834", _834_ELEMENTS),
)


def _rows(transaction: str, rows: tuple[tuple[str, str, str, str, str], ...]) -> tuple[Usage, ...]:
    return tuple(Usage(transaction, *row) for row in rows)


USAGE: tuple[Usage, ...] = (
    *_rows("837P", _837_COMMON + _837P), *_rows("837I", _837_COMMON + _837I), *_rows("835", _835),
    *_rows("834", _834),
)


def coverage_markdown() -> str:
    """The usage table as Markdown, for the README (rows the 837P and 837I share are written once)."""
    rows: dict[tuple[str, str, str, str, str], list[str]] = {}
    for u in USAGE:
        rows.setdefault((u.loop, u.segment, u.usage, u.condition, u.fills), []).append(u.transaction)
    lines = ["| transaction | loop | segment | usage | when / note | canonical fields |", "|---|---|---|---|---|---|"]
    lines += [f"| {'/'.join(t)} | {loop} | `{segment}` | {'required' if usage == 'R' else 'situational'} "
              f"| {condition} | {fills} |" for (loop, segment, usage, condition, fills), t in rows.items()]
    return "\n".join(lines)


def element_markdown() -> str:
    """The element usage table as Markdown (rows the 837P and 837I share are written once)."""
    rows: dict[tuple[str, str, str, str, str, str], list[str]] = {}
    for u in ELEMENTS:
        rows.setdefault((u.loop, u.segment, u.element, u.usage, u.condition, u.fills), []).append(u.transaction)
    lines = ["| transaction | loop | element | usage | when / note | canonical fields |", "|---|---|---|---|---|---|"]
    lines += [f"| {'/'.join(t)} | {loop} | `{element}` | {'required' if usage == 'R' else 'situational'} "
              f"| {condition} | {fills} |" for (loop, _, element, usage, condition, fills), t in rows.items()]
    return "\n".join(lines)

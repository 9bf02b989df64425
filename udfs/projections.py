"""Projections of a protected canonical record onto its analytics table (one table per record type).

Columns are read from the *protected* form, so an identifier that policy tokens appears as its
token (joinable across feeds), masked fields as their mask, and nothing encrypted becomes a column.
Money stays a decimal string (the table casts it exactly); dates stay ISO strings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

# Column order of each Iceberg table's type-specific part, and of the Flink row that feeds it.
CLAIM_COLUMNS: tuple[str, ...] = (
    "claim_id", "frequency_code", "payer_id", "billing_npi", "rendering_npi", "service_date_from",
    "service_date_to", "place_of_service", "primary_diagnosis", "diagnosis_count", "service_line_count",
    "total_charge", "claim_kind",
)
PAYMENT_COLUMNS: tuple[str, ...] = (
    "payment_id", "trace_number", "payer_id", "payee_npi", "payment_date", "payment_amount", "payment_method",
    "paid_claim_count",
)
ELIGIBILITY_COLUMNS: tuple[str, ...] = (
    "member_token", "person_token", "subscriber_token", "relationship", "plan_code", "group_number",
    "coverage_level", "coverage_start", "coverage_end", "maintenance_type_code", "dependent_count",
)
INT_COLUMNS = frozenset({"diagnosis_count", "service_line_count", "paid_claim_count", "dependent_count"})
LINE_FIELDS: tuple[str, ...] = ("line_number", "procedure_code", "revenue_code", "modifiers", "units", "charge",
                                "service_date")


def claim_columns(claim: dict[str, Any]) -> dict[str, Any]:
    """The claims-table columns of a schema-valid protected claim."""
    rendering = claim.get("rendering_provider") or {}
    return {
        "claim_id": claim["claim_id"],
        "frequency_code": claim["frequency_code"],
        "payer_id": claim["payer"]["payer_id"],
        "billing_npi": claim["billing_provider"]["npi"],
        "rendering_npi": rendering.get("npi"),
        "service_date_from": claim["service_date_from"],
        "service_date_to": claim["service_date_to"],
        "place_of_service": claim["place_of_service"],
        "primary_diagnosis": claim["diagnoses"][0],
        "diagnosis_count": len(claim["diagnoses"]),
        "service_line_count": len(claim["service_lines"]),
        "total_charge": claim["total_charge"],
        "claim_kind": claim.get("claim_kind", "professional"),
        # One small JSON array the SQL side unnests into claim_lines (cheaper than re-parsing the payload).
        "service_lines": orjson.dumps(
            [{f: (",".join(line[f]) if f == "modifiers" else line.get(f)) for f in LINE_FIELDS}
             for line in claim["service_lines"]]).decode(),
    }


def payment_columns(payment: dict[str, Any]) -> dict[str, Any]:
    """The payments-table columns of a schema-valid protected payment (remittance)."""
    return {
        "payment_id": payment["payment_id"],
        "trace_number": payment.get("trace_number"),
        "payer_id": payment["payer"]["payer_id"],
        "payee_npi": payment["payee"].get("npi"),  # a payee may be known by tax id only (835 N103 FI)
        "payment_date": payment["payment_date"],
        "payment_amount": payment["payment_amount"],
        "payment_method": payment.get("method"),
        "paid_claim_count": len(payment["claims"]),
    }


def eligibility_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The eligibility-table columns of a schema-valid protected eligibility record."""
    member, plan, coverage = record["member"], record.get("plan") or {}, record.get("coverage") or {}
    return {
        "member_token": member["member_id"],
        "person_token": member.get("person_token"),
        "subscriber_token": record.get("subscriber_id"),
        "relationship": record.get("relationship"),
        "plan_code": plan.get("plan_code"),
        "group_number": plan.get("group_number"),
        "coverage_level": plan.get("coverage_level"),
        "coverage_start": coverage.get("start_date"),
        "coverage_end": coverage.get("end_date"),
        "maintenance_type_code": coverage.get("maintenance_type_code"),
        "dependent_count": len(record.get("dependents") or ()),
    }


PROJECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "claim": claim_columns, "payment": payment_columns, "eligibility": eligibility_columns,
}
# Every column any projection fills, once, in a stable order: the ingest operator's row carries them all.
TABLE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    (*CLAIM_COLUMNS, "service_lines", *PAYMENT_COLUMNS, *ELIGIBILITY_COLUMNS)))


def project(record_type: str, record: dict[str, Any]) -> dict[str, Any]:
    """The table columns of a protected record of `record_type`."""
    return PROJECTIONS[record_type](record)

"""Projection of a canonical claim onto the analytics `claims` table.

Only columns that carry no patient PHI: identifiers of the claim, payer and providers (NPIs are
public provider identifiers), codes, dates and amounts. Patient and subscriber fields stay in the
archive until the PHI protection stage can token them.
"""

from __future__ import annotations

from typing import Any

# Column order of the Iceberg table and of the Flink row that feeds it.
CLAIM_COLUMNS: tuple[str, ...] = (
    "record_id",
    "feed",
    "claim_id",
    "frequency_code",
    "payer_id",
    "billing_npi",
    "rendering_npi",
    "service_date_from",
    "service_date_to",
    "place_of_service",
    "primary_diagnosis",
    "diagnosis_count",
    "service_line_count",
    "total_charge",
    "claim_kind",
)


def claim_row(claim: dict[str, Any]) -> dict[str, Any]:
    """The claims-table columns of a schema-valid claim (money stays a decimal string)."""
    rendering = claim.get("rendering_provider") or {}
    return {
        "record_id": claim["record_id"],
        "feed": claim["feed"],
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
    }

"""Iceberg columns of the ingest job's tables: column -> Flink SQL expression over the deduplicated rows.

Data, beside udfs/projections.py (which fills the type-specific columns a row carries): the job
builds one INSERT per table from these, in this column order.
"""

from __future__ import annotations

from udfs.projections import CLAIM_LINE_FIELDS


def _line(field: str) -> str:
    """A claim line's text for `field`: `line` is one element of a claim row's `service_lines` (1-based in SQL)."""
    return f"line[{CLAIM_LINE_FIELDS.index(field) + 1}]"


ROW_TAIL = {
    "business_key": "business_key", "original_key": "original_key", "sent_at": "TO_TIMESTAMP_LTZ(sent_at_ms, 3)",
    "sent_date": "CAST(dt AS DATE)", "source": "source", "ingested_at": "TO_TIMESTAMP_LTZ(ingested_at_ms, 3)",
}
ENRICHED = {"payer_name": "payer_name", "payer_line_of_business": "payer_line_of_business",
            "enrichment_misses": "enrichment_misses"}
# Iceberg column -> SQL expression over the deduplicated rows, per table.
ICEBERG_COLUMNS: dict[str, dict[str, str]] = {
    "claims": {
        "record_id": "record_id", "feed": "feed", "claim_id": "claim_id", "frequency_code": "frequency_code",
        "payer_id": "payer_id", "billing_npi": "billing_npi", "rendering_npi": "rendering_npi",
        "service_date_from": "CAST(service_date_from AS DATE)", "service_date_to": "CAST(service_date_to AS DATE)",
        "place_of_service": "place_of_service", "primary_diagnosis": "primary_diagnosis",
        "diagnosis_count": "diagnosis_count", "service_line_count": "service_line_count",
        "total_charge": "CAST(total_charge AS DECIMAL(14, 2))", "claim_kind": "claim_kind", **ENRICHED,
        "billing_provider_taxonomy": "billing_provider_taxonomy", **ROW_TAIL,
    },
    "claim_lines": {
        "record_id": "record_id", "feed": "feed", "claim_id": "claim_id",
        "line_number": f"CAST({_line('line_number')} AS INT)",
        "procedure_code": _line("procedure_code"), "modifiers": _line("modifiers"),
        "units": f"CAST({_line('units')} AS DECIMAL(12, 3))",
        "charge": f"CAST({_line('charge')} AS DECIMAL(14, 2))",
        "service_date": f"CAST({_line('service_date')} AS DATE)", **ROW_TAIL,
    },
    "payments": {
        "record_id": "record_id", "feed": "feed", "payment_id": "payment_id", "trace_number": "trace_number",
        "payer_id": "payer_id", "payee_npi": "payee_npi", "payment_date": "CAST(payment_date AS DATE)",
        "payment_amount": "CAST(payment_amount AS DECIMAL(14, 2))", "payment_method": "payment_method",
        "paid_claim_count": "paid_claim_count", **ENRICHED, **ROW_TAIL,
    },
    # B105 - column names holding tokens of PHI fields, not passwords
    "eligibility": {
        "record_id": "record_id", "feed": "feed", "member_token": "member_token", "person_token": "person_token",
        "subscriber_token": "subscriber_token", "relationship": "relationship", "plan_code": "plan_code",
        "group_number": "group_number", "coverage_level": "coverage_level",
        "coverage_start": "CAST(coverage_start AS DATE)", "coverage_end": "CAST(coverage_end AS DATE)",
        "maintenance_type_code": "maintenance_type_code", "dependent_count": "dependent_count", **ROW_TAIL,
    },
}
# B105 - column names holding tokens of PHI fields, not passwords
ICEBERG_COLUMNS["device_events"] = {
    "record_id": "record_id", "feed": "feed", "device_token": "device_token", "patient_token": "patient_token",
    "device_kind": "device_kind", "facility_id": "facility_id", "care_unit": "care_unit",
    "event_time": "TO_TIMESTAMP_LTZ(event_time_ms, 3)", "event_date": "CAST(event_date AS DATE)",
    "heart_rate_bpm": "heart_rate_bpm", "spo2_pct": "spo2_pct", "systolic_mmhg": "systolic_mmhg",
    "diastolic_mmhg": "diastolic_mmhg", "respiratory_rate": "respiratory_rate",
    "temperature_c": "CAST(temperature_c AS DECIMAL(4, 1))", "alarm_count": "alarm_count",
    "alarm_codes": "alarm_codes", "alarm_priority": "alarm_priority", "event_time_ms": "event_time_ms", **ROW_TAIL,
}
DEAD_LETTER_COLUMNS: dict[str, str] = {
    "dead_letter_id": "dead_letter_id", "feed": "feed", "stage": "stage", "reason": "reason",
    "category": "category", "source": "source", "dead_at": "TO_TIMESTAMP_LTZ(dead_at_ms, 3)", "dt": "CAST(dt AS DATE)",
}
# The fraud_signals table from the detectors' rows (udfs/fraud.py SIGNAL_FIELDS).
# B105 - column names holding tokens of PHI fields, not passwords
FRAUD_SIGNAL_COLUMNS: dict[str, str] = {
    "signal_id": "signal_id", "rule": "rule", "member_token": "member_token", "provider_npi": "provider_npi",
    "service_date": "CAST(service_date AS DATE)", "evidence_count": "evidence_count", "threshold": "threshold",
    "evidence_keys": "evidence_keys", "feed": "feed", "detected_at": "TO_TIMESTAMP_LTZ(detected_at_ms, 3)",
    "ingested_at": "TO_TIMESTAMP_LTZ(ingested_at_ms, 3)", "detected_date": "CAST(dt AS DATE)",
}

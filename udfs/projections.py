"""Projections of a protected canonical record onto its analytics table (one table per record type).

Columns are read from the *protected* form, so an identifier that policy tokens appears as its
token (joinable across feeds), masked fields as their mask, and nothing encrypted becomes a column.
Money stays a decimal string (the table casts it exactly); dates stay ISO strings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
# A device event's columns (decision 0040): tokens of the device and the patient, the reading, its alarms, and its
# event time (epoch ms, the job's event-time stages read it; its UTC day partitions the table).
DEVICE_EVENT_COLUMNS: tuple[str, ...] = (
    "device_token", "patient_token", "device_kind", "facility_id", "care_unit", "event_time_ms", "event_date",
    "heart_rate_bpm", "spo2_pct", "systolic_mmhg", "diastolic_mmhg", "respiratory_rate", "temperature_c",
    "alarm_count", "alarm_codes", "alarm_priority",
)
VITALS_COLUMNS: tuple[str, ...] = ("heart_rate_bpm", "spo2_pct", "systolic_mmhg", "diastolic_mmhg", "respiratory_rate")
INT_COLUMNS = frozenset({"diagnosis_count", "service_line_count", "paid_claim_count", "dependent_count",
                         *VITALS_COLUMNS, "alarm_count"})
EVENT_TIME_COLUMN = "event_time_ms"  # BIGINT in the ingest operator's row
_PRIORITY_ORDER = {"low": 1, "medium": 2, "high": 3}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The claim_lines table's own columns, in the order a claim row carries each line (`service_lines`): one array
# of texts per line, which the job's SQL unnests and casts (udfs/iceberg_columns.py, connectors/sinks.py).
CLAIM_LINE_FIELDS: tuple[str, ...] = ("line_number", "procedure_code", "modifiers", "units", "charge", "service_date")


def json_value_text(value: Any) -> str | None:
    """The text Flink SQL's JSON_VALUE gives for `value` written as JSON by orjson: how line values read before.

    Lines crossed to the JVM as one JSON array that SQL parsed again per line and field (JSON_QUERY, then
    JSON_VALUE); they now cross as texts, and these are the same texts: a string as it is, a number as Java's
    BigDecimal prints the JSON number (`2.0`, `1E+16`), a boolean as `true`/`false`, null, NaN and objects as NULL.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = orjson.dumps(value).decode()  # NaN and infinities are written as null
        return None if text == "null" else str(Decimal(text))  # Decimal prints as BigDecimal.toString does
    return None  # JSON_VALUE of an object or array is NULL


def claim_line_texts(line: dict[str, Any]) -> list[str | None]:
    """One service line's claim_lines texts, in CLAIM_LINE_FIELDS order."""
    return [json_value_text(",".join(line[f]) if f == "modifiers" else line.get(f)) for f in CLAIM_LINE_FIELDS]


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
        # Not a claims-table column: the subscriber's token, which the fraud detectors key claims by (udfs/fraud.py),
        # carried in the row's member_token (the eligibility table's column of the same token namespace).
        "member_token": claim["subscriber"]["member_id"],
        # Per line its claim_lines columns as texts (CLAIM_LINE_FIELDS), which the SQL side unnests and casts: no
        # JSON to parse again per line and field in the JVM (decision 0022).
        "service_lines": [claim_line_texts(line) for line in claim["service_lines"]],
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


def instant_ms(rfc3339: str) -> int:
    """Epoch milliseconds of a standardized RFC 3339 instant (exact to the millisecond, never through a float)."""
    moment = datetime.fromisoformat(rfc3339)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def device_event_columns(event: dict[str, Any]) -> dict[str, Any]:
    """The device_events-table columns of a schema-valid protected device event."""
    device, vitals, alarms = event["device"], event["vitals"], event["alarms"]
    when = event["event_time"]
    # A lineage trace (connectors/lineage/datasets.py) hands in its path instead of the instant: keep it as it is.
    event_ms = instant_ms(when) if isinstance(when, str) else when
    event_date = datetime.fromtimestamp(event_ms / 1000, UTC).date().isoformat() if isinstance(event_ms, int) else when
    priorities = [a["priority"] for a in alarms]
    return {
        "device_token": device["device_id"],
        "patient_token": event["patient"]["mrn"],
        "device_kind": device["kind"],
        "facility_id": device.get("facility_id"),
        "care_unit": device.get("unit"),
        "event_time_ms": event_ms,
        "event_date": event_date,
        **{name: vitals.get(name) for name in VITALS_COLUMNS},
        "temperature_c": vitals.get("temperature_c"),
        "alarm_count": len(alarms),
        "alarm_codes": ",".join(a["code"] for a in alarms) or None,
        "alarm_priority": max(priorities, key=_PRIORITY_ORDER.__getitem__) if priorities else None,
    }


PROJECTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "claim": claim_columns, "payment": payment_columns, "eligibility": eligibility_columns,
    "device_event": device_event_columns,
}
# Every column any projection fills, once, in a stable order: the ingest operator's row carries them all.
TABLE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    (*CLAIM_COLUMNS, "service_lines", *PAYMENT_COLUMNS, *ELIGIBILITY_COLUMNS, *DEVICE_EVENT_COLUMNS)))


def project(record_type: str, record: dict[str, Any]) -> dict[str, Any]:
    """The table columns of a protected record of `record_type`."""
    return PROJECTIONS[record_type](record)

"""The canonical structure of each record type, as data: which field holds which kind of value.

Standardization walks records by these specs (udfs/standardize.py), never by guessing from key
names, so a field only changes when it is listed here. Adding a canonical field is adding a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class Each:
    """Spec of a JSON array whose every item follows `item`."""

    item: Spec


Spec: TypeAlias = "str | Mapping[str, Spec] | Each"

# Leaf kinds; _KINDS maps each to its normalizer.
DATE, DATETIME, MONEY, SIGNED_MONEY = "date", "datetime", "money", "signed_money"
CODE, CODE2, CODE3, LOWER_CODE, ICD10 = "code", "code2", "code3", "lower_code", "icd10"
NAME, ID, PHONE, STATE, ZIP, KEEP = "name", "id", "phone", "state", "zip", "keep"

ADDRESS: Spec = {"line1": NAME, "line2": NAME, "city": NAME, "state": STATE, "zip": ZIP}
PERSON: Spec = {
    "member_id": ID, "first_name": NAME, "last_name": NAME, "birth_date": DATE, "gender": CODE,
    "address": ADDRESS, "phone": PHONE, "relationship_code": CODE2,
}
PAYER: Spec = {"payer_id": ID, "name": NAME}
NOTES: Spec = Each(KEEP)  # free text stays verbatim; the list is still a copy
ADJUSTMENTS: Spec = Each({"group_code": CODE, "reason_code": CODE, "amount": SIGNED_MONEY})

SPECS: dict[str, Spec] = {
    "claim": {
        "sent_at": DATETIME, "received_at": DATETIME, "claim_id": ID, "frequency_code": CODE,
        "claim_kind": LOWER_CODE, "payer": PAYER,
        "billing_provider": {"npi": ID, "name": NAME, "tax_id": ID, "address": ADDRESS},
        "rendering_provider": {"npi": ID, "name": NAME},
        "subscriber": PERSON, "patient": PERSON, "diagnoses": Each(ICD10),
        "service_lines": Each({
            "procedure_code": CODE, "revenue_code": CODE, "modifiers": Each(CODE), "charge": MONEY,
            "service_date": DATE, "place_of_service": CODE2,
        }),
        "total_charge": MONEY, "service_date_from": DATE, "service_date_to": DATE,
        "place_of_service": CODE2, "notes": NOTES,
    },
    "payment": {
        "sent_at": DATETIME, "payment_id": ID, "trace_number": ID, "payer": PAYER,
        "payee": {"npi": ID, "tax_id": ID, "name": NAME}, "payment_date": DATE, "payment_amount": MONEY,
        "method": CODE,
        "claims": Each({
            "claim_id": ID, "status_code": CODE,
            "patient": {"member_id": ID, "first_name": NAME, "last_name": NAME},
            "charge": MONEY, "paid": MONEY, "patient_responsibility": MONEY, "adjustments": ADJUSTMENTS,
            "lines": Each({
                "procedure_code": CODE, "revenue_code": CODE, "modifiers": Each(CODE), "charge": MONEY, "paid": MONEY,
                "service_date": DATE, "adjustments": ADJUSTMENTS,
            }),
        }),
        "notes": NOTES,
    },
    "eligibility": {
        "sent_at": DATETIME,
        "member": {
            "member_id": ID, "first_name": NAME, "last_name": NAME, "birth_date": DATE, "gender": CODE,
            "address": ADDRESS, "phone": PHONE, "ssn": ID,
        },
        "subscriber_id": ID, "relationship": CODE2,
        "plan": {"plan_code": ID, "group_number": ID, "coverage_level": CODE},
        "coverage": {"start_date": DATE, "end_date": DATE, "maintenance_type_code": CODE3},
        "dependents": Each({
            "member_id": ID, "first_name": NAME, "last_name": NAME, "birth_date": DATE, "gender": CODE,
            "relationship": CODE2,
        }),
        "notes": NOTES,
    },
    # Readings are numbers the schema bounds (KEEP: standardization never rounds a vital sign); the device kind
    # and alarm priority are lower-case enums, facility, unit and alarm codes upper-case codes.
    "device_event": {
        "sent_at": DATETIME, "event_time": DATETIME,
        "device": {"device_id": ID, "kind": LOWER_CODE, "facility_id": CODE, "unit": CODE},
        "patient": {"mrn": ID},
        "vitals": {
            "heart_rate_bpm": KEEP, "spo2_pct": KEEP, "systolic_mmhg": KEEP, "diastolic_mmhg": KEEP,
            "respiratory_rate": KEEP, "temperature_c": KEEP,
        },
        "alarms": Each({"code": CODE, "priority": LOWER_CODE}),
    },
}

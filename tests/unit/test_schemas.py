"""The canonical JSON Schemas: well-formed, strict, and rejecting what the pipeline must dead-letter."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from infra.local.synthetic import SCHEMA_VERSION, generate
from schemas import PAYMENT_RECORD_TYPES as RECORD_TYPES  # synthetic.generate's (device events: test_device_events)
from schemas import load_schema, schema_path, validator

ENVELOPE = ("record_id", "record_type", "schema_version", "feed", "sent_at")


@pytest.fixture(scope="module")
def samples() -> dict[str, dict[str, Any]]:
    """One valid generated record per type."""
    out: dict[str, dict[str, Any]] = {}
    for g in generate(200, seed=5, duplicate_rate=0, invalid_rate=0):
        out.setdefault(g.record_type, orjson.loads(g.payload))
    assert set(out) == set(RECORD_TYPES)
    return out


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_schema_is_strict_draft_2020_12_with_envelope(record_type: str) -> None:
    schema = load_schema(record_type)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert set(ENVELOPE) <= set(schema["required"])
    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
    assert schema["properties"]["record_type"] == {"const": record_type}


def test_shared_definitions_are_identical_across_files() -> None:
    # Each file stands alone for its consumers; this keeps the copies from drifting apart.
    defs = [load_schema(rt)["$defs"] for rt in RECORD_TYPES]
    for name in ("record_id", "date", "date_time", "money", "npi", "address", "member_id", "notes"):
        assert defs[0][name] == defs[1][name] == defs[2][name], name


def test_loader_caches_and_refuses_unknown_types() -> None:
    assert load_schema("claim") is load_schema("claim")
    assert load_schema("claim") == json.loads(schema_path("claim").read_text())
    for bad in ("remit", "../pyproject", "claim.schema"):
        with pytest.raises(ValueError):
            load_schema(bad)


@pytest.mark.parametrize("record_type", RECORD_TYPES)
def test_generated_sample_is_valid(samples: dict[str, dict[str, Any]], record_type: str) -> None:
    assert list(validator(record_type).iter_errors(samples[record_type])) == []


def _set(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node: Any = out
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()
REJECTED = [
    ("claim", "service_lines.0.charge", 135.0),  # money as a float
    ("claim", "total_charge", "135.5"),
    ("claim", "total_charge", "-1.00"),
    ("claim", "diagnoses.0", "E119"),  # dot dropped
    ("claim", "diagnoses", []),
    ("claim", "service_lines.0.procedure_code", "9921"),
    ("claim", "subscriber.address.state", "TEX"),
    ("claim", "subscriber.address.zip", "1234"),
    ("claim", "subscriber.birth_date", "2024-02-30"),  # well-shaped, not a date: needs the format checker
    ("claim", "sent_at", "2025-06-02T08:00:00"),  # no offset
    ("claim", "frequency_code", "6"),  # retired from the NUBC list
    ("claim", "service_lines.0.procedure_code", _DELETE),  # a line needs a procedure or a revenue code
    ("claim", "service_lines.0.revenue_code", "450"),
    ("payment", "claims.0.status_code", "24"),
    ("claim", "billing_provider.npi", "123456789"),
    ("claim", "subscriber.shoe_size", "9"),  # nested objects are closed too
    ("claim", "claim_id", _DELETE),
    ("claim", "record_id", "not-a-ulid"),
    ("claim", "schema_version", "2.0"),
    ("payment", "method", "WIR"),
    ("payment", "claims.0.adjustments", [{"group_code": "XX", "reason_code": "45", "amount": "1.00"}]),
    ("payment", "claims.0.paid", 10),
    ("payment", "claims", []),
    ("eligibility", "member.ssn", "912-34-5678"),
    ("eligibility", "coverage.maintenance_type_code", "099"),
    ("eligibility", "plan.coverage_level", "XYZ"),
    ("eligibility", "member.gender", "X"),
]


@pytest.mark.parametrize(("record_type", "path", "value"), REJECTED, ids=[f"{r[0]}:{r[1]}" for r in REJECTED])
def test_schema_rejects(samples: dict[str, dict[str, Any]], record_type: str, path: str, value: Any) -> None:
    bad = _set(samples[record_type], path, value)
    assert not validator(record_type).is_valid(bad)


def test_optional_parts_may_be_absent(samples: dict[str, dict[str, Any]]) -> None:
    claim = samples["claim"]
    for key in ("patient", "received_at", "rendering_provider", "notes"):
        claim = _set(claim, key, _DELETE) if key in claim else claim
    assert validator("claim").is_valid(claim)
    ok_adjustment = {"group_code": "CR", "reason_code": "45", "amount": "-12.00"}  # reversals go negative
    assert validator("payment").is_valid(_set(samples["payment"], "claims.0.adjustments", [ok_adjustment]))


def test_pipeline_validator_agrees_with_the_2020_12_reference() -> None:
    """fastjsonschema (draft-07 engine, used in the pipeline) and jsonschema 2020-12 give one verdict."""
    import orjson
    from fastjsonschema import JsonSchemaValueException

    from schemas import fast_validator, validator

    checked = 0
    for g in generate(400, seed=77, duplicate_rate=0.0, invalid_rate=0.5):
        try:
            record = orjson.loads(g.payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("record_type") not in ("claim", "payment", "eligibility"):
            continue
        reference = validator(record["record_type"]).is_valid(record)
        try:
            fast_validator(record["record_type"])(record)
            fast = True
        except JsonSchemaValueException:
            fast = False
        assert fast == reference, f"validators disagree on a {g.record_type} ({g.invalid_kind})"
        checked += 1
    assert checked > 300

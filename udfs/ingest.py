"""The ingest stage: raw bytes -> decoded, schema-checked record, or a Rejected with a reason code.

Pure record logic: no Flink here. jobs/ingest.py wraps it in an operator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from fastjsonschema import JsonSchemaValueException

from schemas import RECORD_TYPES, fast_validator
from udfs.claims import claim_row
from udfs.dead_letters import Rejected
from udfs.source import SourceRef


@dataclass(frozen=True)
class Accepted:
    """A record that passed the ingest checks, with what the sinks need."""

    record_id: str
    record_type: str
    feed: str
    sent_at_ms: int
    sent_date: str
    payload: str
    claim: dict[str, Any] | None


def decode_json(payload: bytes) -> dict[str, Any]:
    """Parse one JSON object; anything else is a decode rejection."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        # The parser's message quotes the input; keep only its class of failure.
        raise Rejected("malformed_json", "payload is not valid UTF-8 JSON", "decode") from None
    if not isinstance(value, dict):
        raise Rejected("not_an_object", f"top-level JSON value is {type(value).__name__}", "decode")
    return value


def schema_errors(check: Callable[[dict[str, Any]], Any], record: dict[str, Any]) -> str | None:
    """PHI-free summary of the first schema violation (JSON path and rule, never the value), or None."""
    try:
        check(record)
    except JsonSchemaValueException as err:
        # err.message may quote the offending value; the path and the rule name never do.
        return f"{err.name} {err.rule}"
    return None


def _record_id(record: dict[str, Any]) -> str | None:
    value = record.get("record_id")
    return value if isinstance(value, str) and len(value) <= 64 else None


class IngestStage:
    """Decode and schema-check raw records of every known record type."""

    def __init__(self) -> None:
        self._validators = {record_type: fast_validator(record_type) for record_type in RECORD_TYPES}

    def process(self, payload: bytes, source: SourceRef) -> Accepted:
        """Return the accepted record or raise Rejected (the caller dead-letters it)."""
        record = decode_json(payload)
        record_type = record.get("record_type")
        if record_type not in self._validators:
            raise Rejected("unknown_record_type", "record_type is missing or not supported", "schema")
        problems = schema_errors(self._validators[record_type], record)
        if problems:
            raise Rejected("schema_violation", problems, "schema")
        if record["feed"] != source.feed:
            # A record claiming another feed than the door it came through is not trusted.
            raise Rejected("feed_mismatch", f"record names another feed than its source {source.feed}", "envelope")
        sent_at = datetime.fromisoformat(record["sent_at"])
        return Accepted(
            record_id=record["record_id"],
            record_type=record_type,
            feed=source.feed,
            sent_at_ms=int(sent_at.timestamp() * 1000),
            sent_date=sent_at.date().isoformat(),
            payload=payload.decode("utf-8"),
            claim=claim_row(record) if record_type == "claim" else None,
        )

    @staticmethod
    def record_id_of(payload: bytes) -> str | None:
        """Best-effort record id of a rejected payload, for the dead letter."""
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        return _record_id(value) if isinstance(value, dict) else None

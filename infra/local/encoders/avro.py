"""Canonical records -> Avro (object container files and single-object messages): the inverse of udfs.decoders.avro.

Records are written with the canonical schemas (schemas/avro): money strings become decimals, ISO
dates become date ints, absent optional fields become null, so decoding gives the records back exactly.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

import fastavro

from schemas.avro import parsed_schema
from udfs.decoders.avro import SINGLE_OBJECT_MAGIC, schema_fingerprint


def to_avro(record: Mapping[str, Any], record_type: str) -> dict[str, Any]:
    """The Avro datum of a canonical JSON record, following the canonical schema's types."""
    schema = parsed_schema(record_type)
    datum: dict[str, Any] = _datum(record, schema, schema["__named_schemas"])
    return datum


def encode_container(records: Iterable[Mapping[str, Any]], record_type: str, *, codec: str = "null",
                     sync_marker: bytes | None = None) -> bytes:
    """One object container file holding `records`, written with the canonical schema.

    The 16-byte sync marker is random unless given (a fixed one makes the file reproducible).
    """
    out = io.BytesIO()
    fastavro.writer(out, parsed_schema(record_type), (to_avro(r, record_type) for r in records), codec=codec,
                    sync_marker=sync_marker or os.urandom(16))
    return out.getvalue()


def encode_single_object(record: Mapping[str, Any], record_type: str) -> bytes:
    """One single-object message: C3 01, the canonical schema's CRC-64-AVRO fingerprint, the binary body."""
    schema = parsed_schema(record_type)
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MAGIC + schema_fingerprint(schema))
    fastavro.schemaless_writer(out, schema, to_avro(record, record_type))
    return out.getvalue()


def _datum(value: Any, schema: Any, named: Mapping[str, Any]) -> Any:
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):  # the canonical unions are all ["null", T]
        return None if value is None else _datum(value, schema[1], named)
    if not isinstance(schema, dict):
        return value
    kind, logical = schema["type"], schema.get("logicalType")
    if kind == "record":
        if not isinstance(value, Mapping):
            raise ValueError(f"{schema['name']} needs an object")
        return {f["name"]: _datum(value.get(f["name"]), f["type"], named) for f in schema["fields"]}
    if kind == "array":
        return [_datum(v, schema["items"], named) for v in value]
    if logical == "decimal":
        return Decimal(value)
    if logical == "date":
        return date.fromisoformat(value)
    return value

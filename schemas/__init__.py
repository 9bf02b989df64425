"""Canonical JSON Schemas (draft 2020-12) for claim, payment and eligibility records."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parent
RECORD_TYPES: tuple[str, ...] = ("claim", "payment", "eligibility")
SCHEMA_VERSION = "1.0"


def schema_path(record_type: str) -> Path:
    """Return the file holding the schema for `record_type`."""
    # A fixed allow-list rather than a path join keeps a feed-supplied name from reading other files.
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown record_type {record_type!r}; expected one of {RECORD_TYPES}")
    return SCHEMA_DIR / f"{record_type}.schema.json"


@functools.cache
def load_schema(record_type: str) -> dict[str, Any]:
    """Return the parsed schema for `record_type` (cached; treat the result as read-only)."""
    with schema_path(record_type).open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@functools.cache
def validator(record_type: str) -> Draft202012Validator:
    """Return a cached draft 2020-12 validator for `record_type` that also checks `format`."""
    # Formats are annotations by default in 2020-12; "2024-02-30" only fails with a format checker.
    return Draft202012Validator(
        load_schema(record_type), format_checker=Draft202012Validator.FORMAT_CHECKER
    )

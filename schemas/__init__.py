"""Canonical JSON Schemas (draft 2020-12) for claim, payment and eligibility records."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_DIR = Path(__file__).resolve().parent
RECORD_TYPES: tuple[str, ...] = ("claim", "payment", "eligibility")
SCHEMA_VERSION = "1.2"
# The newest canonical version of each record type this code reads. Evolution rules
# (docs/schema-evolution.md): a minor version only adds optional fields or widens a rule, so a reader
# of 1.n reads every 1.m with m <= n; anything else is a new major version, which readers refuse.
CURRENT_VERSIONS: dict[str, str] = {"claim": SCHEMA_VERSION, "payment": SCHEMA_VERSION, "eligibility": SCHEMA_VERSION}


def is_readable_version(record_type: str, version: object) -> bool:
    """True when records of `version` can be read as the current canonical `record_type` schema."""
    if not isinstance(version, str) or record_type not in CURRENT_VERSIONS:
        return False
    major, _, minor = version.partition(".")
    cur_major, _, cur_minor = CURRENT_VERSIONS[record_type].partition(".")
    if not (major.isdigit() and minor.isdigit()):
        return False
    return major == cur_major and int(minor) <= int(cur_minor)


def record_type_file(record_type: str, directory: Path, suffix: str) -> Path:
    """The file of `record_type` in `directory` (<record_type><suffix>), for known record types only."""
    # A fixed allow-list rather than a path join keeps a feed-supplied name from reading other files.
    if record_type not in RECORD_TYPES:
        raise ValueError(f"unknown record_type {record_type!r}; expected one of {RECORD_TYPES}")
    return directory / f"{record_type}{suffix}"


def schema_path(record_type: str) -> Path:
    """Return the file holding the schema for `record_type`."""
    return record_type_file(record_type, SCHEMA_DIR, ".schema.json")


@functools.cache
def load_schema(record_type: str) -> dict[str, Any]:
    """Return the parsed schema for `record_type` (cached; treat the result as read-only)."""
    with schema_path(record_type).open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@functools.cache
def leaf_paths(record_type: str) -> tuple[str, ...]:
    """Every leaf field of the canonical `record_type` schema as a path ("subscriber.address.zip", "notes[]")."""
    schema = load_schema(record_type)
    defs = schema.get("$defs", {})
    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            walk(defs[node["$ref"].rsplit("/", 1)[-1]], path)
        elif "allOf" in node:
            for part in node["allOf"]:  # a bare {"required": [...]} adds no field
                if set(part) - {"required"}:
                    walk(part, path)
        elif "properties" in node:
            for name, child in node["properties"].items():
                walk(child, f"{path}.{name}" if path else name)
        elif node.get("type") == "array":
            walk(node["items"], f"{path}[]")
        else:
            found.append(path)

    walk(schema, "")
    return tuple(found)


@functools.cache
def fast_validator(record_type: str) -> Callable[[dict[str, Any]], Any]:
    """Return the compiled validator the pipeline uses; raises JsonSchemaValueException on a violation.

    fastjsonschema compiles the schema to Python code: 26x faster than jsonschema on 4-12 KB claims
    (docs/decisions/0002-schema-validator.md). It implements draft-07, so the schema files keep to
    keywords whose meaning is the same in draft-07 and 2020-12 ($ref only alone or in allOf, no
    unevaluated*), and tests/unit/test_schemas.py checks that both validators agree.
    """
    import fastjsonschema

    # A deep copy: the compiler annotates the schema it is given, and load_schema's result is shared.
    schema = copy.deepcopy(load_schema(record_type)) | {"$schema": "http://json-schema.org/draft-07/schema#"}
    return fastjsonschema.compile(schema)  # type: ignore[no-any-return]


@functools.cache
def validator(record_type: str) -> Draft202012Validator:
    """Return a cached draft 2020-12 validator for `record_type` that also checks `format`."""
    # Formats are annotations by default in 2020-12; "2024-02-30" only fails with a format checker.
    return Draft202012Validator(
        load_schema(record_type), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def raise_first_error(checker: Draft202012Validator, document: Any, origin: str, error: type[Exception]) -> None:
    """Raise `error("<origin>: <path>: <message>")` for the first violation in path order, if there is one."""
    errors = sorted(checker.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise error(f"{origin}: {where}: {first.message}")

"""Canonical Avro schemas (medistream.canonical.v1): the JSON Schemas' records, field for field, in Avro.

Required JSON properties are plain Avro types; optional ones are ["null", T] with default null.
Money is bytes/decimal(11, 2) and dates are int/date, so a writer cannot send 1.005 dollars or
February 30th; date-times stay strings because their offset and fraction digits are part of the
canonical text. JSON Schema enums and consts stay strings: numeric X12 codes ("18", "021") are not
valid Avro enum symbols, and the JSON Schema check after decoding is the one place values are policed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastavro import parse_schema

from schemas import record_type_file

AVRO_DIR = Path(__file__).resolve().parent
HISTORY_DIR = AVRO_DIR / "history"


def avsc_path(record_type: str) -> Path:
    """Return the .avsc file holding the canonical Avro schema for `record_type`."""
    return record_type_file(record_type, AVRO_DIR, ".avsc")


@functools.cache
def load_avsc(record_type: str) -> dict[str, Any]:
    """Return the schema JSON for `record_type` as written (cached; treat as read-only)."""
    with avsc_path(record_type).open("rb") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@functools.cache
def earlier_versions(record_type: str) -> tuple[dict[str, Any], ...]:
    """Earlier canonical schemas of `record_type` (history/<record_type>-<version>.avsc), oldest first.

    A producer that writes single-object messages with canonical 1.0 keeps doing so after 1.1 ships:
    the decoder keeps their fingerprints, and resolves them to the current reader.
    """
    record_type_file(record_type, HISTORY_DIR, ".avsc")  # the allow-list check of the name
    found = sorted(HISTORY_DIR.glob(f"{record_type}-*.avsc"),
                   key=lambda p: tuple(int(x) for x in p.stem.rsplit("-", 1)[1].split(".")))
    return tuple(json.loads(p.read_bytes()) for p in found)


def with_decimals(schema: Any, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """A copy of a schema's JSON with each decimal type node (bytes or fixed, logicalType decimal) replaced by
    `change(node)`; the schema itself is left as it is."""
    if isinstance(schema, list):
        return [with_decimals(s, change) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") == "decimal" and schema.get("type") in ("bytes", "fixed"):
        return change(dict(schema))
    return {k: with_decimals(v, change) for k, v in schema.items()}


@functools.cache
def parsed_schema(record_type: str) -> dict[str, Any]:
    """Return the fastavro-parsed canonical schema for `record_type` (cached; treat as read-only)."""
    parsed: dict[str, Any] = parse_schema(load_avsc(record_type))  # type: ignore[assignment]
    return parsed


def schema_problem(writer: Any, reader: Any) -> str | None:
    """Why data written with `writer` cannot be read as `reader` (PHI-free), or None; both fastavro-parsed.

    Stricter than fastavro, which checks lazily while reading: every branch of a writer union must
    resolve (not only the ones the data happens to use), logical types must match (bytes/decimal,
    int/date), bytes are not read as text, and arrays of zero-size items are refused outright.
    """
    return _Resolver(writer, reader).problem(writer, reader, "")


class _Resolver:
    """Avro schema resolution (spec section "Schema Resolution"), checked ahead of any data."""

    def __init__(self, writer: Any, reader: Any) -> None:
        self.writer_named: dict[str, Any] = writer.get("__named_schemas", {}) if isinstance(writer, dict) else {}
        self.reader_named: dict[str, Any] = reader.get("__named_schemas", {}) if isinstance(reader, dict) else {}
        # Record pairs checked, with their answer. A pair still being checked counts as resolvable, so a
        # recursive schema ends; if it is not, the outer check of that pair reports why.
        self.checked: dict[tuple[int, int], str | None] = {}

    def problem(self, w: Any, r: Any, path: str) -> str | None:
        w, r = _named(w, self.writer_named), _named(r, self.reader_named)
        where = path or "the record"
        if isinstance(w, list):
            for branch in w:
                found = self.problem(branch, r, path)
                if found:
                    return found
            return None
        if isinstance(r, list):
            # The canonical unions are ["null", T], so the first match is the branch fastavro picks too.
            if any(self.problem(w, branch, path) is None for branch in r):
                return None
            return f"{where}: writer type {_kind(w)} matches no branch of the reader's union"
        wk, rk = _kind(w), _kind(r)
        if rk == "record":
            return self._record(w, r, path) if wk == "record" else f"{where}: writer {wk} is not a record"
        if rk == "array":
            if wk != "array":
                return f"{where}: writer {wk} is not an array"
            if _zero_size(w["items"], self.writer_named):
                return f"{where}: the writer's array items take no bytes, so a block count is unbounded work"
            return self.problem(w["items"], r["items"], f"{path}[]")
        if rk == "map":
            return self.problem(w["values"], r["values"], f"{path}{{}}") if wk == "map" else f"{where}: not a map"
        if rk == "enum":
            if wk != "enum" or not (set(w["symbols"]) <= set(r["symbols"]) or "default" in r):
                return f"{where}: writer {wk} has symbols the reader's enum lacks"
            return None
        if wk in _PROMOTIONS.get(rk, (rk,)) and (rk != "fixed" or w.get("size") == r.get("size")):
            return None
        return f"{where}: writer type {wk} cannot be read as {rk}"

    def _record(self, w: dict[str, Any], r: dict[str, Any], path: str) -> str | None:
        where = path or "the record"
        w_name, r_name = w["name"].rsplit(".", 1)[-1], r["name"].rsplit(".", 1)[-1]
        if w_name != r_name and w["name"] not in r.get("aliases", ()) and w_name not in r.get("aliases", ()):
            # Only reader names in the text: the writer schema comes with the partner's file (input).
            return f"{where}: the writer's record is not named {r_name} (nor one of its aliases)"
        key = (id(w), id(r))
        if key not in self.checked:
            self.checked[key] = None
            self.checked[key] = self._fields(w, r, path)
        return self.checked[key]

    def _fields(self, w: dict[str, Any], r: dict[str, Any], path: str) -> str | None:
        where = path or "the record"
        fields = {f["name"]: f for f in w["fields"]}
        for field in w["fields"]:
            if field["name"] not in {f["name"] for f in r["fields"]} and self._hazard(field["type"]):
                return f"{where}: a writer field the reader lacks holds array items of no bytes (unbounded work)"
        for field in r["fields"]:
            name = field["name"]
            match = fields.get(name) or next((fields[a] for a in field.get("aliases", ()) if a in fields), None)
            if match is None:
                if "default" not in field:
                    return f"{path}.{name}".lstrip(".") + ": the writer lacks it and the reader has no default"
                continue
            found = self.problem(match["type"], field["type"], f"{path}.{name}".lstrip("."))
            if found:
                return found
        return None

    def _hazard(self, schema: Any, stack: frozenset[str] = frozenset()) -> bool:
        """True if a skipped writer type holds an array of zero-size items anywhere inside."""
        schema = _named(schema, self.writer_named)
        if isinstance(schema, list):
            return any(self._hazard(b, stack) for b in schema)
        kind = _kind(schema)
        if kind == "array":
            return _zero_size(schema["items"], self.writer_named) or self._hazard(schema["items"], stack)
        if kind == "map":
            return self._hazard(schema["values"], stack)
        if kind == "record" and schema["name"] not in stack:
            return any(self._hazard(f["type"], stack | {schema["name"]}) for f in schema["fields"])
        return False


# Reader type -> writer types it reads (Avro's promotions; bytes are not read as text, whose UTF-8
# check would then fail halfway through a file).
_PROMOTIONS: dict[str, tuple[str, ...]] = {
    "long": ("int", "long"),
    "float": ("int", "long", "float"),
    "double": ("int", "long", "float", "double"),
    "bytes": ("bytes", "string"),
    "bytes/decimal": ("bytes/decimal", "fixed/decimal"),
}


def _named(schema: Any, named: dict[str, Any]) -> Any:
    return named.get(schema, schema) if isinstance(schema, str) else schema


def _kind(schema: Any) -> str:
    """Type name with its logical type, if any: "string", "record", "bytes/decimal", "int/date"."""
    while isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        schema = schema["type"]
    if isinstance(schema, list):
        return "union"
    if not isinstance(schema, dict):
        return str(schema)
    logical = schema.get("logicalType")
    return f"{schema['type']}/{logical}" if logical else str(schema["type"])


def _zero_size(schema: Any, named: dict[str, Any], stack: frozenset[str] = frozenset()) -> bool:
    """True if every value of the type encodes to no bytes at all (null, fixed(0), records of those)."""
    schema = _named(schema, named)
    kind = _kind(schema)
    if kind == "null":
        return True
    if kind.startswith("fixed"):
        return bool(schema.get("size") == 0)
    if kind == "record":
        # A record inside itself must hold a union or array on the way, and those take bytes.
        return schema["name"] not in stack and all(
            _zero_size(f["type"], named, stack | {schema["name"]}) for f in schema["fields"])
    return False

"""Canonical records -> a CSV unit laid out by a feed mapping: the inverse of udfs.decoders.csv + udfs.mapping.

In plain mode (no date_format, no phone_style) decoding the bytes with the mapping's columns and
mapping each row gives the records back exactly, except that empty lists and objects come back absent
(CSV cannot tell them apart). date_format and phone_style make a feed messy on purpose, the way
partners send it, for the standardization stage to clean up:
- date_format: a strftime format for every ISO date value ("%m/%d/%Y" gives 06/02/2025), the same
  form the standardizer's `date_formats` contract option takes;
- phone_style: "national" "(206) 555-0123", "dashes" "206-555-0123", "digits" "2065550123" or
  "international" "+1 206-555-0123", for every +1 phone.
A record value the mapping has no column for raises ValueError rather than vanishing from the feed.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from udfs.mapping import compile_mapping, parse_path, source_columns

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NANP_PHONE = re.compile(r"\+1([0-9]{3})([0-9]{3})([0-9]{4})")
PHONE_STYLES = {
    "national": "({0}) {1}-{2}",
    "dashes": "{0}-{1}-{2}",
    "digits": "{0}{1}{2}",
    "international": "+1 {0}-{1}-{2}",
}


def encode_csv(
    records: Sequence[Mapping[str, Any]],
    mapping: Mapping[str, Any],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    header: bool = True,
    bom: bool = False,
    date_format: str | None = None,
    phone_style: str | None = None,
) -> bytes:
    """Encode canonical records as CSV with one column per source field of `mapping` (mapping order)."""
    if phone_style is not None and phone_style not in PHONE_STYLES:
        raise ValueError(f"phone_style must be one of {sorted(PHONE_STYLES)}")
    if bom and codecs.lookup(encoding).name != "utf-8":
        raise ValueError("a byte-order mark is only written for utf-8")
    compiled = compile_mapping(mapping)
    columns = source_columns(compiled)
    out = io.StringIO()
    # RFC 4180 line ends; minimal quoting, so a cell holding the delimiter or a quote is quoted.
    writer = csv.writer(out, delimiter=delimiter, quotechar='"', lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        writer.writerow(columns)
    for n, record in enumerate(records, 1):
        cells = _cells(record, mapping, n, date_format, phone_style)
        writer.writerow([cells.get(c, "") for c in columns])
    data = out.getvalue().encode(encoding)
    return codecs.BOM_UTF8 + data if bom else data


def _cells(record: Mapping[str, Any], mapping: Mapping[str, Any], n: int, date_format: str | None,
           phone_style: str | None) -> dict[str, str]:
    cells: dict[str, str] = {}
    covered: set[str] = set()
    for path, spec in mapping.items():
        value = value_at(record, parse_path(path))
        if isinstance(spec, Mapping) and "const" in spec:
            if value is not None and value != spec["const"]:
                raise ValueError(f"record {n}: {path} differs from the mapping's constant")
            covered.add(path)
            continue
        field, split = (spec, None) if isinstance(spec, str) else (spec["field"], spec.get("split"))
        covered.add(path)
        if value is None:
            cell = ""
        elif split is not None:
            items = [_text(v, path, date_format, phone_style) for v in value]
            if any(split in item for item in items):
                raise ValueError(f"record {n}: an item of {path} holds its separator {split!r}")
            cell = split.join(items)
        else:
            cell = _text(value, path, date_format, phone_style)
        if cells.setdefault(field, cell) != cell:
            raise ValueError(f"record {n}: column {field!r} is mapped twice with different values")
    lost = _uncovered(record, "", covered)
    if lost:
        raise ValueError(f"record {n}: {lost} has no column in the mapping")
    return cells


def value_at(record: Any, steps: tuple[str | int, ...]) -> Any:
    """The value at a parsed mapping path, or None where the record has none."""
    node = record
    for step in steps:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and step < len(node) else None
        else:
            node = node.get(step) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


def _uncovered(value: Any, path: str, covered: set[str]) -> str | None:
    """The first path holding data that no mapping entry writes out, or None."""
    if path in covered:
        return None
    if isinstance(value, Mapping):
        children: Iterator[tuple[str, Any]] = ((f"{path}.{k}" if path else k, v) for k, v in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return path
    return next((p for child, v in children if (p := _uncovered(v, child, covered))), None)


def _text(value: Any, path: str, date_format: str | None, phone_style: str | None) -> str:
    if not isinstance(value, str):
        return str(value)
    if date_format and _ISO_DATE.fullmatch(value):
        return date.fromisoformat(value).strftime(date_format)
    if phone_style and path.rsplit(".", 1)[-1] == "phone" and (m := _NANP_PHONE.fullmatch(value)):
        return PHONE_STYLES[phone_style].format(*m.groups())
    return value

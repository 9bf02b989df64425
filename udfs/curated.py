"""The curated messages' values: what every delivery job reads from a curated topic (decision 0046).

The ingest operator builds each value once, as UTF-8 JSON bytes (udfs.rows.accepted_values), and the curated Kafka
sinks write those bytes as they are (`value.format` raw): before, Flink's JSON format rebuilt the JSON per topic
in the JVM, and Jackson's escaping of the payload inside it was ~23 % of the sinks' task at 12 KB.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# The curated message value (JSON, as Flink's JSON format writes it): what every delivery job reads. The payload is
# the protected record.
CURATED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("record_id", "STRING"), ("record_type", "STRING"), ("feed", "STRING"), ("business_key", "STRING"),
    ("original_key", "STRING"), ("sent_at_ms", "BIGINT"), ("ingested_at_ms", "BIGINT"), ("source", "STRING"),
    ("dt", "STRING"), ("payload", "STRING"),
)
# Partner topics also carry the record's sealed copy (KMS envelope, context {feed, record_id, archive}):
# the delivery job opens it only for the fields the access rules grant that partner. It comes last, so a partner's
# value is the curated value with the sealed copy appended (partner_value_sql).
PARTNER_CURATED_COLUMNS: tuple[tuple[str, str], ...] = (*CURATED_COLUMNS, ("sealed", "STRING"))


# Where orjson and Flink's Jackson differ (tests/flink/test_curated_json.py holds them side by side): Jackson writes
# the \u escape of a control character in upper-case hex (orjson: lower case), and a character outside the BMP as
# its UTF-16 surrogate pair of \u escapes (orjson: its 4 UTF-8 bytes). The other escapes (\" \\ \b \t \n \f \r)
# are the same. An escaped backslash is matched first, so the text "\\u00ab" is left alone.
_CONTROL = re.compile(rb"\\\\|\\u00[0-9a-f]{2}")
_ASTRAL = re.compile(rb"[\xf0-\xf4][\x80-\xbf]{3}")
_ASTRAL_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")  # a 4-byte UTF-8 sequence's first byte


def _surrogates(match: re.Match[bytes]) -> bytes:
    code = ord(match[0].decode()) - 0x10000
    return b"\\u%X\\u%X" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def curated_value(fields: dict[str, Any], columns: tuple[tuple[str, str], ...]) -> bytes:
    """A curated message's value: `columns` of `fields` as one JSON object, byte for byte what Flink's JSON format
    writes for that row (field order, no spaces, null for a missing value, UTF-8 unescaped; a test holds the two
    side by side). Built in Python once per record, so the sinks write bytes: Jackson's escaping of the payload inside
    the JSON was ~23 % of the sinks' task (decision 0046)."""
    value = orjson.dumps({name: fields.get(name) for name, _kind in columns})
    if b"\\u00" in value:
        value = _CONTROL.sub(lambda m: m[0][:2] + m[0][2:].upper(), value)
    if not value.isascii() and any(lead in value for lead in _ASTRAL_LEADS):
        value = _ASTRAL.sub(_surrogates, value)
    return value


def partner_value_in_sql(sealed: str | None) -> bool:
    """Can the partner sinks' SQL (partner_value_sql) write this sealed text as Flink's JSON format would?

    Yes for printable ASCII, where the format escapes only the quote and the backslash, as the SQL does. The sealed
    copy is orjson's output over ASCII names and base64 (udfs.phi.envelope.seal), so this holds for every record the
    stage makes; for any other text the ingest operator builds the partner's value itself (decision 0050).
    """
    return sealed is None or (sealed.isascii() and sealed.isprintable())


def partner_value_sql(curated: str, sealed: str, built: str) -> str:
    """Flink SQL for a partner topic's value (bytes): `built` where the ingest operator built it, else the curated
    value (`curated`, CURATED_COLUMNS) with the sealed copy appended as its last field, byte for byte what
    curated_value writes for PARTNER_CURATED_COLUMNS when partner_value_in_sql(sealed) holds (a test holds the two
    side by side). The sealed copy, more than half of a partner's value, then crosses from Python once, not twice
    (decision 0050). In Flink SQL a backslash inside a literal is just a backslash."""
    head = f"CAST({curated} AS STRING)"
    text = rf"""COALESCE(CONCAT('"', REPLACE(REPLACE({sealed}, '\', '\\'), '"', '\"'), '"'), 'null')"""
    appended = rf"""CONCAT(SUBSTR({head}, 1, CHAR_LENGTH({head}) - 1), ',"sealed":', {text}, '}}')"""
    return f"COALESCE({built}, CAST({appended} AS BYTES))"

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
# the delivery job opens it only for the fields the access rules grant that partner.
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

"""Curated-topic messages (the ingest job's contract) turned into rows of the Snowflake table.

The value of a message on `curated.snowflake` is a UTF-8 JSON object with the fields in
`RECORD_FIELDS`; its `payload` is the PHI-protected record as a JSON string and is carried through
untouched. Kafka's partition and offset go along with every row, so each row says exactly which
message it came from (and the exactly-once check is a GROUP BY away).
"""

from __future__ import annotations

import re

import orjson

from connectors.snowflake.channel import Fatal
from udfs.curated import CURATED_COLUMNS

RECORD_TYPES = frozenset({"claim", "payment", "eligibility"})
_DT = re.compile(r"\d{4}-\d{2}-\d{2}")

# The fields (and their SQL types) come from the producer's definition, so the two cannot drift;
# only which of them may be null is the loader's to say.
_PY_TYPES = {"STRING": str, "BIGINT": int}
_NULLABLE = frozenset({"original_key", "sent_at_ms"})
# field -> (column, required type, nullable)
RECORD_FIELDS: dict[str, tuple[str, type, bool]] = {
    name: (name.upper(), _PY_TYPES[sql_type], name in _NULLABLE) for name, sql_type in CURATED_COLUMNS
}
LOAD_COLUMNS = ("KAFKA_PARTITION", "KAFKA_OFFSET", "LOADED_AT_MS")
COLUMNS: tuple[str, ...] = tuple(column for column, _, _ in RECORD_FIELDS.values()) + LOAD_COLUMNS
NULLABLE_COLUMNS = frozenset(column for column, _, nullable in RECORD_FIELDS.values() if nullable)


class MalformedRecord(Fatal):
    """A curated message breaks the contract: a bug in the producer, so the load stops at that offset.

    The message names the partition, offset and field, never a value (values can hold PHI).
    """


def record_row(value: bytes | None, partition: int, offset: int, loaded_at_ms: int) -> dict[str, object]:
    """The table row for one curated message; raises MalformedRecord naming the bad field."""
    where = f"curated message at partition {partition} offset {offset}"
    if value is None:
        raise MalformedRecord(f"{where} has no value")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise MalformedRecord(f"{where} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise MalformedRecord(f"{where} is not a JSON object")
    row: dict[str, object] = {}
    for field, (column, kind, nullable) in RECORD_FIELDS.items():
        item = doc.get(field)
        if item is None:
            if not nullable:
                raise MalformedRecord(f"{where}: field '{field}' is missing or null")
        # bool is an int in Python; a true/false timestamp is still a contract breach.
        elif not isinstance(item, kind) or isinstance(item, bool):
            raise MalformedRecord(f"{where}: field '{field}' must be {kind.__name__}")
        row[column] = item
    if row["RECORD_TYPE"] not in RECORD_TYPES:
        raise MalformedRecord(f"{where}: field 'record_type' is not one of {sorted(RECORD_TYPES)}")
    if not _DT.fullmatch(str(row["DT"])):
        raise MalformedRecord(f"{where}: field 'dt' is not YYYY-MM-DD")
    row["KAFKA_PARTITION"], row["KAFKA_OFFSET"], row["LOADED_AT_MS"] = partition, offset, loaded_at_ms
    return row

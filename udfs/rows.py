"""The ingest operator's output rows as plain values: field order and contents, Flink-free.

jobs/ingest_operator.py builds its Flink row types from these names; the job's SQL selects them by
name; the local stack's curated-topic producer builds the same rows without a JVM.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.routes import is_partner_sink
from udfs.curated import CURATED_COLUMNS, PARTNER_CURATED_COLUMNS, curated_value
from udfs.dead_letters import DeadLetter
from udfs.ingest import Accepted
from udfs.projections import INT_COLUMNS, TABLE_COLUMNS
from udfs.reasons import reason
from udfs.routing import routes_column

ACCEPTED_FIELDS = [
    "record_id", "record_type", "feed", "position", "source", "sent_at_ms", "dt", "ingested_at_ms",
    "dedup_key", "business_key", "original_key", "routes", "enrichment", "payer_name", "payer_line_of_business",
    "billing_provider_taxonomy", "enrichment_misses", "payload", "sealed",
    # The curated messages' values, built here once (decision 0046): for the `snowflake` route (CURATED_COLUMNS) and
    # for every `partner:<id>` route (PARTNER_CURATED_COLUMNS); null where the record does not go.
    "curated", "partner_curated",
    # Every record type's table columns ride along (null for the other types) so one dedup serves every sink.
    *TABLE_COLUMNS,
]
# The accepted fields that are not strings: epoch milliseconds (BIGINT), counts (INT), a claim's lines, an array
# of texts per line (ARRAY<ARRAY<STRING>>; udfs/projections.py CLAIM_LINE_FIELDS), and UTF-8 text (BYTES): the
# curated values, and the archive's large texts, which cross into the JVM and its shuffle as bytes, not as Java
# strings built and encoded again character by character; the archive's SQL casts them back (decision 0058).
LONG_FIELDS = frozenset({"sent_at_ms", "ingested_at_ms", "event_time_ms"})
INT_FIELDS = INT_COLUMNS
TEXT_ARRAYS_FIELDS = frozenset({"service_lines"})
BYTES_FIELDS = frozenset({"curated", "partner_curated", "enrichment", "payload", "sealed"})
DEAD_LETTER_FIELDS = ["dead_letter_id", "body", "feed", "stage", "reason", "category", "source", "dead_at_ms", "dt"]


def accepted_values(accepted: Accepted, pointer: str, now_ms: int) -> tuple[Any, ...]:
    """The main-output row of an accepted record, in ACCEPTED_FIELDS order."""
    values = accepted.enrichment["values"]
    fields = {
        "record_id": accepted.record_id, "record_type": accepted.record_type, "feed": accepted.feed,
        "position": accepted.position, "source": pointer, "sent_at_ms": accepted.sent_at_ms,
        "dt": accepted.sent_date, "ingested_at_ms": now_ms, "dedup_key": accepted.keys.dedup_key,
        "business_key": accepted.keys.business_key, "original_key": accepted.keys.original_key,
        "routes": routes_column(accepted.routes),
        "enrichment": orjson.dumps(accepted.enrichment),
        "payer_name": values.get("payer", {}).get("name"),
        "payer_line_of_business": values.get("payer", {}).get("line_of_business"),
        "billing_provider_taxonomy": values.get("billing_provider", {}).get("taxonomy"),
        "enrichment_misses": ",".join(accepted.enrichment["misses"]) or None,
        "payload": accepted.payload,
        "sealed": accepted.sealed,
    }
    if "snowflake" in accepted.routes:
        fields["curated"] = curated_value(fields, CURATED_COLUMNS)
    if any(is_partner_sink(route) for route in accepted.routes):
        fields["partner_curated"] = curated_value(fields, PARTNER_CURATED_COLUMNS)
    fields["payload"], fields["sealed"] = accepted.payload.encode(), accepted.sealed.encode()
    return tuple(fields[f] if f in fields else _column(accepted.columns, f) for f in ACCEPTED_FIELDS)


def accepted_texts(values: tuple[Any, ...]) -> dict[str, Any]:
    """An accepted row (accepted_values) by field name, its UTF-8 fields as text, as the sinks' SQL casts them."""
    return {f: v.decode() if f in BYTES_FIELDS and v is not None else v
            for f, v in zip(ACCEPTED_FIELDS, values, strict=True)}


def _column(columns: dict[str, Any], name: str) -> Any:
    # PyFlink's thread-mode array converter cannot write a null array (it calls tuple(None)): a row of another
    # record type carries no lines as an empty array. Only claim rows are unnested (connectors/sinks.py).
    value = columns.get(name)
    return [] if value is None and name in TEXT_ARRAYS_FIELDS else value


def dead_letter_values(letter: DeadLetter, pointer: str) -> tuple[Any, ...]:
    """The side-output row of a dead letter: its wire form plus the PHI-free columns its sinks partition by."""
    day = datetime.fromtimestamp(letter.failed_at_ms / 1000, UTC).date().isoformat()
    return (letter.dead_letter_id, letter.to_json(), letter.feed, letter.stage, letter.reason_code,
            reason(letter.reason_code).category, pointer, letter.failed_at_ms, day)

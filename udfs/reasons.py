"""The dead-letter reason-code taxonomy: every code a stage may raise, its category and meaning.

Codes are stable, machine-readable and PHI-free; dashboards and alerts key on them. Each module
that rejects records defines its codes here-by-call (`define(...)` at import time), so the registry
is complete once the stages are imported, and `Rejected` refuses a code nobody defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Category = Literal["decode", "envelope", "schema", "validation", "enrichment", "protection", "routing", "internal"]
CATEGORIES: tuple[Category, ...] = ("decode", "envelope", "schema", "validation", "enrichment", "protection", "routing",
                                    "internal")


@dataclass(frozen=True)
class Reason:
    """One reason code: its category (the taxonomy's first level) and a one-line meaning."""

    code: str
    category: Category
    summary: str
    alert: bool = False  # True: a spike means a feed or contract is broken, page someone


REASONS: dict[str, Reason] = {}


def define(code: str, category: Category, summary: str, *, alert: bool = False) -> str:
    """Register a reason code (idempotent for the same definition) and return it."""
    reason = Reason(code, category, summary, alert)
    known = REASONS.setdefault(code, reason)
    if known != reason:
        raise ValueError(f"reason code {code!r} is defined twice with different meanings")
    return code


def reason(code: str) -> Reason:
    """Look up a defined reason code."""
    try:
        return REASONS[code]
    except KeyError:
        raise ValueError(f"undefined reason code {code!r}; define it in udfs.reasons") from None


# Codes raised by the generic stages (udfs/ingest.py and the job's glue).
UNKNOWN_FEED = define("unknown_feed", "envelope", "the record arrived on a feed with no contract")
FEED_MISMATCH = define("feed_mismatch", "envelope", "the record names another feed than the door it came through")
UNIT_TOO_LARGE = define("unit_too_large", "decode", "a message or file is larger than the feed's size limit")
MALFORMED_JSON = define("malformed_json", "decode", "the payload is not valid UTF-8 JSON")
NOT_AN_OBJECT = define("not_an_object", "decode", "the top-level JSON value is not an object")
UNKNOWN_RECORD_TYPE = define("unknown_record_type", "schema", "record_type is missing or not supported")
SCHEMA_VIOLATION = define("schema_violation", "schema", "the record breaks its canonical JSON Schema")
SCHEMA_VERSION_UNSUPPORTED = define(
    "schema_version_unsupported", "schema",
    "the record declares a schema version this pipeline cannot read (a breaking change)", alert=True,
)
MAPPING_FAILED = define("mapping_failed", "schema", "a mapped source field is missing or has the wrong shape")
INTERNAL_ERROR = define("internal_error", "internal", "an unexpected error in a stage; the record is kept", alert=True)

"""Dedup keys: which records are the same business fact, and which are exact re-sends of it.

The business key names the fact (claims: payer + claim control number + frequency code; payments:
payer + trace number; eligibility: member + plan + coverage dates). The content hash covers the
canonical record minus its envelope (record id, send time, feed, schema version), so a feed that
re-sends a record under a new id or in a new file is still recognised. The job keeps the first
record per (business key, content hash) for the TTL and drops the rest; a record with the same
business key but other content passes as a new version. Corrections and voids (frequency codes 7
and 8) have their own business key and carry `original_key` linking them to the claim they replace.

Keys are keyed digests (HMAC-SHA256 under the linkage key, 128 bits, hex; udfs.phi.tokens): member
ids and claim numbers identify people, and a plain hash of a guessable identifier can be tested by
anyone, so neither the job's state nor any output holds them, or an unkeyed hash of them. The
linkage key does not rotate with the token keys: rotating it would start a new dedup window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

# Envelope fields: where and when a record was sent, not what it says.
ENVELOPE_FIELDS = frozenset({"record_id", "sent_at", "received_at", "feed", "schema_version"})
CORRECTION_CODES = frozenset({"7", "8"})  # 837 CLM05-3: replacement, void
ORIGINAL_CODE = "1"
Digest = Callable[[str], str]  # text -> 32 hex characters (Tokenizer.linkage)


@dataclass(frozen=True)
class DedupKeys:
    """The keys the dedup stage and the sinks need for one record."""

    business_key: str  # digest of the business key
    content_hash: str  # digest of the record without its envelope
    dedup_key: str  # business_key + content_hash: equal only for exact re-sends
    original_key: str | None  # for a correction or void: business_key of the original claim


def business_key_text(record: dict[str, Any], record_type: str) -> str:
    """The business key in clear text (for tests and digests only; never stored or logged)."""
    if record_type == "claim":
        return "|".join(("claim", record["payer"]["payer_id"], record["claim_id"], record["frequency_code"]))
    if record_type == "payment":
        return "|".join(("payment", record["payer"]["payer_id"], record["trace_number"]))
    if record_type == "eligibility":
        # Plan and dates are situational in an 834 (a termination may carry neither): absent parts are
        # empty, so a member's plan-less maintenance records share one key and pass as its versions.
        coverage, plan = record["coverage"], record.get("plan") or {}
        return "|".join(("eligibility", record["member"]["member_id"], plan.get("plan_code", ""),
                         coverage.get("start_date", ""), coverage.get("end_date", "")))
    if record_type == "device_event":
        # One reading of one device at one instant (event_time is standardized to UTC): a re-send of it under a new
        # record id or Kinesis sequence number (a producer's retry) has this key and the same content.
        return "|".join(("device_event", record["device"]["device_id"], record["event_time"]))
    raise ValueError(f"no business key for record type {record_type!r}")


def business_key(record: dict[str, Any], record_type: str, digest: Digest) -> str:
    """Digest of the record's business key."""
    return digest(business_key_text(record, record_type))


def content_hash(record: dict[str, Any], digest: Digest) -> str:
    """Digest of the record's content without its envelope, independent of key order."""
    body = {k: v for k, v in record.items() if k not in ENVELOPE_FIELDS}
    return digest(orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode())


def dedup_keys(record: dict[str, Any], record_type: str, digest: Digest) -> DedupKeys:
    """Keys of a schema-valid canonical record."""
    business = business_key(record, record_type, digest)
    content = content_hash(record, digest)
    original = None
    if record_type == "claim" and record["frequency_code"] in CORRECTION_CODES:
        original = digest("|".join(("claim", record["payer"]["payer_id"], record["claim_id"], ORIGINAL_CODE)))
    return DedupKeys(business, content, f"{business}{content}", original)

"""Idempotency for the ingestion API: one DynamoDB item per (feed, Idempotency-Key), claimed by a conditional write.

A request's key is claimed PENDING with the body's digest and a receipt id before anything is produced,
and marked DONE once Kafka acknowledged every message. A retry with the same key and body gets the same
receipt and produces nothing; the same key with another body is refused. A PENDING claim older than
`stale_s` (the server died between claim and DONE) may be taken over: its messages are produced again,
which the job's dedup drops as exact re-sends, so the record is still ingested once.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.dynamodb import ensure_table

DEFAULT_TABLE = "medistream-ingest-idempotency"
PENDING, DONE = "PENDING", "DONE"


class ReceiptsError(Exception):
    """The idempotency table is missing or misconfigured."""


class Claim(enum.Enum):
    """The answer to a claim."""

    NEW = "new"  # produce, then mark done
    REPLAY = "replay"  # answer with the stored receipt, produce nothing
    CONFLICT = "conflict"  # same key, another body
    IN_PROGRESS = "in_progress"  # a live request holds the key


@dataclass(frozen=True)
class ClaimResult:
    """The claim, the receipt id to answer with, and the record count of a finished request."""

    claim: Claim
    receipt_id: str
    records: int = 0


def ensure_receipts_table(client: Any, table: str = DEFAULT_TABLE) -> None:
    """Create the table (feed S, idempotency_key S; on demand) if missing."""
    ensure_table(client, table, ("feed", "S"), ("idempotency_key", "S"), ReceiptsError)


class Receipts:
    """The idempotency store (thread-safe: boto3 clients are)."""

    def __init__(self, client: Any, table: str = DEFAULT_TABLE, stale_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._client, self.table, self.stale_s, self._clock = client, table, stale_s, clock

    def _key(self, feed: str, key: str) -> dict[str, Any]:
        return {"feed": {"S": feed}, "idempotency_key": {"S": key}}

    def claim(self, feed: str, key: str, body_sha256: str) -> ClaimResult:
        """Claim the key for this body (see the module docstring)."""
        now = self._clock()
        receipt = f"rcpt-{uuid.uuid4().hex}"
        try:
            self._client.put_item(
                TableName=self.table,
                Item=self._key(feed, key) | {"state": {"S": PENDING}, "body_sha256": {"S": body_sha256},
                                             "receipt_id": {"S": receipt}, "claimed_at": {"N": f"{now:.3f}"}},
                ConditionExpression="attribute_not_exists(idempotency_key)")
            return ClaimResult(Claim.NEW, receipt)
        except self._client.exceptions.ConditionalCheckFailedException:
            pass
        item = self._client.get_item(TableName=self.table, Key=self._key(feed, key), ConsistentRead=True)["Item"]
        stored = item["receipt_id"]["S"]
        if item["body_sha256"]["S"] != body_sha256:
            return ClaimResult(Claim.CONFLICT, stored)
        if item["state"]["S"] == DONE:
            return ClaimResult(Claim.REPLAY, stored, int(item.get("records", {}).get("N", "0")))
        claimed_at = item["claimed_at"]["N"]
        if now - float(claimed_at) < self.stale_s:
            return ClaimResult(Claim.IN_PROGRESS, stored)
        try:  # take over a claim its server abandoned (only one taker wins)
            self._client.update_item(
                TableName=self.table, Key=self._key(feed, key), UpdateExpression="SET claimed_at = :now",
                ConditionExpression="#st = :pending AND claimed_at = :seen",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}, ":pending": {"S": PENDING},
                                           ":seen": {"N": claimed_at}})
        except self._client.exceptions.ConditionalCheckFailedException:
            return ClaimResult(Claim.IN_PROGRESS, stored)
        return ClaimResult(Claim.NEW, stored)

    def done(self, feed: str, key: str, records: int) -> None:
        """Mark the key's request finished (every message acknowledged by Kafka)."""
        self._client.update_item(
            TableName=self.table, Key=self._key(feed, key), UpdateExpression="SET #st = :done, records = :n",
            ExpressionAttributeNames={"#st": "state"},
            ExpressionAttributeValues={":done": {"S": DONE}, ":n": {"N": str(records)}})

    def release(self, feed: str, key: str) -> None:
        """Forget a claim whose messages could not be produced, so a retry starts afresh."""
        self._client.delete_item(TableName=self.table, Key=self._key(feed, key),
                                 ConditionExpression="#st = :pending", ExpressionAttributeNames={"#st": "state"},
                                 ExpressionAttributeValues={":pending": {"S": PENDING}})

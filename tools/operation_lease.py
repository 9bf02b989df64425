"""One operator run per feed at a time: a lease item in DynamoDB (`medistream-operation-locks`).

Backfills (tools/backfill.py) and batch runs (tools/batch.py) take it by operation and feed, by a
conditional write, renew it while they work and give it back at the end; a crashed run's lease expires
after `lease_s`. A second run of the same operation on the same feed is refused, naming the holder.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from tools.dlq_units import iso
from tools.job_interface import JobControlError

LOCK_TABLE = "medistream-operation-locks"
LEASE_S = 120.0


class LeaseHeld(JobControlError):
    """Another run holds the lease: one line, naming it."""


class FeedLease:
    """One run of an operation per feed at a time: a lease item, taken by a conditional write and renewed."""

    def __init__(self, client: Any, table: str, feed: str, owner: str, lease_s: float = LEASE_S,
                 operation: str = "backfill") -> None:
        self.client, self.table, self.feed, self.owner, self.lease_s = client, table, feed, owner, lease_s
        self.operation = operation

    def _key(self) -> dict[str, Any]:
        return {"operation": {"S": self.operation}, "name": {"S": self.feed}}

    def take(self) -> None:
        """Take or renew the lease; LeaseHeld naming the holder if another run has it."""
        now = int(time.time() * 1000)
        try:
            self.client.put_item(
                TableName=self.table, Item={**self._key(), "owner": {"S": self.owner},
                                            "expires_ms": {"N": str(now + int(self.lease_s * 1000))}},
                ConditionExpression="attribute_not_exists(#n) OR expires_ms < :now OR #o = :me",
                ExpressionAttributeNames={"#n": "name", "#o": "owner"},
                ExpressionAttributeValues={":now": {"N": str(now)}, ":me": {"S": self.owner}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except self.client.exceptions.ConditionalCheckFailedException as err:
            item = getattr(err, "response", {}).get("Item") or {}
            holder = item.get("owner", {}).get("S", f"another {self.operation}")
            until = int(item.get("expires_ms", {}).get("N", "0"))
            raise LeaseHeld(f"a {self.operation} of {self.feed} is running ({holder}, lease until {iso(until)}); "
                            f"one {self.operation} of a feed runs at a time") from None

    def release(self) -> None:
        """Give the lease back (only ours)."""
        try:
            self.client.delete_item(TableName=self.table, Key=self._key(), ConditionExpression="#o = :me",
                                    ExpressionAttributeNames={"#o": "owner"},
                                    ExpressionAttributeValues={":me": {"S": self.owner}})
        except self.client.exceptions.ConditionalCheckFailedException:
            pass  # expired and taken by another run: not ours to delete


def ensure_lock_table(client: Any, table: str) -> None:
    """The lease table, created if missing (on-demand, keyed by operation and name)."""
    from connectors.dynamodb import ensure_table

    ensure_table(client, table, ("operation", "S"), ("name", "S"), JobControlError)


def take_lease(dynamodb: Any, groups: Mapping[str, Mapping[str, str]], operation: str, feed: str,
               owner: str) -> FeedLease:
    """The feed's lease for `operation`, taken (table `operations.locks.table`, created if missing)."""
    table = groups.get("operations", {}).get("locks.table") or LOCK_TABLE
    ensure_lock_table(dynamodb, table)
    lease = FeedLease(dynamodb, table, feed, owner, operation=operation)
    lease.take()
    return lease

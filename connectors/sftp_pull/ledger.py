"""What the SFTP puller took, in DynamoDB: so a file is landed once, across restarts and duplicate drops.

Two kinds of item per feed (hash key `feed`, range key `item`):
- `file#<sha256>`: one per content. LANDING while its object is being written, then LANDED or
  QUARANTINED. The conditional create is the single point that decides who lands a content.
- `name#<name digest>`: the last version (size, mtime) of a remote name and what became of it, so the
  next listing skips it without downloading it again.
Crash order: the file item is written before the object and marked after it, the name item last; every
step is idempotent, so a puller killed anywhere redoes at most the step it was in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from connectors.dynamodb import ensure_table
from connectors.sftp_pull.files import RemoteFile, name_digest

LANDING, LANDED, QUARANTINED = "LANDING", "LANDED", "QUARANTINED"


class LedgerError(RuntimeError):
    """The ledger table is unusable (PHI-free)."""


@dataclass(frozen=True)
class Claim:
    """The content's item after our conditional create: `ours` if we created it, else what it already was."""

    ours: bool
    status: str
    key: str
    name: str  # the name digest that first brought this content
    version: tuple[int, int]


@dataclass(frozen=True)
class NameRecord:
    """The last version of a remote name the puller finished with, and its outcome."""

    version: tuple[int, int]
    sha256: str
    outcome: str
    reason: str


class FileLedger:
    """The puller's ledger table."""

    def __init__(self, client: Any, table: str) -> None:
        self.client, self.table = client, table

    def ensure(self) -> None:
        ensure_table(self.client, self.table, ("feed", "S"), ("item", "S"), LedgerError)

    def _items(self, feed: str, kind: str) -> Iterator[dict[str, Any]]:
        """The feed's items of one kind ("name#" or "file#"), paged."""
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "feed = :f AND begins_with(#i, :p)",
            "ExpressionAttributeNames": {"#i": "item"},
            "ExpressionAttributeValues": {":f": {"S": feed}, ":p": {"S": kind}},
        }
        while True:
            page = self.client.query(**kwargs)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def names(self, feed: str) -> dict[str, NameRecord]:
        """Every remembered name of the feed, by name digest (one query per listing)."""
        return {item["item"]["S"].removeprefix("name#"): NameRecord(
                    (int(item["size"]["N"]), int(item["mtime"]["N"])), item["sha256"]["S"],
                    item["outcome"]["S"], item.get("reason", {}).get("S", ""))
                for item in self._items(feed, "name#")}

    def claim(self, feed: str, sha256: str, status: str, key: str, remote: RemoteFile, reason: str = "") -> Claim:
        """Create the content's item in `status` unless it exists; return the item as it now stands."""
        item = {"feed": {"S": feed}, "item": {"S": f"file#{sha256}"}, "status": {"S": status},
                "key": {"S": key}, "name": {"S": name_digest(remote.name)}, "size": {"N": str(remote.size)},
                "mtime": {"N": str(remote.mtime)}, "reason": {"S": reason}, "at": {"N": str(int(time.time()))}}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(feed)")
            return Claim(True, status, key, name_digest(remote.name), remote.version)
        except self.client.exceptions.ConditionalCheckFailedException:
            pass
        got = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                   Key={"feed": {"S": feed}, "item": {"S": f"file#{sha256}"}})["Item"]
        return Claim(False, got["status"]["S"], got["key"]["S"], got["name"]["S"],
                     (int(got["size"]["N"]), int(got["mtime"]["N"])))

    def mark_landed(self, feed: str, sha256: str, key: str | None = None) -> None:
        """The content is landed (at `key`, when it moved there from quarantine)."""
        names, values = {"#s": "status"}, {":s": {"S": LANDED}}
        if key is not None:
            names["#k"], values[":k"] = "key", {"S": key}
        self.client.update_item(TableName=self.table, Key={"feed": {"S": feed}, "item": {"S": f"file#{sha256}"}},
                                UpdateExpression="SET " + ", ".join(f"{n} = :{n[1:]}" for n in names),
                                ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def remember(self, feed: str, remote: RemoteFile, sha256: str, outcome: str, reason: str = "") -> None:
        """Record the name's version and outcome; the next listing skips this version."""
        self.client.put_item(TableName=self.table, Item={
            "feed": {"S": feed}, "item": {"S": f"name#{name_digest(remote.name)}"},
            "size": {"N": str(remote.size)}, "mtime": {"N": str(remote.mtime)}, "sha256": {"S": sha256},
            "outcome": {"S": outcome}, "reason": {"S": reason}, "at": {"N": str(int(time.time()))}})

    def contents(self, feed: str) -> dict[str, str]:
        """Every content item's status by SHA-256 (tests and operators)."""
        return {item["item"]["S"].removeprefix("file#"): item["status"]["S"] for item in self._items(feed, "file#")}

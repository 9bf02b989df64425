"""Audit log: who revealed, de-tokenized, rotated or shredded what, as one hash chain on DynamoDB.

Every entry holds an `AuditEvent` plus `seq` (1, 2, 3, ...), `at` (UTC), `prev_hash` (the previous
entry's hash; 64 zeros for seq 1) and `hash` = SHA-256 over the canonical JSON of all of those.

Guarantees:
- One linear chain even with concurrent writers: an append reads the newest entry (strongly
  consistent) and writes seq+1 with a conditional PutItem (`attribute_not_exists(seq)`); a writer
  that loses the race re-reads and retries with jittered back-off, at most `max_attempts` times
  (20: four writers appending in a tight loop needed at most 8 in 600 appends), then raises
  `AuditAppendFailed`. So no seq is written twice and none is skipped.
- `verify()` detects any change to a stored entry: an edited, deleted, reordered or inserted entry,
  or an edited hash, breaks a recomputed hash, a `prev_hash` link or the seq run 1..n, and the
  result names the first seq that cannot be trusted.
- Append-only is a convention enforced by IAM, not by this code: in AWS the job and CLI roles get
  dynamodb:PutItem and dynamodb:Query on the table only (no UpdateItem, DeleteItem, BatchWriteItem).
  IAM cannot require our condition, so that role could still overwrite an entry with a bare
  PutItem: verification detects it, nothing prevents it. Against that and wider rights,
  point-in-time recovery on the table and a copy of each entry (or of each head) in the S3 Object
  Lock bucket would protect the history; neither is set up here (provisioning's job).
- What verification cannot detect on its own: removal of the newest entries (the rest is still a
  valid chain). `head()` returns (seq, hash); an operator who anchors it elsewhere (a ticket, the
  Object Lock bucket) can later pass it to `verify(anchor=...)`, which then detects truncation and
  any rewrite up to that seq.

No PHI, ever: an event names fields by JSON path ("member.ssn") and says why; it never holds a field
value, and values are never passed to this module. `AuditEvent` rejects anything that is not a path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.dynamodb import ensure_table
from connectors.properties import ConfigError

GENESIS = "0" * 64
DECISIONS = ("grant", "deny")
DEFAULT_TABLE = "medistream-audit"
DEFAULT_CHAIN = "medistream"
_TOKEN = re.compile(r"[a-z][a-z0-9_]*")
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]*(?:\[(?:\d+|\*)\])?"
_PATH = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_MAX_REASON = 300
_JITTER = random.SystemRandom()


class AuditError(Exception):
    """The audit table is missing or misconfigured (fatal: fix the deployment)."""


class AuditAppendFailed(AuditError):
    """Every append attempt lost the race for the next seq (retriable later, never silently dropped)."""


@dataclass(frozen=True)
class AuditConfig:
    """Where the audit chain lives: DynamoDB table and chain (partition key) name."""

    table: str = DEFAULT_TABLE
    chain: str = DEFAULT_CHAIN


@dataclass(frozen=True)
class AuditEvent:
    """One decision about access to protected data; names fields by path, never holds a value (no PHI)."""

    actor: str
    role: str
    purpose: str
    action: str  # "reveal", "detokenize", "key_rotate", "key_shred", ...
    decision: str  # "grant" | "deny"
    feed: str | None
    record_id: str | None
    fields: tuple[str, ...]  # JSON paths such as "member.ssn"
    reason: str  # PHI-free

    def __post_init__(self) -> None:
        for name in ("actor", "role", "purpose", "action", "decision", "reason"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"audit event: {name} must be a string")
        for name in ("actor", "role", "purpose"):
            if not getattr(self, name).strip():
                raise ValueError(f"audit event: {name} must not be empty")
        if not _TOKEN.fullmatch(self.action):
            raise ValueError(f"audit event: action {self.action!r} must be a snake_case token")
        if self.decision not in DECISIONS:
            raise ValueError(f"audit event: decision must be one of {DECISIONS}")
        for name in ("feed", "record_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"audit event: {name} must be a non-empty string or None")
        if not isinstance(self.fields, tuple):
            raise ValueError("audit event: fields must be a tuple of JSON paths")
        # A guard against a value slipping in where a path belongs; the message never echoes it.
        if not all(isinstance(p, str) and _PATH.fullmatch(p) for p in self.fields):
            raise ValueError("audit event: fields must be JSON paths like 'member.ssn', never values")
        if len(self.reason) > _MAX_REASON:
            raise ValueError(f"audit event: reason longer than {_MAX_REASON} characters")


EVENT_KEYS = tuple(f.name for f in dataclasses.fields(AuditEvent))
ENTRY_KEYS = frozenset({"seq", "at", "prev_hash", "hash", *EVENT_KEYS})


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a chain check: `entries` read, and the first seq that cannot be trusted, with why."""

    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None


# Pure chain ---------------------------------------------------------------------------------------

def format_at(at: datetime) -> str:
    """A timezone-aware time as the fixed UTC text stored in entries (microseconds, Z)."""
    if at.tzinfo is None:
        raise ValueError("audit time must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, seq: int, at: str, event: AuditEvent) -> str:
    """SHA-256 hex of the canonical JSON (sorted keys) of seq, at, prev_hash and the event's fields."""
    body = {"seq": seq, "at": at, "prev_hash": prev_hash} | {k: getattr(event, k) for k in EVENT_KEYS}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def next_entry(last: dict[str, Any] | None, event: AuditEvent, at: str) -> dict[str, Any]:
    """The entry that follows `last` (None: the first entry of a chain)."""
    seq, prev = (int(last["seq"]) + 1, str(last["hash"])) if last else (1, GENESIS)
    fields = {k: getattr(event, k) for k in EVENT_KEYS} | {"fields": list(event.fields)}
    return {"seq": seq, "at": at, "prev_hash": prev, **fields, "hash": chain_hash(prev, seq, at, event)}


def event_of(entry: dict[str, Any]) -> AuditEvent:
    """The event an entry holds; ValueError if the entry is malformed."""
    keys = set(entry)
    if keys != ENTRY_KEYS:
        missing, extra = sorted(ENTRY_KEYS - keys), sorted(keys - ENTRY_KEYS)
        raise ValueError(f"malformed entry: missing {missing}, unexpected {extra}")
    if not isinstance(entry["fields"], list | tuple):
        raise ValueError("malformed entry: fields is not a list")
    return AuditEvent(**{k: entry[k] for k in EVENT_KEYS} | {"fields": tuple(entry["fields"])})


def verify_chain(entries: Iterable[dict[str, Any]], anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Recompute every hash and check seq runs 1..n and each prev_hash links; optionally check an anchor."""
    if anchor is not None and (anchor[0] < 0 or (anchor[0] == 0 and anchor[1] != GENESIS)):
        raise ValueError(f"not a chain head: {anchor!r}")
    count, prev, problem, bad = 0, GENESIS, None, None
    anchored = anchor is None or anchor[0] == 0
    for entry in entries:
        count += 1
        if problem is not None:
            continue  # keep counting; the first problem is the one to act on
        expected, seq = count, entry.get("seq")
        if type(seq) is not int or seq != expected:
            bad, problem = expected, f"expected seq {expected}, found {seq!r}: an entry is missing or out of order"
            continue
        if entry.get("prev_hash") != prev:
            bad, problem = seq, f"prev_hash of seq {seq} does not match the hash of seq {seq - 1}"
            continue
        try:
            event = event_of(entry)
            if not isinstance(entry["at"], str):
                raise ValueError("malformed entry: at is not a string")
        except (ValueError, TypeError) as err:
            bad, problem = seq, f"seq {seq}: {err}"
            continue
        if chain_hash(prev, seq, entry["at"], event) != entry.get("hash"):
            bad, problem = seq, f"hash of seq {seq} does not match its content"
            continue
        prev = entry["hash"]
        if anchor is not None and seq == anchor[0]:
            if prev != anchor[1]:
                bad, problem = seq, f"hash of seq {seq} differs from the anchored hash"
                continue
            anchored = True
    if problem is None and anchor is not None and not anchored:
        bad = count + 1
        problem = f"chain ends at seq {count}, before the anchored seq {anchor[0]}: newest entries were removed"
    return VerifyResult(problem is None, count, bad, problem)


# DynamoDB -----------------------------------------------------------------------------------------

def _item(chain: str, entry: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    to_dynamo = TypeSerializer().serialize
    return {"chain": {"S": chain}} | {k: to_dynamo(v) for k, v in entry.items()}


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    from_dynamo = TypeDeserializer().deserialize
    entry = {k: from_dynamo(v) for k, v in item.items() if k != "chain"}
    seq = entry["seq"]  # a Decimal; a non-integer one (only by tampering) is left for verify to reject
    entry["seq"] = int(seq) if seq == seq.to_integral_value() else seq
    return entry


def ensure_audit_table(client: Any, table: str) -> None:
    """Create the audit table (chain S, seq N; on demand) if missing, and wait until it is active."""
    ensure_table(client, table, ("chain", "S"), ("seq", "N"), AuditError)


class AuditLog:
    """One audit chain in a DynamoDB table; safe to share between threads and processes."""

    def __init__(self, client: Any, table: str, chain: str = DEFAULT_CHAIN, *, max_attempts: int = 20) -> None:
        self._client, self.table, self.chain, self.max_attempts = client, table, chain, max_attempts
        self._lock = threading.Lock()
        self.conflicts = 0  # appends that lost the race for a seq and retried

    def _query(self, **extra: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._client.query(
            TableName=self.table, KeyConditionExpression="#c = :c", ExpressionAttributeNames={"#c": "chain"},
            ExpressionAttributeValues={":c": {"S": self.chain}}, ConsistentRead=True, **extra)
        return result

    def tail(self, n: int) -> list[dict[str, Any]]:
        """The newest n entries, oldest first."""
        if n < 1:
            return []
        items = self._query(ScanIndexForward=False, Limit=n)["Items"]
        return [_entry(item) for item in reversed(items)]

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry, (0, GENESIS) for an empty chain: anchor it elsewhere."""
        last = self.tail(1)
        return (last[0]["seq"], last[0]["hash"]) if last else (0, GENESIS)

    def append(self, event: AuditEvent, at: datetime | None = None) -> dict[str, Any]:
        """Add event as the next entry and return it; retries a lost race, then raises AuditAppendFailed."""
        stamp = format_at(at or datetime.now(UTC))
        for attempt in range(1, self.max_attempts + 1):
            last = self.tail(1)
            entry = next_entry(last[0] if last else None, event, stamp)
            try:
                self._client.put_item(TableName=self.table, Item=_item(self.chain, entry),
                                      ConditionExpression="attribute_not_exists(#s)",
                                      ExpressionAttributeNames={"#s": "seq"})
                return entry
            except self._client.exceptions.ConditionalCheckFailedException:
                with self._lock:
                    self.conflicts += 1
                # Another writer took this seq: back off with jitter so contenders spread out.
                time.sleep(_JITTER.uniform(0, min(0.25, 0.01 * 2**attempt)))
        raise AuditAppendFailed(f"audit chain {self.chain} in {self.table}: no free seq after "
                                f"{self.max_attempts} attempts (too many concurrent writers)")

    def entries(self, page_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Every entry in seq order, page by page (DynamoDB's 1 MB pages, or page_size items)."""
        page: dict[str, Any] = {"Limit": page_size} if page_size else {}
        while True:
            result = self._query(**page)
            yield from (_entry(item) for item in result["Items"])
            if "LastEvaluatedKey" not in result:
                return
            page["ExclusiveStartKey"] = result["LastEvaluatedKey"]

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Check the whole stored chain (and, if given, that it still holds the anchored (seq, hash))."""
        return verify_chain(self.entries(), anchor)


@dataclass(frozen=True)
class AuditSettings:
    """The audit chain and the DynamoDB endpoint (empty: AWS itself) and region."""

    audit: AuditConfig
    endpoint: str
    region: str


def load_audit_settings(groups: Mapping[str, Mapping[str, str]]) -> AuditSettings:
    """The `audit` group (all optional) with the endpoint and region falling back to the `s3` group."""
    audit, s3 = groups.get("audit", {}), groups.get("s3", {})
    region = audit.get("region") or s3.get("region")
    if not region:
        raise ConfigError("property 'audit.region' (or 's3.region') is required")
    return AuditSettings(
        AuditConfig(table=audit.get("table") or DEFAULT_TABLE, chain=audit.get("chain") or DEFAULT_CHAIN),
        endpoint=audit.get("endpoint", s3.get("endpoint", "")),
        region=region,
    )


def open_audit_log(cfg: AuditSettings) -> AuditLog:
    """An AuditLog on the configured table (credentials from the environment or the role)."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=cfg.endpoint or None, region_name=cfg.region)
    return AuditLog(client, cfg.audit.table, cfg.audit.chain)

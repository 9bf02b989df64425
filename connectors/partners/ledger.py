"""Delivery ledger: one DynamoDB item per (partner, idempotency key), moved between states by conditional writes.

States: IN_FLIGHT (attempts, lease owner, lease expiry), ACKED (the partner's status and reference,
PHI-free), DEAD (a reason code). `begin` is one conditional UpdateItem, so DynamoDB decides each race
on the item atomically: of any number of workers calling `begin` for a key with no live lease, exactly
one gets SEND; the others see BUSY, SKIP_ACKED or SKIP_DEAD from the item as it stood when their
condition failed (ReturnValuesOnConditionCheckFailure, no second read).

Guarantee (together with the partner honouring the idempotency key):
- A key that reached ACKED is never sent again by anyone: `begin` answers SKIP_ACKED.
- A crash between send and `ack` leaves the item IN_FLIGHT. When its lease expires, the next `begin`
  (a restored job replaying the curated topic, or another worker) answers SEND with attempts + 1, and
  the record is re-sent with the SAME idempotency key, which the partner collapses into one effect.
  So delivery is at-least-once on the wire and exactly-once in effect; without partner-side
  idempotency it would be at-least-once, never at-most-once.
- `lease_s` must exceed the longest send (timeout x retries within one lease) plus clock skew
  between workers: leases compare wall clocks, and a lease that runs out while its owner is still
  sending lets a second worker send concurrently (still the same key, so still once in effect).
- `ack` and `dead` are conditional on the caller still holding the lease (owner matches, state is
  IN_FLIGHT). They do not check expiry: if the lease ran out but nobody took over, the owner's send
  is still the latest and recording it is right. If another owner took over, `LeaseLost` is raised
  and the new owner records the outcome of its own (same-key) send.

Replay (`reopen`, decision 0023): the one code path that changes a DEAD item. It removes the state
(and lease, reason, status) in one conditional write, keeping the attempts and recording replay_of,
replays and replayed_at_ms, so the next `begin` answers SEND and the record is sent with the SAME
idempotency key. It never touches an ACKED item (delivered: sending again could only duplicate) nor an
IN_FLIGHT one (being sent now). Asked again by the same replay (a crash after the write), it answers
ALREADY and changes nothing.

Owner ids must be unique per worker incarnation (e.g. "<job id>/<subtask>/<attempt>/<uuid>"): an
owner that calls `begin` again while its own lease is live gets SEND at once (its retry), so a
restored task reusing a dead incarnation's id would skip the wait, and a zombie sharing it could not
be told apart.

No PHI: the ledger holds the partner id, a digest key, owner ids, numbers and reason codes only.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.dynamodb import ensure_table

DEFAULT_TABLE = "medistream-delivery-ledger"
IN_FLIGHT, ACKED, DEAD = "IN_FLIGHT", "ACKED", "DEAD"
_REF = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_REASON = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,119}")
PARTNER_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class LedgerError(Exception):
    """The ledger table is missing or misconfigured (fatal: fix the deployment)."""


class LeaseLost(LedgerError):
    """The caller no longer holds the lease (another owner took over, or the item is DEAD or gone)."""


class Verdict(enum.Enum):
    """What `begin` tells the caller to do with the record."""

    SEND = "send"  # send now with the key (first time, or re-send after a crash or a retriable error)
    SKIP_ACKED = "skip_acked"  # the partner has it: never send again
    SKIP_DEAD = "skip_dead"  # dead-lettered earlier: do not send
    BUSY = "busy"  # another owner holds a live lease: come back after `lease_expires_ms`


class Reopen(enum.Enum):
    """What `reopen` did to a dead-lettered key."""

    REOPENED = "reopened"  # was DEAD; now without state: the next `begin` answers SEND
    ALREADY = "already"  # this same replay reopened it before (and nobody began it since)
    PENDING = "pending"  # another replay reopened it; the delivery job has not begun it yet
    ACKED = "acked"  # delivered: never reopened
    IN_FLIGHT = "in_flight"  # being sent now: not dead
    MISSING = "missing"  # no item: this ledger never saw the key


@dataclass(frozen=True)
class AckResponse:
    """What the partner said, PHI-free: HTTP status and the partner's own reference (if any)."""

    status: int
    partner_ref: str | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"ack: {self.status} is not an HTTP status")
        if self.partner_ref is not None and not _REF.fullmatch(self.partner_ref):
            raise ValueError("ack: partner_ref must be 1-128 characters of [A-Za-z0-9._:/-]")


@dataclass(frozen=True)
class Decision:
    """`begin`'s answer: the verdict, the attempt number (for SEND), the lease holder and expiry as seen."""

    verdict: Verdict
    attempts: int
    lease_owner: str | None = None
    lease_expires_ms: int | None = None
    response: AckResponse | None = None  # ACKED: the partner's answer; DEAD: its status, when there was one
    reason: str | None = None
    partner_error: str | None = None  # DEAD: the partner's short error code, when it gave one


def ensure_ledger_table(client: Any, table: str = DEFAULT_TABLE) -> None:
    """Create the ledger table (partner S, idempotency_key S; on demand) if missing and wait until active."""
    ensure_table(client, table, ("partner", "S"), ("idempotency_key", "S"), LedgerError)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value and "S" in value else None


def _int(item: dict[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value and "N" in value else None


def _nonempty(**values: str) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"ledger: {name} must be a non-empty string")


class DeliveryLedger:
    """The ledger for all partners in one table; safe to share between threads (boto3 clients are)."""

    def __init__(self, client: Any, table: str = DEFAULT_TABLE, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._client, self.table, self._clock_ms = client, table, clock_ms

    def _key(self, partner: str, key: str) -> dict[str, Any]:
        return {"partner": {"S": partner}, "idempotency_key": {"S": key}}

    def _decision(self, item: dict[str, Any]) -> Decision:
        state, attempts = _str(item, "state"), _int(item, "attempts") or 0
        if state == ACKED:
            response = AckResponse(_int(item, "response_status") or 200, _str(item, "partner_ref"))
            return Decision(Verdict.SKIP_ACKED, attempts, response=response)
        if state == DEAD:
            status = _int(item, "response_status")
            return Decision(Verdict.SKIP_DEAD, attempts, reason=_str(item, "dead_reason"),
                            response=AckResponse(status) if status else None, partner_error=_str(item, "partner_error"))
        # In flight under another owner's live lease. (Were the lease expired or ours, the condition
        # could only have failed on an item changed in between; busy is right then too: ask again.)
        return Decision(Verdict.BUSY, attempts, _str(item, "lease_owner"), _int(item, "lease_expires_ms"))

    def begin(self, partner: str, key: str, owner: str, lease_s: float) -> Decision:
        """Claim the key for a send: SEND (lease taken, attempts + 1), SKIP_ACKED, SKIP_DEAD or BUSY."""
        _nonempty(partner=partner, key=key, owner=owner)
        if lease_s <= 0:
            raise ValueError("ledger: lease_s must be positive")
        now = self._clock_ms()
        expires = now + int(lease_s * 1000)
        try:
            out = self._client.update_item(
                TableName=self.table, Key=self._key(partner, key),
                UpdateExpression="SET #st = :inflight, lease_owner = :owner, lease_expires_ms = :exp, "
                                 "updated_at_ms = :now, attempts = if_not_exists(attempts, :zero) + :one, "
                                 "first_at_ms = if_not_exists(first_at_ms, :now)",
                # New, or in flight with a lease that has run out or is the caller's own.
                ConditionExpression="attribute_not_exists(#st) OR (#st = :inflight AND "
                                    "(lease_expires_ms <= :now OR lease_owner = :owner))",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={":inflight": {"S": IN_FLIGHT}, ":owner": {"S": owner},
                                           ":exp": {"N": str(expires)}, ":now": {"N": str(now)},
                                           ":zero": {"N": "0"}, ":one": {"N": "1"}},
                ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except self._client.exceptions.ConditionalCheckFailedException as err:
            item = getattr(err, "response", {}).get("Item")
            if item is None:  # not returned by this endpoint: read it (strongly consistent)
                item = self._get(partner, key) or {}
            return self._decision(item)
        attrs = out["Attributes"]
        return Decision(Verdict.SEND, _int(attrs, "attempts") or 1, owner, expires)

    def _finish(self, partner: str, key: str, owner: str, update: str, values: dict[str, Any]) -> bool:
        try:
            self._client.update_item(
                TableName=self.table, Key=self._key(partner, key), UpdateExpression=update,
                ConditionExpression="#st = :inflight AND lease_owner = :owner",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={":inflight": {"S": IN_FLIGHT}, ":owner": {"S": owner},
                                           ":now": {"N": str(self._clock_ms())}, **values},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return True
        except self._client.exceptions.ConditionalCheckFailedException as err:
            item = getattr(err, "response", {}).get("Item")
            if item is None:
                item = self._get(partner, key) or {}
            state = _str(item, "state")
            target = values[":done"]["S"]
            if state == target and (target == ACKED or _str(item, "lease_owner") == owner):
                return False  # already recorded (by us, or for ACKED by whoever sent it): nothing to do
            raise LeaseLost(f"ledger {partner}/{key}: {owner} does not hold the lease "
                            f"(state {state or 'missing'}, owner {_str(item, 'lease_owner')})") from None

    def ack(self, partner: str, key: str, owner: str, response: AckResponse) -> bool:
        """Record the partner's acknowledgement; False if already ACKED, LeaseLost if another owner holds it."""
        _nonempty(partner=partner, key=key, owner=owner)
        values = {":done": {"S": ACKED}, ":status": {"N": str(response.status)}}
        update = "SET #st = :done, response_status = :status, updated_at_ms = :now, acked_at_ms = :now"
        if response.partner_ref is not None:
            values[":ref"] = {"S": response.partner_ref}
            update += ", partner_ref = :ref"
        return self._finish(partner, key, owner, update + " REMOVE lease_expires_ms", values)

    def dead(self, partner: str, key: str, owner: str, reason: str, status: int | None = None,
             partner_error: str | None = None) -> bool:
        """Record that the key will never be sent (codes only, PHI-free); False if this owner already did."""
        _nonempty(partner=partner, key=key, owner=owner)
        if not _REASON.fullmatch(reason):
            raise ValueError("ledger: reason must be a short code like 'http_422' or 'retries_exhausted_http_503'")
        if partner_error is not None and not PARTNER_CODE.fullmatch(partner_error):
            raise ValueError("ledger: partner_error must be a short code of [A-Za-z0-9_.:-]")
        values: dict[str, Any] = {":done": {"S": DEAD}, ":reason": {"S": reason}}
        update = "SET #st = :done, dead_reason = :reason, updated_at_ms = :now"
        if status is not None:
            values[":status"] = {"N": str(AckResponse(status).status)}
            update += ", response_status = :status"
        if partner_error is not None:
            values[":perr"] = {"S": partner_error}
            update += ", partner_error = :perr"
        return self._finish(partner, key, owner, update + " REMOVE lease_expires_ms", values)

    def reopen(self, partner: str, key: str, replay_id: str) -> Reopen:
        """DEAD -> no state (next `begin` sends, same key), recording the replay; idempotent per replay_id.

        `replay_id` names one replay of one dead letter (e.g. "<dead letter id>#<attempt>"): a second
        call with it finds the item already reopened by it and answers ALREADY, changing nothing.
        """
        _nonempty(partner=partner, key=key, replay_id=replay_id)
        try:
            self._client.update_item(
                TableName=self.table, Key=self._key(partner, key),
                UpdateExpression="SET replay_of = :rid, replayed_at_ms = :now, updated_at_ms = :now, "
                                 "replays = if_not_exists(replays, :zero) + :one "
                                 "REMOVE #st, lease_owner, lease_expires_ms, dead_reason, response_status, "
                                 "partner_error",
                ConditionExpression="#st = :dead",
                ExpressionAttributeNames={"#st": "state"},
                ExpressionAttributeValues={":dead": {"S": DEAD}, ":rid": {"S": replay_id},
                                           ":now": {"N": str(self._clock_ms())}, ":zero": {"N": "0"},
                                           ":one": {"N": "1"}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return Reopen.REOPENED
        except self._client.exceptions.ConditionalCheckFailedException as err:
            item = getattr(err, "response", {}).get("Item")
            if item is None:
                item = self._get(partner, key)
        if not item:
            return Reopen.MISSING
        state = _str(item, "state")
        if state == ACKED:
            return Reopen.ACKED
        if state == IN_FLIGHT:
            return Reopen.IN_FLIGHT
        if state is None and _str(item, "replay_of") == replay_id:
            return Reopen.ALREADY
        if state is None and _str(item, "replay_of"):
            return Reopen.PENDING
        return Reopen.MISSING  # an item without state that no replay made: not a key this ledger began

    def _get(self, partner: str, key: str) -> dict[str, Any] | None:
        out = self._client.get_item(TableName=self.table, Key=self._key(partner, key), ConsistentRead=True)
        item: dict[str, Any] | None = out.get("Item")
        return item

    def get(self, partner: str, key: str) -> dict[str, Any] | None:
        """The stored item as plain values (strongly consistent read), None if the key was never begun."""
        item = self._get(partner, key)
        if item is None:
            return None
        return {name: (int(value["N"]) if "N" in value else value.get("S")) for name, value in item.items()}

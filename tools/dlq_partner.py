"""Partner delivery dead letters in `medistream dlq`: list them, and replay them through the running delivery job.

A partner dead letter (connectors/partners/sender.py, id "p" + its idempotency key's digest) names a
partner, the record (feed, record_type, record_id, business_key) and the idempotency key, but carries
no pointer to the curated message: the message is found again on `curated.partner.<partner>`. Each
dead letter is its own unit here, `partner:<partner>/<idempotency key>` (the replay ledger's key).

Replay of one dead letter, after the partner is fixed (decision 0023):
1. Found: one read_committed pass over the partner's curated topic, from its start to its end, finds
   the message with the dead letter's business key and record_id whose recomputed idempotency key is
   the dead letter's (so the replayed send is under the same key). The pass is bounded by the topic's
   retention: a message it has dropped is reported "not replayable" and nothing is changed. A message
   followed on its partition by a later record of the same business key that is not replayed with it
   is skipped as superseded: sending it now would give the partner an older version after a newer one.
2. Reopened: `DeliveryLedger.reopen` turns the DEAD item into "no state" (replay id
   "<dead letter id>#<attempt>", recorded on the item). An ACKED item (delivered) is never reopened,
   nor an IN_FLIGHT one (being sent now): both are reported as skipped.
3. Re-produced: the message (same key, value and headers, plus `medistream-replay-of: <id>`) goes to
   the same topic and partition in one Kafka transaction with its replay-ledger entry.
The running delivery job then reads it, `begin` answers SEND, and it is sent once under the same
idempotency key. Whatever else re-reads the original message (a restore, a backfill) meets the same
ledger item: whichever copy comes first sends, the other gets SKIP_ACKED. A crash between 2 and 3
leaves the item reopened but nothing produced; running the same replay again finds the item reopened
by the same replay id (ALREADY) and produces it then.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.dlq_units import (
    NOT_REPLAYABLE,
    REPLAY_HEADER,
    REPLAYED,
    SKIPPED,
    WOULD_REPLAY,
    DlqConfig,
    DlqError,
    Letter,
    Unit,
    _when,
)
from udfs.delivery import idempotency_key

PARTNER_FIELDS = ("partner", "feed", "record_type", "record_id", "business_key", "idempotency_key")


# Pure parts ---------------------------------------------------------------------------------------

def partner_pointer(letter: Letter) -> str:
    """The replay-ledger key of a partner dead letter: partner:<partner>/<idempotency key>."""
    return f"partner:{letter.get('partner')}/{letter.get('idempotency_key')}"


def partner_units(letters: Iterable[Letter]) -> list[Unit]:
    """One unit per partner dead letter (newest copy per id), in the order given."""
    units: dict[str, Unit] = {}
    for letter in letters:
        source = {k: letter.get(k) for k in PARTNER_FIELDS}
        units[partner_pointer(letter)] = Unit(partner_pointer(letter), "partner", source, (letter,))
    return list(units.values())


def problem(letter: Letter) -> str | None:
    """Why a partner dead letter cannot be replayed as it stands (a field missing or inconsistent), or None."""
    missing = [k for k in PARTNER_FIELDS if not isinstance(letter.get(k), str) or not letter.get(k)]
    if missing:
        return f"the dead letter has no {', '.join(missing)}"
    key = idempotency_key(str(letter["partner"]), str(letter["business_key"]), str(letter["record_id"]))
    if key != letter["idempotency_key"] or letter.get("dead_letter_id") != "p" + key.removeprefix("d1-"):
        return "the dead letter's idempotency key is not the one its partner, business key and record give"
    return None


def matches_partner(letter: Letter, partner: str | None, reason: str | None) -> bool:
    """True if the dead letter is for that partner ("*" or None: any) and reason (`code` or `stage.code`)."""
    if partner not in (None, "*") and letter.get("partner") != partner:
        return False
    return not reason or reason in (letter.get("reason_code"), f"{letter.get('stage')}.{letter.get('reason_code')}")


def format_partner_table(letters: Sequence[Letter]) -> list[str]:
    """One aligned line per partner dead letter: id, partner, feed, record type, reason, partner's code, attempts, time.

    No business key and no record content: codes, digests and counts only.
    """
    rows = [[str(x.get("dead_letter_id")), str(x.get("partner")), str(x.get("feed")), str(x.get("record_type")),
             str(x.get("reason_code")), str(x.get("partner_error") or x.get("status") or "-"),
             f"{x.get('attempts')} attempt(s)", _when(x.get("dead_at_ms"))] for x in letters]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(7)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[7] for r in rows]


@dataclass(frozen=True)
class Found:
    """Where a dead letter's curated message is: its Kafka coordinates, key, value and headers."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def replayed(self) -> bool:
        """Whether this copy was itself written by a replay."""
        return any(k == REPLAY_HEADER for k, _ in self.headers)


@dataclass
class Scan:
    """What one pass over a curated topic found for a set of partner units (pure bookkeeping)."""

    units: Sequence[Unit]
    found: dict[str, Found] = field(default_factory=dict)  # unit pointer -> the original (else first) copy
    later: dict[str, tuple[int, int]] = field(default_factory=dict)  # pointer -> a later record of its key
    starts: dict[int, int] = field(default_factory=dict)  # partition -> first offset still held

    def __post_init__(self) -> None:
        self._by_key: dict[str, list[Unit]] = {}
        for unit in self.units:
            self._by_key.setdefault(str(unit.source["business_key"]), []).append(unit)
        self._last: dict[tuple[str, int], tuple[int, str]] = {}  # (business key, partition) -> last offset, record

    def wants(self, key: bytes | None) -> bool:
        """Whether a message with this Kafka key can matter (the curated topics are keyed by business key)."""
        return key is None or key.decode(errors="replace") in self._by_key

    def add(self, found: Found, doc: Mapping[str, Any]) -> None:
        """Take one committed message of the topic, in partition order."""
        business_key, record_id = doc.get("business_key"), doc.get("record_id")
        if not isinstance(business_key, str) or business_key not in self._by_key or not isinstance(record_id, str):
            return
        selected = {str(u.source["record_id"]) for u in self._by_key[business_key]}
        for unit in self._by_key[business_key]:
            if record_id != unit.source["record_id"]:
                mine = self.found.get(unit.pointer)
                if mine and mine.partition == found.partition and record_id not in selected:
                    self.later.setdefault(unit.pointer, (found.partition, found.offset))
                continue
            if idempotency_key(str(unit.source["partner"]), business_key, record_id) != unit.source["idempotency_key"]:
                continue
            current = self.found.get(unit.pointer)
            if current is None or (current.replayed and not found.replayed):
                self.found[unit.pointer] = found
                self.later.pop(unit.pointer, None)

    def in_topic_order(self, units: Sequence[Unit]) -> list[Unit]:
        """Units ordered by where their message was found (so one key's versions are re-sent in order); unfound last."""
        def place(unit: Unit) -> tuple[int, int, int]:
            at = self.found.get(unit.pointer)
            return (0, at.partition, at.offset) if at else (1, 0, 0)
        return sorted(units, key=place)


# Kafka and the delivery ledger --------------------------------------------------------------------

def scan_curated(cfg: DlqConfig, topic: str, units: Sequence[Unit]) -> Scan:
    """One read_committed pass over `topic` from its start to its current end, matching the units' messages."""
    import orjson
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from connectors.kafka import client_config, watermark_offsets

    scan = Scan(units)
    consumer = Consumer(client_config(cfg.bootstrap_servers, cfg.kafka_auth, **{
        "group.id": "medistream-dlq-replay", "isolation.level": "read_committed", "enable.auto.commit": False,
        "auto.offset.reset": "earliest"}))
    try:
        meta = consumer.list_topics(topic, timeout=cfg.timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return scan
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, p), cfg.timeout_s)
            scan.starts[p] = low
            if high > low:
                ends[p] = high
        if not ends:
            return scan
        assigned = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends]
        consumer.assign(assigned)
        deadline = time.monotonic() + 30 * cfg.timeout_s
        # Positions, not message offsets: transaction markers take offsets a read_committed consumer never sees.
        while any(tp.offset < ends[tp.partition] for tp in consumer.position(assigned)):
            if time.monotonic() > deadline:
                raise DlqError(f"reading {topic} took longer than {30 * cfg.timeout_s:.0f} s; nothing was changed")
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                raise DlqError(f"reading {topic}: {message.error()}")
            if not scan.wants(message.key()):
                continue
            try:
                doc = orjson.loads(message.value() or b"null")
            except orjson.JSONDecodeError:
                continue  # not a curated record: the delivery job would fail on it too, not ours to judge here
            if isinstance(doc, dict):
                pairs: Any = message.headers() or []  # a list of (name, bytes) from a consumer
                headers = tuple((str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in pairs)
                scan.add(Found(message.partition() or 0, message.offset() or 0, message.key(),
                               message.value() or b"", headers), doc)
        return scan
    finally:
        consumer.close()


class PartnerReplay:
    """Replays partner units (one dead letter each) through the delivery ledger and the curated topic.

    `record` is the replay's transactional write (tools.dlq_replay._Replayer._record): the message and
    its replay-ledger entry in one Kafka transaction.
    """

    def __init__(self, cfg: DlqConfig, units: Sequence[Unit], record: Any, dry_run: bool) -> None:
        from connectors.kms import aws_client
        from connectors.partners.ledger import DeliveryLedger

        if cfg.phi is None:
            raise DlqError("the properties have no `phi` group: the delivery ledger's DynamoDB endpoint is unknown")
        self.cfg, self.record, self.dry_run = cfg, record, dry_run
        self.ledger = DeliveryLedger(aws_client(cfg.phi, "dynamodb"), cfg.delivery_ledger_table)
        self.scans: dict[str, Scan] = {}
        by_partner: dict[str, list[Unit]] = {}
        for unit in units:
            if problem(unit.letters[0]) is None:
                by_partner.setdefault(str(unit.source["partner"]), []).append(unit)
        for partner, members in by_partner.items():
            self.scans[partner] = scan_curated(cfg, cfg.partner_topic(partner), members)

    def ordered(self, units: Sequence[Unit]) -> list[Unit]:
        """The units with each partner's in topic order (a key's versions are re-sent in their order)."""
        rest = [u for u in units if str(u.source["partner"]) not in self.scans]
        return [u for scan in self.scans.values() for u in scan.in_topic_order(scan.units)] + rest

    def replay(self, unit: Unit, attempt: int) -> tuple[str, str]:
        """(status, note) for one partner dead letter; writes nothing on a dry run."""
        from connectors.partners.ledger import ACKED, DEAD, IN_FLIGHT, Reopen

        letter = unit.letters[0]
        why = problem(letter)
        if why:
            return NOT_REPLAYABLE, why
        partner, key = str(unit.source["partner"]), str(unit.source["idempotency_key"])
        topic, scan = self.cfg.partner_topic(partner), self.scans[partner]
        found = scan.found.get(unit.pointer)
        if found is None:
            held = ", ".join(f"{p}@{o}" for p, o in sorted(scan.starts.items())) or "no partitions"
            return NOT_REPLAYABLE, (f"its record is not on {topic} any more (dropped by the topic's retention? "
                                    f"it now starts at {held}); nothing changed")
        if unit.pointer in scan.later:
            p, o = scan.later[unit.pointer]
            return SKIPPED, (f"superseded: a later record of its business key is on {topic}/{p}@{o}; re-sending "
                             "this one would give the partner an older version after a newer one")
        if self.dry_run:
            item = self.ledger.get(partner, key) or {}
            state = item.get("state")
            if state == DEAD:
                return WOULD_REPLAY, f"from {topic}/{found.partition}@{found.offset}, delivery-ledger item DEAD"
            return (SKIPPED if state in (ACKED, IN_FLIGHT) else NOT_REPLAYABLE), \
                f"delivery-ledger item {state or 'without state'}: would not be reopened"
        replay_id = f"{letter['dead_letter_id']}#{attempt}"
        verdict = self.ledger.reopen(partner, key, replay_id)
        if verdict is Reopen.ACKED:
            return SKIPPED, "already delivered (delivery ledger ACKED): nothing to replay"
        if verdict is Reopen.IN_FLIGHT:
            return SKIPPED, "being delivered now (delivery ledger IN_FLIGHT): not dead any more"
        if verdict is Reopen.PENDING:
            return SKIPPED, "reopened by another replay already, waiting for the delivery job"
        if verdict is Reopen.MISSING:
            return NOT_REPLAYABLE, (f"no dead item for its key in the delivery ledger {self.ledger.table} "
                                    "(partners.ledger.table)")
        headers = [(k, v) for k, v in found.headers if k != REPLAY_HEADER]
        headers.append((REPLAY_HEADER, str(letter["dead_letter_id"]).encode()))
        raw = {"topic": topic, "partition": found.partition, "key": found.key, "value": found.value,
               "headers": headers}
        target = self.record(unit, attempt, raw=raw)
        again = " (reopened by this replay before)" if verdict is Reopen.ALREADY else ""
        return REPLAYED, f"-> {target}, delivery-ledger item reopened{again}, same idempotency key"

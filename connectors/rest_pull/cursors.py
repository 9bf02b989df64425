"""The puller's cursor store: one record per committed page on a compacted topic, key = feed.

A cursor record is written in the same Kafka transaction as the page's records, so a read_committed
reader of the topic sees a feed's cursor advance exactly when its page becomes visible. The latest
record per feed (by offset; the topic has one partition, so offsets order all writes) is where the
feed resumes. The value carries the partner's opaque cursor, page number, counts and the page's digest,
never a record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, client_config, watermark_offsets

CURSOR_VERSION = 1


class CursorStoreError(RuntimeError):
    """The cursor topic cannot be created or read to its end, or holds a record that is not a cursor."""


@dataclass(frozen=True)
class CursorState:
    """Where a feed stands after its last committed page (cursor None: start at the API's beginning)."""

    feed: str
    cursor: str | None = None
    page: int = 0  # pages committed so far; the last one's number
    records: int = 0  # records in the last committed page
    total: int = 0  # records committed so far
    digest: str = ""  # the last committed page's digest
    committed_at: float = 0.0  # wall clock (s)

    def after(self, cursor: str | None, records: int, digest: str, now: float) -> CursorState:
        """The state once the next page (with `records` records) is committed."""
        return CursorState(self.feed, cursor, self.page + 1, records, self.total + records, digest, now)


def encode_cursor(state: CursorState) -> tuple[bytes, bytes]:
    """(key, value) of the cursor record for `state`."""
    return state.feed.encode(), orjson.dumps({"v": CURSOR_VERSION, **asdict(state)})


def decode_cursor(key: bytes | None, value: bytes | None) -> CursorState:
    """The state a cursor record holds; CursorStoreError when it is not one (named by field, not content)."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        raise CursorStoreError("cursor record is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION:
        raise CursorStoreError("cursor record has an unknown version")
    feed = doc.get("feed")
    if not isinstance(feed, str) or key is None or key.decode(errors="replace") != feed:
        raise CursorStoreError("cursor record's key does not match its feed")
    ints = {name: doc.get(name) for name in ("page", "records", "total")}
    bad = [name for name, v in ints.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    cursor = doc.get("cursor")
    if bad or not (cursor is None or isinstance(cursor, str)) or not isinstance(doc.get("digest"), str):
        raise CursorStoreError(f"cursor record of feed {feed}: bad field {(bad or ['cursor/digest'])[0]}")
    return CursorState(feed, cursor, doc["page"], doc["records"], doc["total"], doc["digest"],
                       float(doc.get("committed_at", 0.0)))


def ensure_cursor_topic(bootstrap: str, topic: str, timeout_s: float = 30.0, auth: KafkaAuth = PLAINTEXT_AUTH) -> None:
    """Create the cursor topic (1 partition, compacted) unless it exists; refuse one that is not compacted."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]  # re-exported, undeclared

    admin = AdminClient(client_config(bootstrap, auth))
    try:
        exists = topic in admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise CursorStoreError(f"Kafka unreachable at {bootstrap}: {exc}") from None
    if not exists:
        future = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                               config={"cleanup.policy": "compact"})],
                                     operation_timeout=timeout_s)[topic]
        try:
            future.result(timeout=timeout_s)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise CursorStoreError(f"cannot create cursor topic {topic}: {exc}") from None
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
    policy = entries["cleanup.policy"].value
    if "compact" not in policy:
        raise CursorStoreError(f"cursor topic {topic} has cleanup.policy={policy}; it must be compacted "
                               "(a deleted cursor would restart its feed from the beginning)")


def read_cursors(bootstrap: str, topic: str, timeout_s: float = 60.0,
                 auth: KafkaAuth = PLAINTEXT_AUTH) -> dict[str, CursorState]:
    """Every feed's last committed cursor: the topic read with isolation.level=read_committed to its end.

    Call it after the feeds' transactional producers are initialised: that aborts any transaction a
    crashed puller left open, so the read is not held at the last stable offset until it times out.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(client_config(bootstrap, auth, **{
        "group.id": f"rest-pull-cursors-{time.time_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True, "auto.offset.reset": "earliest"}))
    states: dict[str, CursorState] = {}
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise CursorStoreError(f"cursor topic {topic} cannot be read")
        pending: set[int] = set()
        assignment = []
        for partition in meta.partitions:
            low, high = watermark_offsets(consumer, TopicPartition(topic, partition), timeout_s)
            if high > low:
                pending.add(partition)
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        if not pending:
            return states
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise CursorStoreError(f"cursor topic {topic} not read to its end within {timeout_s:.0f} s")
            msg: Any = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise CursorStoreError(f"cursor topic {topic}: {msg.error()}")
            state = decode_cursor(msg.key(), msg.value())
            states[state.feed] = state
    finally:
        consumer.close()
    return states

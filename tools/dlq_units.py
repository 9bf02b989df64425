"""Committed dead letters for `medistream dlq`: the command's settings, reading them, grouping them into units.

A *unit* is what the job reads in one go (one Kafka message, or one landed file); several dead
letters can point at one unit. tools/dlq.py is the command, tools/dlq_replay.py the re-injection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.iceberg import S3Config
from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth, client_config
from connectors.kms import PhiConfig
from connectors.partners.ledger import DEFAULT_TABLE as DELIVERY_LEDGER_TABLE
from connectors.properties import load_ingest_config

LEDGER_TOPIC = "medistream.dlq.replays"
PARTNER_DLQ_TOPIC = "medistream.dlq.partner"  # jobs/partner_delivery.py's default `partners.dlq.topic`
PARTNER_ID_PREFIX = "p"  # partner dead-letter ids are "p" + 32 hex; the ingest job's are 32 hex
REPLAY_HEADER = "medistream-replay-of"
REPLAY_FOLDER = "replay"
REPLAYED, WOULD_REPLAY, SKIPPED, NOT_REPLAYABLE = "replayed", "would replay", "skipped", "not replayable"
Letter = Mapping[str, Any]


class DlqError(Exception):
    """A failure the operator can act on; printed as one line, exit code 1."""


@dataclass(frozen=True)
class DlqConfig:
    """What the dlq command needs, from the job's own properties file."""

    bootstrap_servers: str
    dlq_topic: str
    ledger_topic: str
    landing_path: str
    s3: S3Config
    timeout_s: float = 10.0
    kafka_auth: KafkaAuth = PLAINTEXT_AUTH
    # The partner delivery job's side (tools/dlq_partner.py): its dead letters, curated topics, ledger.
    partner_dlq_topic: str = PARTNER_DLQ_TOPIC
    partner_topic_prefix: str = "curated.partner."
    delivery_ledger_table: str = DELIVERY_LEDGER_TABLE
    phi: PhiConfig | None = None  # the DynamoDB endpoint and region of the delivery ledger

    def partner_topic(self, partner: str) -> str:
        """The curated topic a partner's records arrive on."""
        return f"{self.partner_topic_prefix}{partner}"


def load_config(groups: Mapping[str, Mapping[str, str]]) -> DlqConfig:
    """The ingest job's config plus `kafka.dlq.replays.topic` and the partner delivery job's settings."""
    cfg = load_ingest_config(groups)
    ledger = groups["kafka"].get("dlq.replays.topic") or LEDGER_TOPIC
    partners = groups.get("partners", {})
    return DlqConfig(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic, ledger, cfg.landing.path, cfg.s3,
                     kafka_auth=cfg.kafka.auth,
                     partner_dlq_topic=partners.get("dlq.topic") or PARTNER_DLQ_TOPIC,
                     partner_topic_prefix=cfg.curated.partner_topic_prefix,
                     delivery_ledger_table=partners.get("ledger.table") or DELIVERY_LEDGER_TABLE,
                     phi=cfg.phi)


# Pure parts ---------------------------------------------------------------------------------------

def unit_pointer(source: Mapping[str, Any]) -> str | None:
    """The unit a dead letter points at, and its ledger key: kafka:topic/partition@offset or file:path."""
    if source.get("kind") == "kafka" and all(source.get(k) is not None for k in ("topic", "partition", "offset")):
        return f"kafka:{source['topic']}/{source['partition']}@{source['offset']}"
    if source.get("kind") == "file" and source.get("path"):
        return f"file:{source['path']}"
    return None


@dataclass(frozen=True)
class Unit:
    """One source unit and the dead letters that point into it."""

    pointer: str
    kind: str  # "kafka", "file", or "unknown" for a dead letter without a complete pointer
    source: Mapping[str, Any]  # the unit's part of the pointer (no position)
    letters: tuple[Letter, ...]

    @property
    def dead_letter_ids(self) -> list[str]:
        """Ids of the dead letters of this unit, sorted."""
        return sorted(str(letter["dead_letter_id"]) for letter in self.letters)

    @property
    def whole_unit_digests(self) -> set[str]:
        """SHA-256 of the unit as seen by the dead letters that are for the whole unit (no position)."""
        return {str(x["payload_sha256"]) for x in self.letters if not (x.get("source") or {}).get("position")}

    @property
    def digest(self) -> str:
        """A short, stable name for the unit (replay folder names)."""
        return hashlib.sha256(self.pointer.encode()).hexdigest()[:32]


def group_by_unit(letters: Iterable[Letter]) -> list[Unit]:
    """Dead letters grouped by the unit they point at, in order of each unit's first dead letter."""
    groups: dict[str, list[Letter]] = {}
    for letter in letters:
        source = letter.get("source") or {}
        groups.setdefault(unit_pointer(source) or f"unknown:{letter['dead_letter_id']}", []).append(letter)
    units = []
    for pointer, members in groups.items():
        source = members[0].get("source") or {}
        kind = str(source["kind"]) if not pointer.startswith("unknown:") else "unknown"
        units.append(Unit(pointer, kind, {k: v for k, v in source.items() if k != "position"}, tuple(members)))
    return units


def matches(letter: Letter, feed: str | None, reason: str | None) -> bool:
    """True if the dead letter is of that feed and reason (`code` or `stage.code`); None matches all."""
    if feed and letter.get("feed") != feed:
        return False
    return not reason or reason in (letter.get("reason_code"), f"{letter.get('stage')}.{letter.get('reason_code')}")


def select(letters: Sequence[Letter], ids: Sequence[str], feed: str | None, reason: str | None) -> list[Letter]:
    """The dead letters named by id (all must exist), or those matching the filters."""
    if not ids:
        return [letter for letter in letters if matches(letter, feed, reason)]
    by_id = {letter["dead_letter_id"]: letter for letter in letters}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DlqError(f"no dead letter with id {', '.join(missing)}")
    return [by_id[i] for i in dict.fromkeys(ids)]


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC time to the second (2026-12-04T10:00:00Z)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(ms: object) -> str:
    return iso(ms) if isinstance(ms, int) else "?"


def format_table(letters: Sequence[Letter]) -> list[str]:
    """One aligned line per dead letter: id, feed, stage, reason, pointer (position), time. No detail, no payload."""
    rows = []
    for x in letters:
        source = x.get("source") or {}
        where = unit_pointer(source) or "?"
        if source.get("position"):
            where += f" ({source['position']})"
        rows.append([str(x.get(k)) for k in ("dead_letter_id", "feed", "stage", "reason_code")]
                    + [where, _when(x.get("failed_at_ms"))])
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5] for r in rows]


# Kafka and S3 -------------------------------------------------------------------------------------

def check_broker(cfg: DlqConfig) -> set[str]:
    """The broker's topic names; DlqError if it does not answer."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(cfg.bootstrap_servers, cfg.kafka_auth, **{"socket.timeout.ms": 5000,
                                                                                 "log_level": 0}))
    try:
        return set(admin.list_topics(timeout=cfg.timeout_s).topics)
    except KafkaException:
        raise DlqError(f"Kafka broker unreachable at kafka.bootstrap.servers={cfg.bootstrap_servers}") from None


def _read_topic(cfg: DlqConfig, topic: str) -> list[dict[str, Any]]:
    from tools.readback import committed_dead_letters

    try:
        return committed_dead_letters(cfg.bootstrap_servers, topic, timeout_s=3 * cfg.timeout_s, auth=cfg.kafka_auth)
    except (TimeoutError, RuntimeError) as err:
        raise DlqError(str(err)) from None


def is_partner_id(dead_letter_id: str) -> bool:
    """Whether an id names a partner delivery dead letter (else an ingest one)."""
    return dead_letter_id.startswith(PARTNER_ID_PREFIX)


def read_dead_letters(cfg: DlqConfig, partner: bool = False) -> list[dict[str, Any]]:
    """Committed dead letters of the ingest job (or of the partner delivery job), one per id, newest last.

    The partner job emits a dead letter again, with the same id, each time it re-reads a dead record
    (a restore, a backfill): the newest copy is kept.
    """
    check_broker(cfg)
    topic, at = (cfg.partner_dlq_topic, "dead_at_ms") if partner else (cfg.dlq_topic, "failed_at_ms")
    unique = {letter["dead_letter_id"]: letter for letter in _read_topic(cfg, topic)}
    return sorted(unique.values(), key=lambda x: x.get(at) or 0)

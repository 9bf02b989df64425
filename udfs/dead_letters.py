"""Dead letters: why a record was refused, where it came from, and nothing of its content.

Until field-level PHI protection lands, a dead letter carries no part of the payload: only the
SHA-256 and size of its unit (the Kafka message or the file), a pointer to where the raw bytes still
are (topic/partition/offset or file) and the position inside the unit ("row 3", "ST 0001 CLM 2").
Details name a JSON path and a rule, never a value, so no PHI can leak through a dead letter.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import orjson

from udfs.reasons import reason
from udfs.source import SourceRef


class Rejected(Exception):
    """A record that cannot continue; reason_code is a defined code of udfs.reasons, detail is PHI-free.

    The stage defaults to the reason's category; the detail names paths, rules and positions,
    never a value from the record.
    """

    def __init__(self, reason_code: str, detail: str, stage: str | None = None) -> None:
        category = reason(reason_code).category
        super().__init__(f"{stage or category}:{reason_code}: {detail}")
        self.reason_code, self.detail, self.stage = reason_code, detail, stage or category


@dataclass(frozen=True)
class DeadLetter:
    """One refused record, as written to the dead-letter topic."""

    dead_letter_id: str
    feed: str
    stage: str
    reason_code: str
    detail: str
    record_id: str | None
    payload_sha256: str  # of the whole unit (message or file)
    payload_bytes: int
    source: dict[str, object]
    failed_at_ms: int
    item_sha256: str | None = None  # of the record's own bytes inside the unit, when known
    protected_payload: str | None = None  # see protect_payload(): None until encryption exists

    @classmethod
    def from_error(
        cls, err: Rejected, payload: bytes | None, source: SourceRef, record_id: str | None, now_ms: int,
        position: str | None = None, item_sha256: str | None = None,
    ) -> DeadLetter:
        """Build the dead letter for a rejected unit (position None) or one record inside it."""
        payload = payload or b""
        digest = hashlib.sha256(payload).hexdigest()
        where = source.as_dict() | ({"position": position} if position else {})
        return cls(
            # Deterministic, so a replay after a restore produces the same id.
            dead_letter_id=hashlib.sha256(f"{source.pointer()}|{position or ''}|{digest}".encode()).hexdigest()[:32],
            feed=source.feed,
            stage=err.stage,
            reason_code=err.reason_code,
            detail=err.detail,
            record_id=record_id,
            payload_sha256=digest,
            payload_bytes=len(payload),
            source=where,
            failed_at_ms=now_ms,
            item_sha256=item_sha256,
            protected_payload=cls.protect_payload(payload),
        )

    @staticmethod
    def protect_payload(payload: bytes | None) -> None:
        """The one hook where a dead letter will carry its payload, encrypted (PHI protection, issue 4).

        Until envelope encryption exists the payload stays out: the SHA-256 and the source pointer
        find the raw bytes, which remain in the raw topic or the landing prefix.
        """
        return None

    def to_json(self) -> str:
        """The wire form of the dead letter."""
        return orjson.dumps(asdict(self)).decode()

"""Dead letters: why a record was refused, where it came from, and its content only encrypted.

A dead letter carries the SHA-256 and size of its unit (the Kafka message or the file), a pointer to
where the raw bytes still are (topic/partition/offset or file), the position inside the unit
("row 3", "ST 0001 CLM 2") and, sealed whole under the dead-letter KMS domain
(udfs.phi.protect.seal_dead_letter), the refused record as decoded or, when no record could be
decoded, the unit itself up to MAX_SEALED_BYTES. Details name a JSON path and a rule, never a value,
so no PHI can leak through a dead letter in the clear.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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


# Larger units stay where the pointer says (raw topic, landing prefix) rather than bloat the topic.
MAX_SEALED_BYTES = 512 * 1024
Sealer = Callable[[str, str, bytes], str]  # (feed, dead_letter_id, data) -> sealed document


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
    protected_payload: str | None = None  # sealed record or unit; None when too large (see the pointer)
    payload_form: str | None = None  # "record" (as decoded) or "unit" (the raw bytes): what is sealed

    @classmethod
    def from_error(
        cls, err: Rejected, payload: bytes | None, source: SourceRef, record_id: str | None, now_ms: int,
        seal: Sealer, position: str | None = None, item_sha256: str | None = None, record: bytes | None = None,
    ) -> DeadLetter:
        """Build the dead letter for a rejected unit (position None) or one record inside it.

        `record` is the refused record as decoded (JSON), when there is one; it is sealed instead of
        the unit. `seal` encrypts; its failure propagates, so nothing is ever written unprotected.
        """
        payload = payload or b""
        digest = hashlib.sha256(payload).hexdigest()
        where = source.as_dict() | ({"position": position} if position else {})
        # Deterministic, so a replay after a restore produces the same id.
        letter_id = hashlib.sha256(f"{source.pointer()}|{position or ''}|{digest}".encode()).hexdigest()[:32]
        form, content = ("record", record) if record is not None else ("unit", payload)
        sealed = seal(source.feed, letter_id, content) if 0 < len(content) <= MAX_SEALED_BYTES else None
        return cls(
            dead_letter_id=letter_id,
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
            protected_payload=sealed,
            payload_form=form if sealed is not None else None,
        )

    def to_json(self) -> str:
        """The wire form of the dead letter."""
        return orjson.dumps(asdict(self)).decode()

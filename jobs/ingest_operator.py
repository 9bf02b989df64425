"""The ingest job's one Python operator and the row types it emits.

A thin wrapper (STYLE.md): open() builds udfs.ingest.IngestStage, process_element() calls it,
accepted records go to the main output (and claims to a side output), rejects become dead letters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from udfs.claims import CLAIM_COLUMNS
from udfs.dead_letters import DeadLetter, Rejected
from udfs.ingest import IngestStage
from udfs.source import SourceRef

_INT_COLUMNS = {"diagnosis_count", "service_line_count"}

ACCEPTED_TYPE = Types.ROW_NAMED(
    ["record_id", "record_type", "sent_at_ms", "source", "payload", "feed", "dt"],
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING(), Types.STRING(), Types.STRING(), Types.STRING()],
)
CLAIMS = OutputTag(
    "claims",
    Types.ROW_NAMED(
        [*CLAIM_COLUMNS, "sent_at_ms", "sent_date", "source", "ingested_at_ms"],
        [Types.INT() if c in _INT_COLUMNS else Types.STRING() for c in CLAIM_COLUMNS]
        + [Types.LONG(), Types.STRING(), Types.STRING(), Types.LONG()],
    ),
)
DEAD_LETTERS = OutputTag("dead-letters", Types.ROW_NAMED(["dead_letter_id", "body"], [Types.STRING(), Types.STRING()]))


class IngestOperator(ProcessFunction):  # type: ignore[misc]
    """Decode and check one raw record (payload, topic, partition, offset, path)."""

    def __init__(self, landing_root: str) -> None:
        self.landing_root = landing_root
        self.stage: IngestStage  # built in open(), on the worker

    def open(self, runtime_context: RuntimeContext) -> None:
        """Build the stage (schemas compiled once per operator instance)."""
        self.stage = IngestStage()

    def process_element(self, row: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        """Emit the accepted record (+ claim row) or a dead letter."""
        payload, topic, partition, offset, path = row[0], row[1], row[2], row[3], row[4]
        if topic is not None:
            source = SourceRef.from_kafka(topic, partition, offset)
        else:
            source = SourceRef.from_file(path, self.landing_root)
        now_ms = int(time.time() * 1000)
        try:
            accepted = self.stage.process(payload, source)
        except Rejected as err:
            letter = DeadLetter.from_error(err, payload, source, IngestStage.record_id_of(payload), now_ms)
            yield DEAD_LETTERS, Row(letter.dead_letter_id, letter.to_json())
            return
        pointer = source.pointer()
        yield Row(accepted.record_id, accepted.record_type, accepted.sent_at_ms, pointer,
                  accepted.payload, accepted.feed, accepted.sent_date)
        if accepted.claim is not None:
            claim = accepted.claim
            yield CLAIMS, Row(*(claim[c] for c in CLAIM_COLUMNS), accepted.sent_at_ms,
                              accepted.sent_date, pointer, now_ms)

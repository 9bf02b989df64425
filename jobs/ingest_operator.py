"""The ingest job's one Python operator and the row types it emits.

A thin wrapper (STYLE.md): open() loads the feed contracts, the reference data and the key material
(token keys from Secrets Manager, opened by KMS; a KMS data-key source) and builds
udfs.ingest.IngestStage; process_element() runs one raw unit through it; accepted records go to the
main output (the fraud detectors take their facts from it in the JVM: jobs/fraud_operator.py) and refusals
become dead letters on a side output. The operator is a
BroadcastProcessFunction: reference data versions arrive on the broadcast input, are kept in
broadcast state (so a restore has them) and replace older versions while the job runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, RuntimeContext
from pyflink.datastream.functions import BroadcastProcessFunction
from pyflink.datastream.state import MapStateDescriptor

from connectors.iceberg import S3Config
from connectors.kms import PhiConfig
from connectors.metrics.flink_counters import (
    METRIC_GROUP,
    N_ACCEPTED,
    N_CORRECTIONS,
    N_DEAD,
    N_IN,
    N_PHI_FIELDS,
    N_UNITS,
    FlinkCounters,
)
from fresh_imports import FreshImports
from jobs.event_time_operator import DEVICE_EVENTS
from schemas.contracts import FEEDS_DIR
from udfs.contract_checks import load_feed_contracts
from udfs.dead_letters import DeadLetter, Rejected
from udfs.enrich import ReferenceData, parse_reference
from udfs.event_time import EVENT_TIME_FIELDS, LATE_EVENT, DeviceWatermark, EventTimePolicy
from udfs.ingest import Accepted, IngestStage, Refused
from udfs.phi.envelope import DataKeyCache
from udfs.phi.protect import seal_dead_letter
from udfs.reasons import reason
from udfs.rows import (
    ACCEPTED_FIELDS,
    BYTES_FIELDS,
    DEAD_LETTER_FIELDS,
    INT_FIELDS,
    LONG_FIELDS,
    TEXT_ARRAYS_FIELDS,
    accepted_values,
    dead_letter_values,
)
from udfs.source import SourceRef

log = logging.getLogger("medistream.ingest")

ACCEPTED_TYPE = Types.ROW_NAMED(
    ACCEPTED_FIELDS,
    [Types.LONG() if f in LONG_FIELDS else Types.INT() if f in INT_FIELDS
     else Types.OBJECT_ARRAY(Types.BASIC_ARRAY(Types.STRING())) if f in TEXT_ARRAYS_FIELDS
     else Types.PRIMITIVE_ARRAY(Types.BYTE()) if f in BYTES_FIELDS else Types.STRING()
     for f in ACCEPTED_FIELDS],
)
DEAD_LETTERS = OutputTag("dead-letters", Types.ROW_NAMED(
    DEAD_LETTER_FIELDS, [Types.LONG() if f == "dead_at_ms" else Types.STRING() for f in DEAD_LETTER_FIELDS]))
REFERENCE_STATE = MapStateDescriptor("reference-data", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


class IngestOperator(FreshImports, BroadcastProcessFunction):  # type: ignore[misc]
    """Decode and check one raw unit: Row(payload, topic, partition, offset, path, unit_ms)."""

    def __init__(self, landing_root: str, contracts_dir: str, reference_path: str, s3: S3Config,
                 phi: PhiConfig, event_time: EventTimePolicy | None = None) -> None:
        self.landing_root = landing_root
        self.event_time = event_time or EventTimePolicy()  # clock skew here, lateness in the gate (decision 0040)
        self.contracts_dir = contracts_dir
        self.reference_path = reference_path
        self.s3 = s3
        self.phi = phi  # names only: key material is fetched in open(), on the worker
        self.stage: IngestStage  # built in open(), on the worker
        self.keys: DataKeyCache
        self.reference = ReferenceData()
        self._state_read = False

    def open(self, runtime_context: RuntimeContext) -> None:
        """Load contracts (fail the job on a bad one) and the newest reference data."""
        from connectors.kms import KmsDataKeys, aws_client, configured_token_keys
        from connectors.reference import load_reference_sets
        from connectors.s3 import s3_client
        from schemas.phi_policy import load_policy
        from udfs.phi.protect import Protector
        from udfs.phi.tokens import Tokenizer

        if not log.handlers and not logging.getLogger().handlers:
            # Thread mode runs this code inside the JVM's embedded Python: no handler is set up there.
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        contracts = load_feed_contracts(Path(self.contracts_dir) if self.contracts_dir else FEEDS_DIR)
        client = None if self.reference_path.startswith("file://") else s3_client(self.s3)
        self.reference.update_all(load_reference_sets(client, self.reference_path))
        log.info("ingest operator: %d feed contracts, reference %s", len(contracts), self.reference.versions())
        kms = aws_client(self.phi, "kms")
        tokenizer = Tokenizer(configured_token_keys(self.phi, kms))
        self.keys = DataKeyCache(KmsDataKeys(kms, self.phi.alias_prefix), self.phi.data_key_max_uses,
                                 self.phi.data_key_max_age_s)
        protectors = {name: Protector(load_policy(name), tokenizer, self.keys)
                      for name in {c.phi_policy for c in contracts.values()}}
        log.info("ingest operator: PHI policies %s, token key v%d", sorted(protectors), tokenizer.keys.current)
        self.stage = IngestStage(contracts, protectors, self.reference, self.event_time)
        self._late_detail = DeviceWatermark(self.event_time).late_detail()
        # Counted in Python, handed to Flink once a second (connectors/metrics/flink_counters.py).
        # Labels are contract feed names ("unknown" for any other topic or folder) and reason codes.
        self._protector_of = {feed: protectors[c.phi_policy] for feed, c in contracts.items()}
        self._metrics = FlinkCounters(runtime_context.get_metrics_group().add_group(METRIC_GROUP))
        self._kms = self.keys.source

    def close(self) -> None:
        """Hand the last counts to Flink."""
        if hasattr(self, "_metrics"):
            self._kms_totals()
            self._metrics.flush()

    def _kms_totals(self) -> None:
        calls = getattr(self._kms, "calls", None)
        if calls is not None:
            self._metrics.set_total("kmsCalls", sum(calls.values()))
            self._metrics.set_total("kmsErrors", getattr(self._kms, "errors", 0))

    def _count(self, group: str, name: str, counter: str) -> None:
        self._metrics.inc(counter, ((group, name),))

    def process_element(self, value: Row, ctx: BroadcastProcessFunction.ReadOnlyContext) -> Iterator[Any]:
        """Emit every accepted record of the unit, and a dead letter for every refusal."""
        if not self._state_read:
            # After a restore, versions broadcast before the checkpoint live only in the state.
            for _dataset, document in ctx.get_broadcast_state(REFERENCE_STATE).items():
                self.reference.update(parse_reference(document))
            self._state_read = True
        payload, topic, partition, offset, path, unit_ms = value[0], value[1], value[2], value[3], value[4], value[5]
        if topic is not None:
            source = SourceRef.from_kafka(topic, partition, offset)
        else:
            source = SourceRef.from_file(path, self.landing_root)
        payload = bytes(payload) if payload is not None else None
        now_ms = int(time.time() * 1000)
        pointer = source.pointer()
        protector = self._protector_of.get(source.feed)
        feed = source.feed if protector is not None else "unknown"
        counts = self._metrics.row("feed", feed)
        counts[N_UNITS] += 1
        fields = protector.fields if protector is not None else 0
        for outcome in self.stage.process(payload, source, unit_ms):
            counts[N_IN] += 1
            if isinstance(outcome, Refused):
                letter = DeadLetter.from_error(
                    outcome.error, payload, source, outcome.record_id, now_ms, self._seal, outcome.position,
                    outcome.raw_sha256, None if outcome.record is None else orjson.dumps(outcome.record))
                counts[N_DEAD] += 1
                code = outcome.error.reason_code
                self._metrics.inc("deadLetters", (("feed", feed), ("reason", code)))
                if reason(code).alert:
                    self._metrics.inc("alertDeadLetters", (("feed", feed), ("reason", code)))
                yield DEAD_LETTERS, Row(*dead_letter_values(letter, pointer))
            else:
                counts[N_ACCEPTED] += 1
                if outcome.keys.original_key is not None:
                    counts[N_CORRECTIONS] += 1
                if outcome.record_type in EVENT_TIME_FIELDS:
                    # To the event-time gate (jobs/event_time_operator.py), with the dead letter it becomes if late.
                    yield DEVICE_EVENTS, self._timed(outcome, payload, source, pointer, now_ms)
                    continue
                yield Row(*accepted_values(outcome, pointer, now_ms))
        if protector is not None:
            counts[N_PHI_FIELDS] += protector.fields - fields
        if now_ms >= self._metrics.due_ms:
            self._kms_totals()
            self._metrics.maybe_flush(now_ms)

    def _timed(self, outcome: Accepted, payload: bytes | None, source: SourceRef, pointer: str, now_ms: int) -> Row:
        """The gate's input: (device token, (event ms, accepted row, the late dead letter's row))."""
        letter = DeadLetter.from_error(Rejected(LATE_EVENT, self._late_detail), payload, source, outcome.record_id,
                                       now_ms, self._seal, outcome.position)
        event = (outcome.columns["event_time_ms"], accepted_values(outcome, pointer, now_ms),
                 dead_letter_values(letter, pointer))
        return Row(outcome.columns["device_token"], event)

    def _seal(self, feed: str, dead_letter_id: str, data: bytes) -> str:
        return seal_dead_letter(self.keys, feed, dead_letter_id, data)

    def process_broadcast_element(self, value: Row, ctx: BroadcastProcessFunction.Context) -> None:
        """Take a newly published reference version (every subtask receives it)."""
        path, payload = value[0], value[3]
        try:
            ref = parse_reference(bytes(payload) if payload is not None else b"")
        except ValueError as err:
            log.error("ignoring reference object %s: %s", path, err)
            self._count("reference", "invalid", "documents")
            return
        self.reference.update(ref)
        if self.reference.sets[ref.dataset].version == ref.version:  # it is (now) the newest held
            ctx.get_broadcast_state(REFERENCE_STATE).put(ref.dataset, bytes(payload))
            log.info("reference %s v%d in use", ref.dataset, ref.version)

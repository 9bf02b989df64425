"""The ingest stage: one raw unit -> canonical, checked, enriched records, or dead letters with reasons.

Per record, in this order (each step is a pure module of udfs/):
decode (the feed's format) -> map (csv) -> envelope -> standardize -> JSON Schema -> rules -> enrich
-> dedup keys -> protect, with one text-hygiene step (udfs/hygiene.py) between envelope and standardize
for every format. Standardization runs before the schema check so the schema can demand the
canonical forms (E.164 phones, ISO dates) while feeds may send local ones; protection runs last, on
the standardized record, so tokens of one value agree across feeds, and everything after this stage
(dedup state, sinks, dead letters) sees only protected forms. No Flink here: jobs/ingest_operator.py
wraps this class in an operator.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastjsonschema import JsonSchemaValueException

from schemas import CURRENT_VERSIONS, fast_accepts, fast_validator, is_readable_version, load_schema
from schemas.contracts import FeedContract
from udfs.dead_letters import Rejected
from udfs.decoders import Item
from udfs.dedup import DedupKeys, dedup_keys
from udfs.enrich import ReferenceData, enrich
from udfs.event_time import EVENT_TIME_FIELDS, EventTimePolicy, check_clock
from udfs.hygiene import clean
from udfs.mapping import compile_mapping, map_record
from udfs.phi.errors import PolicyGap, ProtectionError
from udfs.phi.protect import Protector
from udfs.projections import instant_ms, project
from udfs.reasons import (
    FEED_MISMATCH,
    INTERNAL_ERROR,
    SCHEMA_VERSION_UNSUPPORTED,
    SCHEMA_VIOLATION,
    UNIT_TOO_LARGE,
    UNKNOWN_FEED,
    define,
)
from udfs.routing import resolve
from udfs.rules import validate
from udfs.source import SourceRef
from udfs.standardize import StandardizeOptions, standardize

PHI_POLICY_GAP = define("phi_policy_gap", "protection",
                        "a field has no rule in the feed's PHI policy; the record is kept sealed", alert=True)
DOOR_NOT_ALLOWED = define("door_not_allowed", "envelope", "the feed arrived through a door its contract does not list")
EMPTY_UNIT = define("empty_unit", "decode", "a message or file holds no record (empty, or a header and nothing else)")
RECORD_TYPE_MISMATCH = define("record_type_mismatch", "envelope", "the record's type is not the one its feed carries")

# The contract's door names -> SourceRef kinds. REST pushes and pulls, and the Kinesis door, produce to raw.<feed>.
_DOORS = {"kafka": "kafka", "rest": "kafka", "kinesis": "kafka", "landing": "file"}
_RECORD_ID_NAMESPACE = uuid.UUID("6f1c2a0e-3b7d-4c55-9a8e-2f4d1b7c9e10")


@dataclass(frozen=True)
class Accepted:
    """A record that passed every check, with what dedup and the sinks need."""

    record_id: str
    record_type: str
    feed: str
    position: str
    sent_at_ms: int
    sent_date: str
    payload: str  # the protected record (tokens, masks, field ciphertexts), as JSON
    sealed: str  # the whole canonical record, encrypted (udfs.phi.envelope.seal)
    columns: dict[str, Any]  # the record type's table columns, projected from the protected record
    routes: tuple[str, ...]  # the sinks it goes to (udfs.routing)
    keys: DedupKeys
    enrichment: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    """A record (or a whole unit, position None) that goes to the dead letters."""

    error: Rejected
    position: str | None
    record_id: str | None
    raw_sha256: str | None = None  # the item's own bytes, when its format delimits them
    record: dict[str, Any] | None = None  # the record as decoded, sealed into the dead letter


Outcome = Accepted | Refused


def schema_errors(check: Callable[[dict[str, Any]], Any], record: dict[str, Any]) -> str | None:
    """PHI-free summary of the first schema violation (JSON path and rule, never the value), or None."""
    try:
        check(record)
    except JsonSchemaValueException as err:
        # err.message may quote the offending value; the path and the rule name never do.
        return f"{err.name} {err.rule}"
    return None


def _decoder(fmt: str) -> Callable[[bytes, Mapping[str, Any]], Iterator[Item]]:
    module = importlib.import_module(f"udfs.decoders.{fmt}")
    return module.decode  # type: ignore[no-any-return]


def _rfc3339_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The canonical record id (a ULID or a UUID) cannot carry a member's data; anything else in its place might.
_RECORD_ID = re.compile(load_schema("claim")["$defs"]["record_id"]["pattern"])
_DIGEST_NAMESPACE = "dead_letter.record_id\x1f"


def dead_letter_record_id(record: Mapping[str, Any], digest: Callable[[str], str]) -> str | None:
    """The record id a dead letter may show: the id itself only when it has the canonical form.

    A feed that puts an MRN or an e-mail address in its id field must not see it copied into the
    dead letters in the clear: any other value becomes "digest:" + a keyed digest (`digest`, the
    linkage HMAC), which an operator holding the value can recompute but nobody can reverse.
    """
    value = record.get("record_id")
    if value is None:
        return None
    if isinstance(value, str) and _RECORD_ID.fullmatch(value):
        return value
    text = value if isinstance(value, str) else repr(value)  # a number or a structure: its deterministic text
    text = text.encode("utf-8", "backslashreplace").decode()  # a lone surrogate must not fail the digest
    return "digest:" + digest(_DIGEST_NAMESPACE + text)


class FeedStage:
    """Everything one feed's records go through, built once from its contract."""

    def __init__(self, contract: FeedContract, protector: Protector, event_time: EventTimePolicy | None = None) -> None:
        self.contract = contract
        self.protector = protector
        # A record type with an event time is checked against its unit's arrival (clock skew, decision 0040).
        self.event_time_field = EVENT_TIME_FIELDS.get(contract.record_type)
        self.event_time = event_time or EventTimePolicy()
        self.decode = _decoder(contract.format)
        self.options = contract.decoder_options
        self.doors = frozenset(_DOORS[d] for d in contract.sources)
        self.std_options = StandardizeOptions.from_contract(contract.standardize)
        self.validator = fast_validator(contract.record_type)
        self.accepts = fast_accepts(contract.record_type)  # a fast yes; a no asks self.validator for the reason
        self.mapping = compile_mapping(contract.mapping) if contract.mapping else None
        # Canonical JSON feeds carry their own envelope; other formats get it from the unit.
        self.fills_envelope = contract.format != "json"

    def units(self, payload: bytes | None, source: SourceRef) -> Iterator[Item]:
        """Decoded items of one unit; a unit-level failure raises Rejected."""
        if source.kind not in self.doors:
            raise Rejected(DOOR_NOT_ALLOWED, f"feed {self.contract.feed} does not accept {source.kind} input")
        if payload is None or len(payload) > self.contract.max_unit_bytes:
            raise Rejected(UNIT_TOO_LARGE, f"unit exceeds {self.contract.max_unit_bytes} bytes")
        yield from self.decode(payload, self.options)

    def record(self, item_record: dict[str, Any], source: SourceRef, position: str, unit_ms: int,
               reference: ReferenceData, now: datetime) -> Accepted:
        """Check one decoded record; raise Rejected when it cannot continue."""
        contract = self.contract
        record = map_record(item_record, self.mapping) if self.mapping else dict(item_record)
        if record.setdefault("feed", source.feed) != source.feed:
            # A record claiming another feed than the door it came through is not trusted.
            raise Rejected(FEED_MISMATCH, f"record names another feed than its source {source.feed}")
        if record.setdefault("record_type", contract.record_type) != contract.record_type:
            raise Rejected(RECORD_TYPE_MISMATCH, f"feed {contract.feed} carries {contract.record_type} records")
        version = record.setdefault("schema_version", contract.schema_version)
        if not is_readable_version(contract.record_type, version):
            raise Rejected(SCHEMA_VERSION_UNSUPPORTED,
                           f"schema_version is not readable as {contract.record_type} "
                           f"{CURRENT_VERSIONS[contract.record_type]}")
        record["schema_version"] = CURRENT_VERSIONS[contract.record_type]  # read as the current minor
        if self.fills_envelope:
            record.setdefault("record_id", str(uuid.uuid5(_RECORD_ID_NAMESPACE, f"{source.pointer()}#{position}")))
            record.setdefault("sent_at", _rfc3339_utc(unit_ms))
        record = standardize(clean(record, contract.record_type), contract.record_type, self.std_options)
        if not self.accepts(record):
            problems = schema_errors(self.validator, record)
            if problems:
                raise Rejected(SCHEMA_VIOLATION, problems)
        validate(record, contract.record_type, now=now)
        if self.event_time_field is not None:
            check_clock(instant_ms(record[self.event_time_field]), unit_ms, self.event_time)
        enrichment = enrich(record, contract.record_type, reference, contract.on_miss)
        sent_at = datetime.fromisoformat(record["sent_at"])
        try:
            protected = self.protector.protect(record, contract.record_type, orjson.dumps(record))
        except PolicyGap as err:
            raise Rejected(PHI_POLICY_GAP, err.detail) from None
        routes = resolve(contract.routes, protected.record)
        return Accepted(
            record_id=record["record_id"],
            record_type=contract.record_type,
            feed=source.feed,
            position=position,
            sent_at_ms=int(sent_at.timestamp() * 1000),
            sent_date=sent_at.astimezone(UTC).date().isoformat(),
            payload=orjson.dumps(protected.record).decode(),
            sealed=protected.sealed,
            columns=project(contract.record_type, protected.record),
            routes=routes,
            keys=dedup_keys(record, contract.record_type, self.protector.tokenizer.linkage),
            enrichment=enrichment.to_dict(),
        )


class IngestStage:
    """All feeds: route each unit to its feed's stage and turn every failure into a Refused."""

    def __init__(self, contracts: Mapping[str, FeedContract], protectors: Mapping[str, Protector],
                 reference: ReferenceData | None = None, event_time: EventTimePolicy | None = None) -> None:
        """`protectors` by PHI policy name; every contract's policy must be there."""
        self.feeds = {name: FeedStage(contract, protectors[contract.phi_policy], event_time)
                      for name, contract in contracts.items()}
        self.reference = reference if reference is not None else ReferenceData()

    def process(self, payload: bytes | None, source: SourceRef, unit_ms: int,
                now: datetime | None = None) -> Iterator[Outcome]:
        """Every outcome of one unit, in order; never raises for bad input.

        Raises ProtectionError when the key service fails: no record may leave unprotected, so the
        operator lets the job fail and restart from its last checkpoint.
        """
        now = now or datetime.now(UTC)
        stage = self.feeds.get(source.feed)
        if stage is None:
            yield Refused(Rejected(UNKNOWN_FEED, "no contract for this feed"), None, None)
            return
        done = 0
        try:
            for item in stage.units(payload, source):
                done += 1
                if item.error is not None or item.record is None:
                    yield Refused(item.error or Rejected(INTERNAL_ERROR, "decoder gave an empty item"),
                                  item.position, None, item.raw_sha256)
                    continue
                yield self._one(stage, item, source, unit_ms, now)
            if done == 0:
                # Not lost data, but a feed sending empty or header-only units is worth a look.
                yield Refused(Rejected(EMPTY_UNIT, "the unit holds no records"), None, None)
        except Rejected as err:
            # The unit (or its remainder after `done` items) cannot be read.
            yield Refused(err, None if done == 0 else f"after item {done}", None)
        except ProtectionError:
            raise  # the key service failed: stop (and restart from the checkpoint), never pass a record on
        except Exception as err:  # a decoder bug must not stop the job or lose the unit
            yield Refused(Rejected(INTERNAL_ERROR, f"decoder raised {type(err).__name__}"),
                          None if done == 0 else f"after item {done}", None)

    def _one(self, stage: FeedStage, item: Item, source: SourceRef, unit_ms: int, now: datetime) -> Outcome:
        record = item.record or {}
        try:
            return stage.record(record, source, item.position, unit_ms, self.reference, now)
        except Rejected as err:
            error = err
        except ProtectionError:
            raise
        except Exception as err:  # a stage bug: dead-letter the record, name only the exception class
            error = Rejected(INTERNAL_ERROR, f"{type(err).__name__} in record stages")
        return Refused(error, item.position, dead_letter_record_id(record, stage.protector.tokenizer.linkage),
                       None, record)

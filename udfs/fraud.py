"""Fraud signals: in-stream detectors over accepted claims and eligibility, one member's evidence at a time.

The rules are data (schemas/fraud/rules.yaml, checked against schemas/fraud_rules.schema.json, read here by
`load_rules`): each names a detector kind, its window and threshold. Every accepted claim and eligibility record
reaches the detectors (jobs/fraud_operator.py) as its table columns, keyed by the member's token, and becomes a
`Fact` (`fact_of`: tokens, provider NPIs, codes, dates, amounts, never a clear identifier); `MemberDetector` keeps
that member's evidence and returns the signals a fact completes.

This module is the detectors' specification. The job runs them in the JVM (com.medistream.flink.MemberEvidence,
decision 0055), whose state is `state_to_plain`'s builtins pickled, and tests/flink/test_fraud_detectors.py holds
the two side by side: the same signals for generated facts, the same state, savepoints restored both ways. A rule
changed here is changed there, or that test fails.

Each rule is decided by the *set* of records seen, never by their order: sets of providers, of (claim, amount)
pairs, of coverage spans. A re-send adds nothing to a set, so the detectors take records before the job's
dedup, and a replay or another interleaving of the feeds gives the same signals. A signal's id is its rule and
its keys, each id is emitted once per member (`fired`), and a sink that sees an id twice keeps one row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

PROVIDERS_PER_MEMBER_DAY = "providers_per_member_day"
SERVICE_AMOUNT_MISMATCH = "service_amount_mismatch"
SERVICE_OUTSIDE_ELIGIBILITY = "service_outside_eligibility"
KINDS = (PROVIDERS_PER_MEMBER_DAY, SERVICE_AMOUNT_MISMATCH, SERVICE_OUTSIDE_ELIGIBILITY)
VOID = "8"  # claim frequency codes: a void bills nothing; a replacement (7) re-bills its original's service
REPLACEMENT = "7"
RULES_FILE = Path(__file__).resolve().parents[1] / "schemas" / "fraud" / "rules.yaml"
RULES_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "fraud_rules.schema.json"
_EPOCH = date(1970, 1, 1)


class FraudRulesError(ValueError):
    """The rules file is not valid; the message names the file and the rule."""


@dataclass(frozen=True)
class Rule:
    """One declared rule: its name (the signals' `rule`), detector kind, window in days and threshold."""

    name: str
    kind: str
    window_days: int = 1  # providers_per_member_day: service-date windows of this many days
    threshold: int = 1  # providers: more than this many; amounts: at least this many distinct amounts
    grace_ms: int = 0  # service_outside_eligibility: how long a claim waits for more coverage spans


@dataclass(frozen=True)
class FraudRules:
    """The rules in force and how long a member's evidence is kept after its last record."""

    rules: tuple[Rule, ...]
    state_ttl_ms: int
    max_pending: int = 256  # claims of one member waiting for coverage spans; beyond it the oldest is dropped

    def of_kind(self, kind: str) -> tuple[Rule, ...]:
        """The rules of one detector kind."""
        return tuple(rule for rule in self.rules if rule.kind == kind)


def load_rules(path: Path | str = RULES_FILE) -> FraudRules:
    """Read and check a rules file (FraudRulesError naming the file and the problem)."""
    import json

    import yaml
    from jsonschema import Draft202012Validator

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise FraudRulesError(f"fraud rules {path}: cannot be read ({type(err).__name__})") from err
    validator = Draft202012Validator(json.loads(RULES_SCHEMA.read_text()))
    problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if problems:
        where = "/".join(str(p) for p in problems[0].path) or "(top)"
        raise FraudRulesError(f"fraud rules {path}: {where}: {problems[0].message}")
    rules = []
    for item in doc["rules"]:
        rules.append(Rule(item["name"], item["kind"], window_days=int(item.get("window_days", 1)),
                          threshold=int(item.get("threshold", 1)),
                          grace_ms=int(float(item.get("grace_seconds", 0)) * 1000)))
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise FraudRulesError(f"fraud rules {path}: rule names must be unique, got {names}")
    return FraudRules(tuple(rules), int(doc["state_ttl_days"]) * 86_400_000, int(doc.get("max_pending", 256)))


@dataclass(frozen=True)
class Line:
    """A claim's service line as the detectors see it: procedure code, amount (money()'s text), date of service."""

    procedure: str
    charge: str
    service_date: str


@dataclass(frozen=True)
class Fact:
    """What the detectors read of one accepted claim or eligibility record (tokens and codes only)."""

    member: str  # the member's token
    record_type: str  # "claim" or "eligibility"
    business_key: str  # a digest: the evidence a signal names
    feed: str
    ingested_at_ms: int
    billing_npi: str | None = None  # claims
    frequency_code: str | None = None
    service_date: str | None = None  # the claim's first date of service (ISO)
    lines: tuple[Line, ...] = ()
    coverage_start: str | None = None  # eligibility (ISO dates; no end: open coverage)
    coverage_end: str | None = None


@dataclass(frozen=True)
class Signal:
    """One detected pattern: the rule, its keys (tokens, NPI, dates), evidence counts and business keys."""

    signal_id: str
    rule: str
    member: str
    provider_npi: str | None
    service_date: str | None
    evidence_count: int
    threshold: int
    evidence_keys: tuple[str, ...]  # business keys (digests) of the claims that make the pattern, sorted
    feed: str  # the feed of the record that completed it
    ingested_at_ms: int  # when that record entered the job: the signal's latency starts there


def signal_id(namespace: str, rule: str, *keys: str | None) -> str:
    """A signal's id: the job that found it (its name), its rule and keys, digested (128 bits, hex)."""
    return hashlib.sha256("\x1f".join([namespace, rule, *(k or "" for k in keys)]).encode()).hexdigest()[:32]


def money(text: str | None) -> str | None:
    """An amount's canonical text (None when absent or not a number): 12.5 and 12.50 are one amount."""
    try:
        return str(Decimal(text).normalize()) if text is not None else None
    except InvalidOperation:
        return None


def window_start(day: str, window_days: int) -> str:
    """The first day of the `window_days`-day window (counted from 1970-01-01) holding ISO date `day`."""
    offset = (date.fromisoformat(day) - _EPOCH).days
    return (_EPOCH + timedelta(days=offset - offset % window_days)).isoformat()


def covered(day: str, spans: Iterable[tuple[str, str | None]]) -> bool:
    """True when a coverage span (start, end or None for open) holds ISO date `day`."""
    return any(start <= day and (end is None or day <= end) for start, end in spans)


Piece = tuple[dict[str, Any], set[str]]  # one piece of a member's evidence and the signal ids it fired


PENDING_BLOCK = 32  # pending claims per order block (state version 4, decision 0060)
Pending = tuple[str, str, int]  # a claim awaiting coverage spans: (date of service, feed, ingested at ms)


@dataclass
class MemberState:
    """One member's evidence, in builtins only, in two parts as Flink keeps them (jobs/fraud_operator.py).

    The member's own part (coverage spans, the eligibility rule's fired ids, and where its pending claims are) is one
    value read and written per record: small whatever the history. The rest is in pieces, read and written only where
    a record adds to them: a providers window (`providers_piece`: billing NPI -> the business key of its first claim
    there), a service day (`service_piece`: procedure -> amount -> business keys), each with the signal ids it fired
    (decision 0044); and, since version 4 (decision 0060), each claim pending for coverage spans (`pending_piece`)
    and their arrival order in blocks of PENDING_BLOCK (`order_piece`: sequence -> business key). So a record's
    cost grows neither with its member's history nor with its pending claims. `load` fetches a piece not in `pieces`
    yet (None: there is none); `changed` names the pieces to write back, `removed` those to delete.

    A piece expires on its own, 30 days after it was last written: an order block or a pending claim that reads as
    absent is gone, and is skipped (`blocks` counts what each block held when it was last known).
    """

    spans: set[tuple[str, str | None]] = field(default_factory=set)
    fired: set[str] = field(default_factory=set)  # signal ids of the eligibility rule (and all, before version 3)
    next_seq: int = 0  # the sequence number of the next pending claim (arrival order)
    blocks: dict[int, int] = field(default_factory=dict)  # order block -> claims in it, oldest block first
    pieces: dict[str, Piece] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    load: Callable[[str], Piece | None] | None = field(default=None, compare=False, repr=False)

    def piece(self, key: str) -> Piece:
        """The piece `key` (an empty one when the member has none yet)."""
        found = self._lookup(key)
        if found is None:
            found = self.pieces[key] = ({}, set())
        return found

    def _lookup(self, key: str) -> Piece | None:
        if key in self.removed:
            return None
        found = self.pieces.get(key)
        if found is None and self.load is not None:
            found = self.load(key)
            if found is not None:
                self.pieces[key] = found
        return found

    def _put(self, key: str, piece: Piece) -> None:
        self.pieces[key] = piece
        self.removed.discard(key)
        self.changed.add(key)

    def _remove(self, key: str) -> None:
        self.pieces.pop(key, None)
        self.changed.discard(key)
        self.removed.add(key)

    def changed_pieces(self) -> dict[str, Piece]:
        """The pieces a record changed, to write back."""
        return {key: self.pieces[key] for key in self.changed}

    def pending_count(self) -> int:
        """How many claims wait for coverage spans (counting any whose pieces expired unseen)."""
        return sum(self.blocks.values())

    def add_pending(self, key: str, claim: Pending, max_pending: int) -> None:
        """Keep a claim until coverage spans decide it; beyond `max_pending` the oldest goes. A re-send of a claim
        still pending keeps its place in the order (as a dict's assignment does) and its latest values."""
        day, feed, ingested_at_ms = claim
        found = self._lookup(pending_piece(key))
        if found is not None:
            seq = found[0]["seq"]
            block = seq // PENDING_BLOCK  # one this member still counts: a piece left behind is not pending
            order = self._lookup(order_piece(block)) if block in self.blocks else None
            if order is not None and order[0].get(str(seq)) == key:
                found[0].update(day=day, feed=feed, ingested_at_ms=ingested_at_ms)
                self.changed.add(pending_piece(key))
                self.changed.add(order_piece(block))  # rewritten: it lives as long as its claims
                return
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        block = seq // PENDING_BLOCK
        order = self.piece(order_piece(block))
        order[0][str(seq)] = key
        self._put(order_piece(block), order)
        self.blocks[block] = self.blocks.get(block, 0) + 1
        self._put(pending_piece(key), ({"seq": seq, "day": day, "feed": feed, "ingested_at_ms": ingested_at_ms},
                                       set()))
        while self.pending_count() > max_pending:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        block = next(iter(self.blocks))
        order = self._lookup(order_piece(block))
        if order is None or not order[0]:  # expired, or emptied: its claims went with it
            del self.blocks[block]
            self._remove(order_piece(block))
            return
        seq, key = next(iter(order[0].items()))
        del order[0][seq]
        self._forget(key, int(seq))
        self.blocks[block] -= 1
        if order[0] and self.blocks[block] > 0:
            self.changed.add(order_piece(block))
        else:
            del self.blocks[block]
            self._remove(order_piece(block))

    def _forget(self, key: str, seq: int) -> None:
        found = self._lookup(pending_piece(key))
        if found is not None and found[0]["seq"] == seq:
            self._remove(pending_piece(key))

    def pending_claims(self) -> list[tuple[str, Pending]]:
        """The pending claims, oldest first: (business key, (date, feed, ingested at ms)); expired ones skipped."""
        claims: list[tuple[str, Pending]] = []
        for block in self.blocks:
            order = self._lookup(order_piece(block))
            for seq, key in (order[0].items() if order is not None else ()):
                found = self._lookup(pending_piece(key))
                if found is not None and found[0]["seq"] == int(seq):
                    claims.append((key, (found[0]["day"], found[0]["feed"], found[0]["ingested_at_ms"])))
        return claims

    def clear_pending(self) -> None:
        """Forget every pending claim (they were decided): their pieces and blocks are deleted."""
        for block in self.blocks:
            order = self._lookup(order_piece(block))
            for seq, key in (order[0].items() if order is not None else ()):
                self._forget(key, int(seq))
            self._remove(order_piece(block))
        self.blocks.clear()


def providers_piece(rule: str, window: str) -> str:
    """The key of a providers window's piece."""
    return f"p\x1f{rule}\x1f{window}"


def service_piece(npi: str, day: str) -> str:
    """The key of a service day's piece (one billing provider, one date of service)."""
    return f"s\x1f{npi}\x1f{day}"


def pending_piece(key: str) -> str:
    """The key of a pending claim's piece: {seq, day, feed, ingested_at_ms} (state version 4)."""
    return f"c\x1f{key}"


def order_piece(block: int) -> str:
    """The key of an order block's piece: sequence (text) -> business key, oldest first (state version 4)."""
    return f"q\x1f{block}"


class MemberDetector:
    """The rules over one member's state: `on_fact` for each record, `on_timer` when a grace period ends."""

    def __init__(self, rules: FraudRules, namespace: str = "") -> None:
        self.rules = rules
        self.namespace = namespace  # the job's name: two deployments sharing a store keep their own signals
        self.providers = rules.of_kind(PROVIDERS_PER_MEMBER_DAY)
        self.amounts = rules.of_kind(SERVICE_AMOUNT_MISMATCH)
        self.eligibility = rules.of_kind(SERVICE_OUTSIDE_ELIGIBILITY)
        self.grace_ms = max((rule.grace_ms for rule in self.eligibility), default=0)

    def on_fact(self, state: MemberState, fact: Fact) -> tuple[list[Signal], bool]:
        """Add one record to the member's evidence: (signals it completes, whether to decide pending claims
        after the grace period)."""
        if fact.record_type == "eligibility":
            if not fact.coverage_start:
                return [], False
            state.spans.add((fact.coverage_start, fact.coverage_end or None))
            return [], state.pending_count() > 0 and bool(self.eligibility)
        if fact.frequency_code == VOID or not fact.service_date:
            return [], False
        signals = [*self._providers(state, fact), *self._amounts(state, fact)]
        # A claim inside a known span is decided: spans only add coverage. Others wait for the grace period, which
        # starts now if the member has spans, else when its first eligibility record comes.
        if self.eligibility and not covered(fact.service_date, state.spans):
            state.add_pending(fact.business_key, (fact.service_date, fact.feed, fact.ingested_at_ms),
                              self.rules.max_pending)
            return signals, bool(state.spans)
        return signals, False

    def on_timer(self, state: MemberState, member: str) -> list[Signal]:
        """Decide the member's pending claims against the coverage spans known now (kept while there are none)."""
        if not state.spans:
            return []
        signals: list[Signal] = []
        for key, (day, feed, ingested_at_ms) in state.pending_claims():
            if not covered(day, state.spans):
                fact = Fact(member, "claim", key, feed, ingested_at_ms, service_date=day)
                for rule in self.eligibility:
                    signals += self._fire(state, None, rule, fact, [key], len(state.spans), rule.threshold, None, day,
                                          key)
        state.clear_pending()
        return signals

    def _providers(self, state: MemberState, fact: Fact) -> Iterator[Signal]:
        if not fact.billing_npi or fact.service_date is None:
            return
        for rule in self.providers:
            start = window_start(fact.service_date, rule.window_days)
            key = providers_piece(rule.name, start)
            seen, _ = state.piece(key)
            if fact.billing_npi not in seen:
                seen[fact.billing_npi] = fact.business_key
                state.changed.add(key)
            if len(seen) > rule.threshold:
                yield from self._fire(state, key, rule, fact, seen.values(), len(seen), rule.threshold, None, start)

    def _amounts(self, state: MemberState, fact: Fact) -> Iterator[Signal]:
        if not fact.billing_npi or fact.frequency_code == REPLACEMENT or not self.amounts:
            return  # a replacement claim re-bills its original with the corrected amount: not a second bill
        for rule in self.amounts:
            for line in fact.lines:
                key = service_piece(fact.billing_npi, line.service_date)
                services, _ = state.piece(key)
                billed = services.setdefault(line.procedure, {})
                claims = billed.setdefault(line.charge, [])
                if fact.business_key not in claims:
                    claims.append(fact.business_key)
                    state.changed.add(key)
                keys = {k for found in billed.values() for k in found}
                # Two claims (business keys) and `threshold` amounts: some pair of claims bills it differently.
                if len(billed) >= rule.threshold and len(keys) >= 2:
                    # One signal per member, provider and date: its other services billed twice add nothing.
                    yield from self._fire(state, key, rule, fact, keys, len(billed), rule.threshold,
                                          fact.billing_npi, line.service_date)

    def _fire(self, state: MemberState, piece: str | None, rule: Rule, fact: Fact, evidence: Iterable[str],
              count: int, threshold: int, npi: str | None, day: str, *keys: str) -> Iterator[Signal]:
        """Emit the signal once: its id is kept in the piece that made it (the member's own part for None)."""
        sid = signal_id(self.namespace, rule.name, fact.member, npi, day, *keys)
        fired = state.piece(piece)[1] if piece is not None else state.fired
        if sid in fired or sid in state.fired:
            return
        fired.add(sid)
        if piece is not None:
            state.changed.add(piece)
        yield Signal(sid, rule.name, fact.member, npi, day, count, threshold, tuple(sorted(set(evidence))),
                     fact.feed, fact.ingested_at_ms)


def fact_of(record_type: str, columns: dict[str, Any], business_key: str, feed: str, ingested_at_ms: int
            ) -> Fact | None:
    """The fact of an accepted claim or eligibility record from its table columns (udfs/projections.py);
    None for other record types and for a record without a member token."""
    member = columns.get("member_token")
    if not member or record_type not in ("claim", "eligibility"):
        return None
    if record_type == "eligibility":
        return Fact(member, record_type, business_key, feed, ingested_at_ms,
                    coverage_start=columns.get("coverage_start"), coverage_end=columns.get("coverage_end"))
    lines = []
    for texts in columns.get("service_lines") or ():
        # CLAIM_LINE_FIELDS order: line_number, procedure_code, modifiers, units, charge, service_date
        charge = money(texts[4])
        if texts[1] and charge is not None:
            lines.append(Line(texts[1], charge, texts[5] or columns.get("service_date_from") or ""))
    return Fact(member, record_type, business_key, feed, ingested_at_ms, billing_npi=columns.get("billing_npi"),
                frequency_code=columns.get("frequency_code"), service_date=columns.get("service_date_from"),
                lines=tuple(lines))


STATE_VERSION = 4
_UPGRADE = 1 << 62  # no bound while an earlier version's pending claims (bounded when written) are split out


def state_to_plain(state: MemberState) -> tuple[Any, ...]:
    """The member's own part as one tuple of builtins (a savepoint names no class of ours: a new version restores
    it); its pieces are builtins already (MemberState.changed_pieces)."""
    return (STATE_VERSION, state.spans, state.fired, state.next_seq, state.blocks)


def state_from_plain(plain: tuple[Any, ...] | None, load: Callable[[str], Piece | None] | None = None
                     ) -> MemberState:
    """The inverse of state_to_plain (an empty state for None), its pieces read through `load`.

    Earlier versions are split into pieces, all marked changed, so the first record of the member after an upgrade
    writes them: version 2 (one value per member, before decision 0044) its providers windows and service days, and
    versions 2 and 3 (before decision 0060) their pending claims, in their order; the fired ids stay in the member's
    own part. Any other version, or a version tag that is not an int (3.0, True), is refused (ValueError naming it),
    never read as one of these.
    """
    if plain is None:
        return MemberState(load=load)
    # A whole number only, as the JVM's MemberEvidence.stateOf takes (3.0 == 3 in Python, not there).
    if type(plain[0]) is not int or plain[0] not in (2, 3, STATE_VERSION):
        raise ValueError(f"fraud evidence state version {plain[0]!r} is not one these detectors read (2, 3 or "
                         f"{STATE_VERSION}): restore the savepoint with the release that wrote it")
    if plain[0] == STATE_VERSION:
        _version, spans, fired, next_seq, blocks = plain
        return MemberState(spans, fired, next_seq, blocks, load=load)
    if plain[0] == 3:
        _version, spans, pending, fired = plain
        state = MemberState(spans, fired, load=load)
    else:
        _version, claims, providers, services, spans, pending, fired = plain
        state = MemberState(spans, fired, load=load)
        for (rule, window), seen in providers.items():
            key = providers_piece(rule, window)
            state.pieces[key] = ({npi: claims[i] for npi, i in seen.items()}, set())
        for (npi, procedure, day), billed in services.items():
            key = service_piece(npi, day)
            by_procedure = state.pieces.setdefault(key, ({}, set()))[0]
            by_procedure[procedure] = {amount: [claims[i] for i in found] for amount, found in billed.items()}
        state.changed.update(state.pieces)
    for key, claim in pending.items():
        state.add_pending(key, claim, _UPGRADE)
    return state


def state_bytes(state: MemberState) -> int:
    """The state's size as Flink keeps it: its own part and every piece, pickled."""
    # B403 - dumps only, to measure what Flink's pickled state holds; nothing is loaded
    import pickle

    return len(pickle.dumps(state_to_plain(state))) + sum(len(pickle.dumps(p)) for p in state.pieces.values())


# The signal rows the job writes (Iceberg fraud_signals, ops.fraud_signals), in this order.
SIGNAL_FIELDS = ["signal_id", "rule", "member_token", "provider_npi", "service_date", "evidence_count", "threshold",
                 "evidence_keys", "feed", "detected_at_ms", "ingested_at_ms", "dt"]
SIGNAL_INT_FIELDS = frozenset({"evidence_count", "threshold"})
SIGNAL_LONG_FIELDS = frozenset({"detected_at_ms", "ingested_at_ms"})


def signal_values(signal: Signal, detected_at_ms: int) -> tuple[Any, ...]:
    """A signal's row, in SIGNAL_FIELDS order; `dt` is the day it was detected (UTC), the table's partition."""
    from datetime import UTC, datetime

    day = datetime.fromtimestamp(detected_at_ms / 1000, UTC).date().isoformat()
    return (signal.signal_id, signal.rule, signal.member, signal.provider_npi, signal.service_date,
            signal.evidence_count, signal.threshold, ",".join(signal.evidence_keys), signal.feed, detected_at_ms,
            signal.ingested_at_ms, day)

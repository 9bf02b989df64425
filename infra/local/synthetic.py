"""Deterministic synthetic claim, payment and eligibility feeds: fake people only, no I/O but the manifest."""

from __future__ import annotations

import bisect
import functools
import hashlib
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import orjson
from faker import Faker

from schemas import SCHEMA_VERSION
from udfs.npi import npi_check_digit

RecordType = Literal["claim", "payment", "eligibility"]
RECORD_TYPES: tuple[RecordType, ...] = ("claim", "payment", "eligibility")
Transport = Literal["kafka", "landing"]
Expect = Literal["valid", "invalid"]
INVALID_KINDS: tuple[str, ...] = (
    "malformed_json", "not_an_object", "missing_required", "wrong_type", "bad_enum", "bad_format", "hostile_text",
)
DEFAULT_START = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
_RECENT = 4096  # how far back a duplicate re-send may reach


@dataclass(frozen=True)
class Feed:
    """A partner feed: its name, the record type it carries and how it arrives."""

    name: str
    record_type: RecordType
    transport: Transport
    # Wire format (a feed contract's format.type). Only json feeds get corrupted records: the
    # other formats are encoded from valid canonical records (infra.local.feed_encoding).
    format: str = "json"

    @property
    def topic(self) -> str:
        """Kafka topic the feed lands on (`raw.<feed>`)."""
        return f"raw.{self.name}"


def feeds_from_contracts(contracts: Iterable[Any]) -> tuple[Feed, ...]:
    """One Feed per feed contract of a record type made here: Kafka when the contract accepts it, else the landing
    prefix. Device-event feeds are infra.local.device_events' (they need a timeline, not a mix)."""
    return tuple(Feed(c.feed, c.record_type, "kafka" if "kafka" in c.sources else "landing", c.format)
                 for c in contracts if c.record_type in RECORD_TYPES)


DEFAULT_FEEDS: tuple[Feed, ...] = (
    Feed("hospital_a_claims", "claim", "kafka"),
    Feed("insurer_b_payments", "payment", "kafka"),
    Feed("clearinghouse_c_eligibility", "eligibility", "landing"),
    Feed("hospital_d_claims", "claim", "landing"),
)


@dataclass(frozen=True)
class Mix:
    """Relative weights of record types in the generated stream."""

    claim: float = 0.6
    payment: float = 0.25
    eligibility: float = 0.15

    def weight(self, record_type: RecordType) -> float:
        """Return the weight of `record_type`."""
        return float(getattr(self, record_type))


@dataclass(frozen=True)
class Generated:
    """One record as sent on the wire, plus what the pipeline is expected to do with it."""

    record_id: str
    record_type: RecordType
    feed: str
    transport: Transport
    payload: bytes  # exact wire bytes; never contains a raw newline
    expect: Expect
    invalid_kind: str | None
    is_duplicate: bool
    payload_sha256: str  # hex; how the pipeline keys dead letters it cannot parse


def generate(
    n: int,
    seed: int,
    mix: Mix | None = None,
    duplicate_rate: float = 0.02,
    invalid_rate: float = 0.02,
    feeds: Sequence[Feed] = DEFAULT_FEEDS,
    size_kb: tuple[float, float] = (4, 12),
    start: datetime = DEFAULT_START,
    invalid_kinds: Sequence[str] = INVALID_KINDS,
    fraud_rate: float = 0.0,
) -> Iterator[Generated]:
    """Yield `n` records (duplicates and invalid ones included), identical for identical arguments.

    Valid records measure between size_kb[0] and size_kb[1] KiB unless their smallest possible
    shape is bigger (about 1.1 KiB). Duplicates are exact re-sends of earlier valid records.
    `fraud_rate`: the share of valid original claims that start a planted fraud pattern (FraudPlanter); the
    claims that follow carry it, the rest of the stream is the same as without.
    """
    if n < 0 or not 0 <= duplicate_rate <= 1 or not 0 <= invalid_rate <= 1 - duplicate_rate:
        raise ValueError("need n >= 0, 0 <= duplicate_rate, invalid_rate and their sum <= 1")
    unknown = set(invalid_kinds) - set(INVALID_KINDS)
    if unknown or not invalid_kinds:
        raise ValueError(f"invalid_kinds must be a non-empty subset of {INVALID_KINDS}")
    lo, hi = int(size_kb[0] * 1024), int(size_kb[1] * 1024)
    if not 0 < lo <= hi:
        raise ValueError(f"size_kb must be (lo, hi) with 0 < lo <= hi, got {size_kb}")
    feed_list, cum = _feed_weights(feeds, mix or Mix())
    pools = _build_pools(seed)
    # Wire randomness is seeded apart from the Faker pools so pool size changes do not reshuffle it.
    rng = _Rng(f"medistream-synthetic:{seed}")
    recent: list[Generated] = []
    start_ms = int(start.timestamp() * 1000)
    planter = FraudPlanter(seed, pools, fraud_rate)
    for i in range(n):
        roll = rng.random()
        if recent and roll < duplicate_rate:
            yield replace(recent[rng.below(len(recent))], is_duplicate=True)
            continue
        feed = rng.choices(feed_list, cum_weights=cum)[0]
        sent_ms = start_ms + i * 20 + rng.below(20)
        record_id = _ulid(sent_ms, rng.getrandbits(80))
        target = rng.between(lo, hi)
        record, payload = _BUILDERS[feed.record_type](
            rng, pools, _envelope(record_id, feed, sent_ms), target, hi
        )
        if roll < duplicate_rate + invalid_rate and feed.format == "json":
            kind = invalid_kinds[rng.below(len(invalid_kinds))]
            payload = _corrupt(rng, kind, feed.record_type, record, payload)
            yield _generated(record_id, feed, payload, "invalid", kind)
            continue
        if feed.record_type == "claim" and fraud_rate:
            payload = planter.plant(record, payload)
        item = _generated(record_id, feed, payload, "valid", None)
        if len(recent) < _RECENT:
            recent.append(item)
        else:
            recent[rng.below(_RECENT)] = item
        yield item


class FraudPlanter:
    """Plants the patterns of schemas/fraud/rules.yaml into generated claims, with its own random stream.

    A planted pattern is a run of original claims (frequency 1) rewritten as they are generated: `providers`
    claims of one member, one date of service, each from another billing provider (member_many_providers);
    or two claims of one member, provider, procedure and date billing different amounts (duplicate_service_amounts).
    Claims of members whose coverage ended or starts later (member_coverage) are the third rule's own.
    """

    def __init__(self, seed: int, pools: Pools, rate: float, providers: int = 4) -> None:
        self.rng, self.pools, self.rate, self.providers = _Rng(f"medistream-fraud:{seed}"), pools, rate, providers
        self.queue: list[dict[str, Any]] = []  # the rewrites of the next original claims
        self.planted = {"member_many_providers": 0, "duplicate_service_amounts": 0}

    def plant(self, record: dict[str, Any], payload: bytes) -> bytes:
        """The claim's wire bytes, rewritten when a pattern is being planted (or starts here)."""
        if record.get("frequency_code") != "1":
            return payload
        if not self.queue:
            if self.rng.random() >= self.rate:
                return payload
            self.queue = self._pattern(date.fromisoformat(record["sent_at"][:10]))
        rewrite = self.queue.pop(0)
        record["subscriber"] = rewrite["subscriber"]
        record["billing_provider"] = rewrite["billing_provider"]
        record["service_date_from"] = record["service_date_to"] = rewrite["day"]
        lines = record["service_lines"]
        for line in lines:
            line["service_date"] = rewrite["day"]
        if "procedure_code" in rewrite:
            lines[0]["procedure_code"], lines[0]["charge"] = rewrite["procedure_code"], rewrite["charge"]
            record["total_charge"] = _total(lines)
        return orjson.dumps(record)

    def _pattern(self, sent: date) -> list[dict[str, Any]]:
        rng, pools = self.rng, self.pools
        person, day = rng.pick(pools.people), (sent - timedelta(days=rng.between(2, 30))).isoformat()
        if rng.random() < 0.5:
            self.planted["member_many_providers"] += 1
            return [{"subscriber": person, "billing_provider": org, "day": day}
                    for org in rng.sample(pools.organizations, self.providers)]
        self.planted["duplicate_service_amounts"] += 1
        org, (code, _modifiers, _units, charge) = rng.pick(pools.organizations), rng.pick(pools.line_bodies)
        other = _money(Decimal(charge) + Decimal(rng.between(5, 400)))
        return [{"subscriber": person, "billing_provider": org, "day": day, "procedure_code": code, "charge": amount}
                for amount in (charge, other)]


def write_ground_truth(path: str | os.PathLike[str], generated: Iterable[Generated]) -> int:
    """Write one JSON line per record with ids and expectations only (no PHI); return the count."""
    count = 0
    with open(path, "wb") as fh:
        for g in generated:
            fh.write(orjson.dumps({
                "record_id": g.record_id, "record_type": g.record_type, "feed": g.feed,
                "expect": g.expect, "invalid_kind": g.invalid_kind,
                "is_duplicate": g.is_duplicate, "payload_sha256": g.payload_sha256,
            }) + b"\n")
            count += 1
    return count


def _feed_weights(feeds: Sequence[Feed], mix: Mix) -> tuple[list[Feed], list[float]]:
    """Spread each record type's weight evenly over the feeds carrying it."""
    per_type: dict[str, int] = {}
    for f in feeds:
        per_type[f.record_type] = per_type.get(f.record_type, 0) + 1
    for rt in RECORD_TYPES:
        if mix.weight(rt) < 0 or (mix.weight(rt) > 0 and rt not in per_type):
            raise ValueError(f"mix weight for {rt!r} is negative or no feed carries it")
    chosen = [f for f in feeds if mix.weight(f.record_type) > 0]
    if not chosen:
        raise ValueError("the mix gives no feed a positive weight")
    cum: list[float] = []
    total = 0.0
    for f in chosen:
        total += mix.weight(f.record_type) / per_type[f.record_type]
        cum.append(total)
    return chosen, cum


def _generated(record_id: str, feed: Feed, payload: bytes, expect: Expect, kind: str | None) -> Generated:
    return Generated(
        record_id=record_id, record_type=feed.record_type, feed=feed.name, transport=feed.transport,
        payload=payload, expect=expect, invalid_kind=kind, is_duplicate=False,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    )


def _envelope(record_id: str, feed: Feed, sent_ms: int) -> dict[str, Any]:
    return {
        "record_id": record_id, "record_type": feed.record_type, "schema_version": SCHEMA_VERSION,
        "feed": feed.name, "sent_at": _rfc3339(sent_ms),
    }


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid(ms: int, rand80: int) -> str:
    """Encode a ULID: 48-bit millisecond time then 80 random bits, Crockford base32."""
    value = (ms << 80) | rand80
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


# Each invalid kind as data: (path, replacement). A replacement of None deletes the key; a callable
# maps the current value. record_id is never touched so every parseable dead letter stays keyed.
_Path = tuple[str | int, ...]
_Mutation = tuple[_Path, Any]
_SL0 = ("service_lines", 0)
_CL0 = ("claims", 0)
_MUTATIONS: dict[str, dict[str, tuple[_Mutation, ...]]] = {
    "claim": {
        "missing_required": ((("claim_id",), None), (("total_charge",), None), (("sent_at",), None),
                             (("subscriber", "member_id"), None), ((*_SL0, "charge"), None)),
        "wrong_type": (((*_SL0, "charge"), float), (("total_charge",), float),
                       ((*_SL0, "units"), str), (("diagnoses",), lambda v: v[0])),
        "bad_enum": ((("frequency_code",), lambda v: "9"), (("subscriber", "gender"), lambda v: "X")),
        # Formats standardization cannot repair (it does fix case, ISO variants and short cents).
        # Schema-valid text that the hygiene step refuses (udfs/hygiene.py): formulas, controls, bidi.
        "hostile_text": ((("subscriber", "first_name"), lambda v: "=" + v), (("subscriber", "last_name"),
                         lambda v: v + "\u202e"), (("billing_provider", "address", "line1"), lambda v: "@" + v),
                         (("subscriber", "last_name"), lambda v: v[:1] + "\x00" + v[1:])),
        "bad_format": ((("service_date_from",), lambda v: f"{v[:4]}-13-{v[8:10]}"),
                       (("subscriber", "address", "state"), lambda v: v + "X"),
                       (("diagnoses", 0), lambda v: "9" + v[1:]), (("billing_provider", "npi"), lambda v: v[:9]),
                       (("sent_at",), lambda v: "yesterday")),
    },
    "payment": {
        "missing_required": ((("payment_amount",), None), (("trace_number",), None),
                             ((*_CL0, "paid"), None), (("payee", "npi"), None)),
        "wrong_type": ((("payment_amount",), float), ((*_CL0, "paid"), float),
                       ((*_CL0, "lines", 0, "units"), str)),
        "bad_enum": ((("method",), lambda v: "WIR"),
                     ((*_CL0, "lines", 0, "adjustments", 0, "group_code"), lambda v: "XX")),
        "hostile_text": ((("payee", "name"), lambda v: "+" + v + "|cmd"), ((*_CL0, "patient", "first_name"),
                         lambda v: "\u2066" + v), ((*_CL0, "patient", "last_name"), lambda v: v[:1] + "\n" + v[1:])),
        "bad_format": ((("payment_date",), lambda v: f"{v[5:7]}/{v[8:10]}/{v[:4]}"),
                       (("payee", "npi"), lambda v: v[:9]), ((*_CL0, "charge"), lambda v: v + "5")),
    },
    "eligibility": {
        "missing_required": ((("member",), None), (("coverage", "maintenance_type_code"), None),
                             (("member", "last_name"), None), (("subscriber_id",), None)),
        "wrong_type": ((("member", "birth_date"), lambda v: int(v.replace("-", ""))),
                       (("member", "ssn"), int), (("dependents",), lambda v: {})),
        "bad_enum": ((("coverage", "maintenance_type_code"), lambda v: "099"),
                     (("plan", "coverage_level"), lambda v: "XYZ"), (("relationship",), lambda v: "99")),
        "hostile_text": ((("member", "first_name"), lambda v: "-" + v + "+1"), (("member", "last_name"),
                         lambda v: "\u202d" + v), (("member", "address", "line1"), lambda v: v + "\x1b")),
        "bad_format": ((("member", "address", "state"), lambda v: v + "X"),
                       (("member", "ssn"), lambda v: f"{v[:3]}-{v[3:5]}-{v[5:]}"),
                       (("member", "address", "zip"), lambda v: v[:4])),
    },
}


def _corrupt(rng: _Rng, kind: str, record_type: str, record: dict[str, Any], payload: bytes) -> bytes:
    """Return the wire bytes of `record` broken in the way `kind` names."""
    if kind == "malformed_json":
        # Any strict prefix of a JSON object is unparseable: its closing brace is gone.
        return payload[: rng.between(len(payload) // 4, len(payload) - 1)]
    if kind == "not_an_object":
        # A list around the record, or the record double-encoded as a string (a common producer bug).
        return orjson.dumps([record]) if rng.random() < 0.5 else orjson.dumps(payload.decode())
    copy = orjson.loads(payload)
    path, change = rng.pick(_MUTATIONS[record_type][kind])
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    if change is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = change(parent[path[-1]])
    return orjson.dumps(copy)


# --- reference data: real code formats, small on purpose ------------------------------------------
_ICD10 = (
    "E11.9", "I10", "J06.9", "M54.50", "Z00.00", "E78.5", "K21.9", "F41.1", "J45.909", "N39.0",
    "R05.9", "M25.561", "Z23", "E66.9", "I25.10", "J20.9", "R51.9", "G43.909", "L03.115",
    "S93.401A", "Z79.4", "E03.9", "K59.00", "R10.9", "H52.4", "U07.1", "Z01.419", "M17.11",
)
# (code, typical charge in cents)
_PROCEDURES = (
    ("99213", 13500), ("99214", 19800), ("99215", 26500), ("99203", 16700), ("99204", 25500),
    ("80053", 4800), ("85025", 3200), ("36415", 1500), ("93000", 6200), ("71046", 11800),
    ("81001", 1800), ("87880", 2900), ("90471", 3100), ("90686", 4200), ("97110", 8900),
    ("97140", 7900), ("20610", 21500), ("73030", 9800), ("83036", 3600), ("80061", 4400),
    ("G0439", 19500), ("G0438", 27000), ("J1100", 900), ("J3301", 1600), ("G0008", 3500),
)
_MODIFIERS = ("25", "59", "LT", "RT", "26", "TC", "95", "GT")
_POS = ("11", "11", "11", "11", "22", "23", "02", "81")
_AREA_CODES = ("206", "312", "415", "512", "602", "617", "704", "720", "801", "919")
_CENT = Decimal("0.01")


class _Rng(random.Random):
    """Seeded Random with cheap draws: randrange's argument checks topped the generator's profile."""

    def below(self, n: int) -> int:
        """Return an int in [0, n)."""
        return int(self.random() * n)

    def between(self, a: int, b: int) -> int:
        """Return an int in [a, b]."""
        return a + int(self.random() * (b - a + 1))

    def pick(self, seq: Sequence[Any]) -> Any:
        """Return one element of `seq`."""
        return seq[int(self.random() * len(seq))]


@dataclass(frozen=True)
class Pools:
    """Fake people, providers and payers built once per seed so records cost no Faker calls."""

    people: tuple[dict[str, Any], ...]
    ssns: tuple[str, ...]
    providers: tuple[dict[str, str], ...]
    organizations: tuple[dict[str, Any], ...]
    payers: tuple[dict[str, str], ...]
    notes: tuple[str, ...]
    note_ends: tuple[int, ...]  # note_ends[i]: bytes of notes[0:i] as JSON items with a comma each, over 2 laps
    filler: str  # long plain text that padding cuts to an exact length
    line_bodies: tuple[tuple[str, tuple[str, ...], int, str], ...]  # priced claim lines
    remit_lines: tuple[tuple[Any, ...], ...]  # adjudicated lines, paid
    denied_lines: tuple[tuple[Any, ...], ...]  # adjudicated lines, denied


@functools.lru_cache(maxsize=4)
def _build_pools(seed: int) -> Pools:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = _Rng(f"medistream-pools:{seed}")

    def address() -> dict[str, str]:
        return {"line1": fake.street_address()[:55], "city": fake.city()[:30],
                "state": fake.state_abbr(include_territories=False), "zip": fake.zipcode()}

    def npi() -> str:
        body = f"{rng.pick('12')}{rng.below(10**8):08d}"
        return body + str(npi_check_digit(body))

    people = []
    for _ in range(1500):
        gender = rng.pick("MMMMFFFFFU")
        first = fake.first_name_female() if gender == "F" else fake.first_name_male()
        people.append({
            "member_id": f"W{rng.below(10**9):09d}", "first_name": first, "last_name": fake.last_name(),
            # Birth dates come from rng, not Faker's date_of_birth, which depends on today's date.
            "birth_date": (date(1935, 1, 1) + timedelta(days=rng.below(32000))).isoformat(),
            "gender": gender, "address": address(),
            # 555-0100..0199 is reserved for fiction, so no real subscriber is ever dialled.
            "phone": f"+1{rng.pick(_AREA_CODES)}55501{rng.below(100):02d}",
        })
    # Area 9xx is never issued as an SSN, and groups 01-49 are outside every ITIN range.
    ssns = tuple(f"9{rng.below(100):02d}{rng.between(1, 49):02d}{rng.between(1, 9999):04d}"
                 for _ in people)
    providers = tuple({"npi": npi(), "name": f"{fake.first_name()} {fake.last_name()}"[:60]}
                      for _ in range(300))
    organizations = tuple({"npi": npi(), "name": f"{fake.last_name()} Medical Group",
                           "tax_id": f"{rng.between(10, 99)}{rng.below(10**7):07d}", "address": address()}
                          for _ in range(60))
    payers = tuple({"payer_id": f"{rng.between(10000, 99999)}", "name": f"{fake.last_name()} Health Plan"}
                   for _ in range(12))
    notes: list[str] = []
    while len(notes) < 400:
        text = fake.sentence(nb_words=rng.between(6, 14))
        # Plain ASCII without quotes or backslashes: one char is one byte on the wire, so padding is exact.
        if len(text) <= 80 and text.isascii() and '"' not in text and "\\" not in text:
            notes.append(text)
    ends = [0]
    for i in range(2 * len(notes)):
        ends.append(ends[-1] + len(notes[i % len(notes)]) + 3)
    bodies = _priced_lines(rng, 2048)
    return Pools(
        tuple(people), ssns, providers, organizations, payers, tuple(notes), tuple(ends), " ".join(notes[:20]),
        bodies, tuple(_remit(rng, b, False) for b in bodies), tuple(_remit(rng, b, True) for b in bodies[:256]),
    )


def _rfc3339(ms: int) -> str:
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _money(d: Decimal) -> str:
    return str(d.quantize(_CENT))


def _fit(record: dict[str, Any], target: int, hi: int, shrink: Callable[[], bool],
         rng: _Rng, pools: Pools) -> bytes:
    """Drop structure until the record fits under `hi`, then pad `notes` to exactly `target` bytes."""
    notes: list[str] = []
    record["notes"] = notes
    data = orjson.dumps(record)
    while len(data) > hi and shrink():
        data = orjson.dumps(record)
    room = target - len(data)
    if room < 3:
        return data
    # A run of consecutive pool notes from a random start: one bisect instead of one draw per note.
    # n notes cost their encoded lengths plus n - 1 commas; ends[] counts a comma for every note.
    texts, ends = pools.notes, pools.note_ends
    start = rng.below(len(texts))
    stop = bisect.bisect_right(ends, ends[start] + room + 1, start, start + len(texts) + 1) - 1
    notes.extend(texts[i % len(texts)] for i in range(start, stop))
    if notes:
        room -= ends[stop] - ends[start] - 1
        if 0 < room < 4:  # too small for one more note: re-cut the last one instead
            room += len(notes.pop()) + (3 if notes else 2)
    # Cut filler so the record lands on its target size to the byte, each note at most 80 chars.
    while room > 0:
        comma = 1 if notes else 0
        m = room - 2 - comma if room - 2 - comma <= 80 else min(80, room - 2 - comma - 4)
        off = rng.below(len(pools.filler) - 80)
        text = pools.filler[off:off + m]
        notes.append(("." + text[1:]) if text[0] == " " else text)
        room -= m + 2 + comma
    return orjson.dumps(record)


def _claim_lines(rng: _Rng, pools: Pools, n: int, n_dx: int, day_from: date, span: int
                 ) -> list[dict[str, Any]]:
    # The generator's hot loop: priced line bodies come from the pool, so a line costs three draws.
    days = [(day_from + timedelta(days=k)).isoformat() for k in range(span + 1)]
    r, bodies = rng.random, pools.line_bodies
    lines = []
    for i in range(1, n + 1):
        code, modifiers, units, charge = bodies[int(r() * len(bodies))]
        first = 1 + int(r() * n_dx)
        lines.append({
            "line_number": i, "procedure_code": code, "modifiers": list(modifiers),
            "diagnosis_pointers": list(range(first, first + 1 + int(r() * min(4, n_dx - first + 1)))),
            "units": units, "charge": charge, "service_date": days[int(r() * len(days))],
        })
    return lines


def _build_claim(rng: _Rng, pools: Pools, env: dict[str, Any], target: int, hi: int
                 ) -> tuple[dict[str, Any], bytes]:
    sent = date.fromisoformat(env["sent_at"][:10])
    day_to = sent - timedelta(days=rng.between(1, 45))
    span = rng.pick((0, 0, 0, 1, 3))
    day_from = day_to - timedelta(days=span)
    dx = rng.sample(_ICD10, rng.between(1, 6))
    lines = _claim_lines(rng, pools, rng.between(1, max(1, min(50, (target - 1500) // 210))), len(dx), day_from, span)
    record: dict[str, Any] = {
        **env, "claim_id": f"C{rng.getrandbits(56):014X}",
        "frequency_code": rng.choices(("1", "7", "8"), cum_weights=(90, 97, 100))[0],
        "payer": rng.pick(pools.payers), "billing_provider": rng.pick(pools.organizations),
        "rendering_provider": rng.pick(pools.providers), "subscriber": rng.pick(pools.people),
    }
    if rng.random() < 0.3:
        record["patient"] = {**rng.pick(pools.people), "relationship_code": rng.pick(("01", "19", "19", "G8"))}
    record.update({
        "diagnoses": dx, "service_lines": lines, "total_charge": _total(lines),
        "service_date_from": day_from.isoformat(), "service_date_to": day_to.isoformat(),
        "place_of_service": rng.pick(_POS),
    })
    if rng.random() < 0.5:
        record["received_at"] = _rfc3339(_ms(env["sent_at"]) - rng.between(1000, 3_600_000))

    def shrink() -> bool:
        if len(lines) > 1:
            lines.pop()
            record["total_charge"] = _total(lines)
            return True
        # One line left: optional parts go next, smallest record last (about 1 KiB).
        for key in ("received_at", "patient", "rendering_provider"):
            if key in record:
                del record[key]
                return True
        if len(dx) > 1:
            del dx[1:]
            lines[0]["diagnosis_pointers"] = [1]
            return True
        return False

    return record, _fit(record, target, hi, shrink, rng, pools)


def _paid_claim(rng: _Rng, pools: Pools, sent: date) -> dict[str, Any]:
    person = rng.pick(pools.people)
    denied = rng.random() < 0.08
    bodies = pools.denied_lines if denied else pools.remit_lines
    day = (sent - timedelta(days=rng.between(10, 60))).isoformat()
    lines = []
    for i in range(1, rng.between(1, 4) + 1):
        code, modifiers, units, charge, paid, adjustments = rng.pick(bodies)
        lines.append({
            "line_number": i, "procedure_code": code, "modifiers": list(modifiers), "units": units,
            "charge": charge, "paid": paid, "service_date": day, "adjustments": [dict(a) for a in adjustments],
        })
    claim = {
        "claim_id": f"C{rng.getrandbits(56):014X}", "status_code": "4" if denied else rng.pick("1112"),
        "patient": {k: person[k] for k in ("member_id", "first_name", "last_name")},
        "charge": "", "paid": "", "patient_responsibility": "", "adjustments": [], "lines": lines,
    }
    _settle(claim)
    return claim


def _priced_lines(rng: _Rng, n: int) -> tuple[tuple[str, tuple[str, ...], int, str], ...]:
    """Price `n` line bodies: (procedure_code, modifiers, units, charge) at 90-130 % of the usual fee."""
    out = []
    for _ in range(n):
        code, base = rng.pick(_PROCEDURES)
        units = 1 if rng.random() < 0.8 else rng.between(2, 4)
        charge = Decimal(base * units * rng.between(90, 130)) / 10000
        out.append((code, (rng.pick(_MODIFIERS),) if rng.random() < 0.2 else (), units, _money(charge)))
    return tuple(out)


def _remit(rng: _Rng, body: tuple[str, tuple[str, ...], int, str], denied: bool) -> tuple[Any, ...]:
    """Adjudicate one line body: (code, modifiers, units, charge, paid, adjustments)."""
    code, modifiers, units, charge_s = body
    charge = Decimal(charge_s)
    if denied:
        denial = {"group_code": "CO", "reason_code": "50", "amount": charge_s}
        return code, modifiers, units, charge_s, "0.00", (denial,)
    # charge = paid + contractual write-off (CO-45) + coinsurance (PR-2), to the cent.
    allowed = (charge * rng.between(40, 90) / 100).quantize(_CENT)
    patient = (allowed * rng.pick((0, 0, 10, 20)) / 100).quantize(_CENT)
    adjustments = [{"group_code": "CO", "reason_code": "45", "amount": _money(charge - allowed)}]
    if patient:
        adjustments.append({"group_code": "PR", "reason_code": "2", "amount": _money(patient)})
    return code, modifiers, units, charge_s, _money(allowed - patient), tuple(adjustments)


def _settle(claim: dict[str, Any]) -> None:
    """Set a remitted claim's totals from its lines."""
    lines = claim["lines"]
    claim["charge"] = _total(lines)
    claim["paid"] = _total(lines, "paid")
    claim["patient_responsibility"] = _money(sum(
        (Decimal(a["amount"]) for x in lines for a in x["adjustments"] if a["group_code"] == "PR"), Decimal(0)))


def _build_payment(rng: _Rng, pools: Pools, env: dict[str, Any], target: int, hi: int
                   ) -> tuple[dict[str, Any], bytes]:
    sent = date.fromisoformat(env["sent_at"][:10])
    claims: list[dict[str, Any]] = []
    payee = rng.pick(pools.organizations)
    record: dict[str, Any] = {
        **env, "payment_id": f"P{rng.getrandbits(56):014X}", "trace_number": f"{rng.below(10**12):012d}",
        "payer": rng.pick(pools.payers), "payee": {"npi": payee["npi"], "name": payee["name"]},
        "payment_date": (sent - timedelta(days=rng.between(0, 3))).isoformat(), "payment_amount": "",
        "method": rng.pick(("ACH", "ACH", "ACH", "CHK")), "claims": claims,
    }
    # Claims fill 60-100 % of the target; notes pad the rest, so sizes spread evenly.
    budget = target * rng.between(60, 100) // 100 - len(orjson.dumps(record)) - 40
    while not claims or budget > 0:
        claim = _paid_claim(rng, pools, sent)
        cost = len(orjson.dumps(claim)) + 1
        if claims and cost > budget:
            break
        claims.append(claim)
        budget -= cost
    record["payment_amount"] = _total(claims, "paid")

    def shrink() -> bool:
        if len(claims) > 1:
            claims.pop()
        elif len(claims[0]["lines"]) > 1:
            claims[0]["lines"].pop()
            _settle(claims[0])
        else:
            return False
        record["payment_amount"] = _total(claims, "paid")
        return True

    return record, _fit(record, target, hi, shrink, rng, pools)


def _total(items: list[dict[str, Any]], key: str = "charge") -> str:
    """Sum decimal-string amounts exactly."""
    return _money(sum((Decimal(x[key]) for x in items), Decimal(0)))


def _ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp() * 1000)


def _build_eligibility(rng: _Rng, pools: Pools, env: dict[str, Any], target: int, hi: int
                       ) -> tuple[dict[str, Any], bytes]:
    sent = date.fromisoformat(env["sent_at"][:10])
    idx = rng.below(len(pools.people))
    member = {**pools.people[idx], "ssn": pools.ssns[idx]}
    is_subscriber = rng.random() < 0.7
    dependents: list[dict[str, Any]] = []
    if is_subscriber:
        for rel in rng.pick(((), (), ("01",), ("19",), ("19", "19"), ("01", "19", "19"), ("01", "19", "19", "19"))):
            taken = {member["member_id"], *(d["member_id"] for d in dependents)}
            dep = rng.pick(pools.people)
            # A family lists each person once, and its people share a coverage class: an 834's dependents are
            # records of their own with the family's coverage, so each person's span is the same in every record.
            while dep["member_id"] in taken or coverage_class(dep["member_id"]) != coverage_class(member["member_id"]):
                dep = rng.pick(pools.people)
            dependents.append({**{k: dep[k] for k in ("member_id", "first_name", "birth_date", "gender")},
                               "last_name": member["last_name"], "relationship": rel})
    rels = {d["relationship"] for d in dependents}
    level = {frozenset(): "EMP", frozenset({"01"}): "ESP", frozenset({"19"}): "ECH"}.get(frozenset(rels), "FAM")
    maintenance = rng.choices(("021", "030"), cum_weights=(78, 100))[0]  # terminations (024) are class 6's
    coverage = member_coverage(member["member_id"], sent, maintenance)
    record: dict[str, Any] = {
        **env, "member": member,
        "subscriber_id": member["member_id"] if is_subscriber else rng.pick(pools.people)["member_id"],
        "relationship": "18" if is_subscriber else rng.pick(("01", "19")),
        "plan": {"plan_code": rng.pick(("PPO500", "PPO1000", "HMO250", "HDHP3000", "EPO750")),
                 "group_number": f"G{rng.between(10000, 99999)}", "coverage_level": level},
        "coverage": coverage, "dependents": dependents,
    }

    def shrink() -> bool:
        if not dependents:
            return False
        dependents.clear()
        record["plan"]["coverage_level"] = "EMP"
        return True

    return record, _fit(record, target, hi, shrink, rng, pools)


COVERAGE_CLASSES = 8


def coverage_class(member_id: str) -> int:
    """A person's coverage class (0-7), from their member id: every eligibility record of theirs has its span."""
    return hashlib.sha256(member_id.encode()).digest()[0] % COVERAGE_CLASSES


def member_coverage(member_id: str, sent: date, maintenance: str = "021") -> dict[str, str]:
    """A person's coverage span as their eligibility records carry it (sent: the record's send date).

    One span per person, so the fraud rule `service_outside_eligibility` has one answer whatever order the
    records arrive in. Claims are for services 1-48 days before they are sent: classes 0-4 and 7 cover them all;
    class 5 starts on the first of the send month (services before it are outside); class 6 ended two months
    before (terminated, maintenance 024): those are the planted "outside eligibility" patterns.
    """
    cls = coverage_class(member_id)
    first = date(sent.year, sent.month, 1)
    if cls == 5:
        return {"start_date": first.isoformat(), "maintenance_type_code": maintenance}
    if cls == 6:
        end = (first - timedelta(days=1)).replace(day=1) - timedelta(days=1)
        return {"start_date": date(end.year - 2, end.month, 1).isoformat(), "maintenance_type_code": "024",
                "end_date": end.isoformat()}
    return {"start_date": date(sent.year - 1 - cls % 3, 1 + (cls * 5) % 12, 1).isoformat(),
            "maintenance_type_code": maintenance}


_Builder = Callable[[_Rng, Pools, dict[str, Any], int, int], tuple[dict[str, Any], bytes]]
_BUILDERS: dict[str, _Builder] = {
    "claim": _build_claim, "payment": _build_payment, "eligibility": _build_eligibility,
}

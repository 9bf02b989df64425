"""X12 5010 decoder: one interchange (837P, 837I, 835 or 834) -> canonical claim, payment or eligibility records.

Options (the feed contract's format.options): `transaction` is one of 837P, 837I, 835, 834 and must
match the interchange (GS01/GS08, ST01/ST03); `timezone` (IANA name, default UTC) is the zone of the
sender's X12 times, which carry none. Records hold the canonical body, `record_type` and `sent_at`
(BHT04/05 for an 837, BGN03/04/05 for an 834, GS04/05 for an 835); the pipeline adds record_id,
feed and schema_version.

Failure granularity: a broken interchange or group envelope raises Rejected when decode() is called,
before any record is yielded; a broken ST/SE set yields one error Item and the other sets still
decode; a claim, payment or member missing what the canonical record needs yields its own error Item.
Work is linear in the payload: str.split on the delimiters, no regular expressions, no recursion.
Why not a library: docs/decisions/0003-x12-library.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from udfs.decoders import Item
from udfs.decoders.x12_834 import members
from udfs.decoders.x12_835 import payments
from udfs.decoders.x12_837 import claims
from udfs.decoders.x12_elements import zone
from udfs.decoders.x12_envelope import Transaction, TransactionSet, read_interchange

TRANSACTIONS: dict[str, Transaction] = {
    "837P": Transaction("837", "HC", "005010X222A1"),
    "837I": Transaction("837", "HC", "005010X223A2"),
    "835": Transaction("835", "HP", "005010X221A1"),
    "834": Transaction("834", "BE", "005010X220A1"),
}
_PARSERS: dict[str, Callable[[TransactionSet, ZoneInfo], Iterator[Item]]] = {
    "837P": lambda ts, tz: claims(ts, "P", tz),
    "837I": lambda ts, tz: claims(ts, "I", tz),
    "835": payments,
    "834": members,
}


def check_options(options: Mapping[str, Any]) -> None:
    """Validate a feed's X12 options (at start-up); raise ValueError naming the bad key."""
    unknown = sorted(set(options) - {"transaction", "timezone"})
    if unknown:
        raise ValueError(f"x12 options: unknown option(s) {unknown}")
    if options.get("transaction") not in TRANSACTIONS:
        raise ValueError(f"X12 option 'transaction' must be one of {sorted(TRANSACTIONS)}")
    zone(str(options.get("timezone", "UTC")))


def decode(payload: bytes, options: Mapping[str, Any]) -> Iterator[Item]:
    """Decode one X12 interchange; raises Rejected now if its envelope is broken, else yields its records."""
    name = options.get("transaction")
    if name not in TRANSACTIONS:
        # A contract error, not a bad record: fail the job loudly rather than dead-letter every unit.
        raise ValueError(f"X12 option 'transaction' must be one of {sorted(TRANSACTIONS)}, got {name!r}")
    tz = zone(str(options.get("timezone", "UTC")))
    sets = read_interchange(payload, TRANSACTIONS[name])
    return _items(sets, _PARSERS[name], tz)


def _items(sets: list[TransactionSet], parse: Callable[[TransactionSet, ZoneInfo], Iterator[Item]], tz: ZoneInfo
           ) -> Iterator[Item]:
    for ts in sets:
        if ts.error is not None:
            yield Item(ts.position, error=ts.error)
        else:
            yield from parse(ts, tz)

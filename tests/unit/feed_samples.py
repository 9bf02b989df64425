"""Valid synthetic input per shipped feed contract, for the tests that run whole units through the stage."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson

from infra.local import synthetic
from infra.local.feed_encoding import encode_unit
from schemas.contracts import FeedContract
from udfs.source import SourceRef


def payloads(contract: FeedContract, n: int, seed: int) -> list[bytes]:
    """`n` valid, distinct canonical records (1-2 KiB) of the contract's record type, as JSON."""
    if contract.record_type == "device_event":  # in-order readings only (smaller than 1 KiB: a monitor's event)
        from infra.local.device_events import Rates, generate_device_events

        plain = Rates(out_of_order=0, allowed_late=0, late=0, clock_skew=0, duplicate=0, invalid=0)
        return [e.payload for e in generate_device_events(n, seed, devices=2, rates=plain, now_ms=1_750_000_000_000,
                                                          feed=contract.feed)]
    feeds = synthetic.feeds_from_contracts([contract])
    mix = synthetic.Mix(**{t: float(t == contract.record_type) for t in ("claim", "payment", "eligibility")})
    return [g.payload for g in synthetic.generate(n, seed=seed, feeds=feeds, mix=mix, invalid_rate=0.0,
                                                  duplicate_rate=0.0, size_kb=(1, 2))]


def record(contract: FeedContract, seed: int) -> dict[str, Any]:
    """One valid canonical record of the contract's record type."""
    (payload,) = payloads(contract, 1, seed)
    decoded: dict[str, Any] = orjson.loads(payload)
    return decoded


def valid_unit(contract: FeedContract, n: int, seed: int) -> bytes:
    """One unit in the feed's own format: `n` records in a file, one in a Kafka message."""
    records = payloads(contract, n, seed)
    one_message = {"kafka", "kinesis"} & set(contract.sources)
    return encode_unit(contract, records[:1] if one_message else records)


def source(contract: FeedContract) -> SourceRef:
    """Where a unit of the feed comes from: its raw topic, or a file under its landing prefix."""
    if {"kafka", "kinesis"} & set(contract.sources):  # the Kinesis door lands on raw.<feed> too
        return SourceRef.from_kafka(f"raw.{contract.feed}", 0, 7)
    return SourceRef.from_file(f"/feeds/{contract.feed}/unit-0001", "s3://landing/feeds/")


# Values a broken feed might put anywhere: wrong types, empty and overlong text, near misses of patterns.
ODD_VALUES: tuple[Any, ...] = (None, True, 0, 1, -1, 1.0, 1.5, "", " ", "x" * 90, [], {}, ["A1"], {"a": 1},
                               "2024-02-30", "2024-13-01", "12.345", "+1", "AB\n", "1234\n", "99", " 12.50 ",
                               "007.00", "-0.00", "1,234.5", "02/30/2024", "2024-01-01T25:00:00Z", "e119", " tx ")


def decoded_records(record_type: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Generated records of one type as decoded JSON objects, invalid kinds included (unparseable ones left out)."""
    if record_type == "device_event":
        from infra.local.device_events import Rates, generate_device_events

        bent = Rates(out_of_order=0.1, allowed_late=0.1, late=0.1, clock_skew=0.1, duplicate=0.0, invalid=0.3)
        return [orjson.loads(e.payload) for e in generate_device_events(n, seed, devices=3, rates=bent,
                                                                        now_ms=1_780_000_000_000)]
    mix = synthetic.Mix(**{t: float(t == record_type) for t in ("claim", "payment", "eligibility")})
    out = []
    for g in synthetic.generate(n, seed=seed, mix=mix, invalid_rate=0.3, duplicate_rate=0.0, size_kb=(1, 6)):
        try:
            record = orjson.loads(g.payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _paths(sub, (*path, i))
    return found


def mutate(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of `record` with one seeded change: a key gone or added, a list emptied or overfilled, a value off."""
    out = copy.deepcopy(record)
    path = rng.choice(_paths(out)[1:])
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    value = parent[last]
    move = rng.randrange(7)
    if move == 0 and isinstance(parent, dict):
        del parent[last]
    elif move == 1 and isinstance(value, dict):
        value["unknown_field"] = "x"
    elif move == 2 and isinstance(value, list):
        value.extend(value[:1] * 60 if value else [])
    elif move == 3 and isinstance(value, list):
        value.clear()
    elif move == 4 and isinstance(value, str):
        parent[last] = rng.choice((value + "\n", value + "X", value[:-1], value.lower(), " " + value, value * 3))
    else:
        parent[last] = rng.choice(ODD_VALUES)
    return out

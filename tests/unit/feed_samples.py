"""Valid synthetic input per shipped feed contract, for the tests that run whole units through the stage."""

from __future__ import annotations

from typing import Any

import orjson

from infra.local import synthetic
from infra.local.feed_encoding import encode_unit
from schemas.contracts import FeedContract
from udfs.source import SourceRef


def payloads(contract: FeedContract, n: int, seed: int) -> list[bytes]:
    """`n` valid, distinct canonical records (1-2 KiB) of the contract's record type, as JSON."""
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
    return encode_unit(contract, records if "kafka" not in contract.sources else records[:1])


def source(contract: FeedContract) -> SourceRef:
    """Where a unit of the feed comes from: its raw topic, or a file under its landing prefix."""
    if "kafka" in contract.sources:
        return SourceRef.from_kafka(f"raw.{contract.feed}", 0, 7)
    return SourceRef.from_file(f"/feeds/{contract.feed}/unit-0001", "s3://landing/feeds/")

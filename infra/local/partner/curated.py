"""Synthetic curated partner records, as the ingest job writes them, protected with the local stack's KMS keys.

For the delivery job's tests and bench: generated records (never real people) go through the real
ingest stage (decode, validate, protect, route) with the keys the job itself would use, and the ones
routed to the partner become curated messages in PARTNER_CURATED_COLUMNS form. Producing them to the
curated topic is transactional, as the ingest job does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from connectors.kms import PhiConfig
from udfs.curated import PARTNER_CURATED_COLUMNS


def kms_protectors(phi: PhiConfig, policies: Iterable[str]) -> dict[str, Any]:
    """Protectors over the stack's KMS keys and token secret, as the ingest operator builds them."""
    from connectors.kms import KmsDataKeys, aws_client, configured_token_keys
    from schemas.phi_policy import load_policy
    from udfs.phi.envelope import DataKeyCache
    from udfs.phi.protect import Protector
    from udfs.phi.tokens import Tokenizer

    kms = aws_client(phi, "kms")
    tokenizer = Tokenizer(configured_token_keys(phi, kms))
    keys = DataKeyCache(KmsDataKeys(kms, phi.alias_prefix), phi.data_key_max_uses, phi.data_key_max_age_s)
    return {name: Protector(load_policy(name), tokenizer, keys) for name in set(policies)}


def curated_messages(n: int, seed: int, phi: PhiConfig, partner: str,
                     size_kb: tuple[float, float] = (4, 12)) -> Iterator[dict[str, Any]]:
    """Up to `n` curated messages for `partner` from the shipped feeds that route to it (deterministic ids)."""
    from infra.local.synthetic import Mix, feeds_from_contracts, generate
    from schemas.contracts import load_contracts
    from udfs.enrich import ReferenceData
    from udfs.ingest import Accepted, IngestStage
    from udfs.source import SourceRef

    contracts = {name: c for name, c in load_contracts().items()
                 if any(r.partner == partner for r in c.routes) and "kafka" in c.sources and c.format == "json"}
    if not contracts:
        raise ValueError(f"no shipped JSON Kafka feed routes to partner {partner}")
    stage = IngestStage(contracts, kms_protectors(phi, (c.phi_policy for c in contracts.values())), ReferenceData())
    produced = 0
    unit_ms = int(time.time() * 1000)
    carried = {c.record_type for c in contracts.values()}
    mix = Mix(**{t: (1.0 if t in carried else 0.0) for t in ("claim", "payment", "eligibility")})
    generated = generate(n * 4, seed, mix=mix, duplicate_rate=0, invalid_rate=0, size_kb=size_kb,
                         feeds=feeds_from_contracts(contracts.values()))
    for offset, item in enumerate(generated):
        source = SourceRef.from_kafka(f"raw.{item.feed}", 0, offset)
        for outcome in stage.process(item.payload, source, unit_ms):
            if isinstance(outcome, Accepted) and f"partner:{partner}" in outcome.routes:
                yield message(outcome, source.pointer())
                produced += 1
                if produced == n:
                    return


def message(accepted: Any, pointer: str) -> dict[str, Any]:
    """The curated message of an accepted record: the ingest operator's row, cut to the partner-topic columns."""
    from udfs.rows import accepted_texts, accepted_values

    row = accepted_texts(accepted_values(accepted, pointer, int(time.time() * 1000)))
    return {name: row[name] for name, _kind in PARTNER_CURATED_COLUMNS}


def produce(bootstrap: str, topic: str, messages: Iterable[Mapping[str, Any]], transactional_id: str,
            stamp_ingested: bool = True) -> int:
    """Write messages keyed by business key in one Kafka transaction; `stamp_ingested` sets ingested_at_ms now."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "enable.idempotence": True, "linger.ms": 5})
    producer.init_transactions(30)
    producer.begin_transaction()
    count = 0
    for doc in messages:
        value = dict(doc) | ({"ingested_at_ms": int(time.time() * 1000)} if stamp_ingested else {})
        producer.produce(topic, key=value["business_key"].encode(), value=json.dumps(value).encode())
        producer.poll(0)
        count += 1
    producer.commit_transaction(60)
    return count

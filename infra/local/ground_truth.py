"""What the sinks must hold for a set of generated records, derived from the records and contracts alone.

Accepted records are counted by business key (every format carries one; X12 carries no record id),
dead letters by record id (or payload hash when unparseable). Exact re-sends are dropped by dedup;
a record whose feed refuses enrichment misses is a dead letter each time it is sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from infra.local.reference import reference_data
from infra.local.synthetic import Generated
from schemas.contracts import FeedContract
from udfs.dead_letters import Rejected
from udfs.dedup import Digest, business_key
from udfs.enrich import enrich
from udfs.routing import resolve


def dead_letter_id(generated: Generated) -> str:
    """The read-back key of an invalid record: its record id, or its hash when it is not parseable."""
    return f"sha256:{generated.payload_sha256}" if generated.invalid_kind in ("malformed_json", "not_an_object") \
        else generated.record_id


def expected_keys(record: dict[str, Any], contract: FeedContract, digest: Digest) -> list[str]:
    """Business keys the pipeline emits for one generated record (an 834 also emits its dependents)."""
    keys = [business_key(record, contract.record_type, digest)]
    if contract.format == "x12" and contract.record_type == "eligibility":
        for dependent in record.get("dependents", []):
            projected = {"member": {"member_id": dependent["member_id"]}, "plan": record.get("plan"),
                         "coverage": record["coverage"]}
            keys.append(business_key(projected, "eligibility", digest))
    return keys


def expected_outcome(generated: Iterable[Generated], contracts: Mapping[str, FeedContract], seed: int,
                     digest: Digest, *, all_payers: bool = False) -> dict[str, Any]:
    """Counters keyed like tools.readback.SinkCounts: claims and archived by business key, dead letters by id.

    `routed` holds business keys per routed sink ("iceberg:<record type>", "snowflake", "partner:<id>", and
    "operational:<record type>", where each key counts once per feed: the store keeps one row per feed and key),
    resolved from the contracts' routes as the job does. `digest` is the job's keyed business-key
    digest (tools.readback.linkage_digest). `all_payers`: with the reference data that knows every payer
    (infra.local.reference, version 2 with all_payers), as after a refresh and a backfill.
    """
    reference = reference_data(seed, all_payers=all_payers)
    claims: Counter[str] = Counter()
    archived: Counter[str] = Counter()
    dead: Counter[str] = Counter()
    routed: dict[str, Counter[str]] = {}
    stored: set[tuple[str, str]] = set()  # (feed, business key) rows of the operational store
    records = resends = 0
    for g in generated:
        records += 1
        if g.expect == "invalid":
            dead[dead_letter_id(g)] += 1
            continue
        contract = contracts[g.feed]
        record = orjson.loads(g.payload)
        if contract.on_miss == "dead_letter" and enrich(record, contract.record_type, reference, "flag").misses:
            dead[g.record_id] += 1
            continue
        try:
            # Route conditions read clear fields, which protection leaves as generated.
            sinks = resolve(contract.routes, record)
        except Rejected:
            dead[g.record_id] += 1
            continue
        if g.is_duplicate:
            resends += 1
            continue
        keys = expected_keys(record, contract, digest)
        archived.update(keys)
        if contract.record_type == "claim":
            claims.update(keys)
        for sink in sinks:
            if sink == "operational":  # current state: one row per feed and business key, whatever its versions
                current = routed.setdefault(f"operational:{contract.record_type}", Counter())
                current.update(key for key in keys if (g.feed, key) not in stored)
                stored.update((g.feed, key) for key in keys)
            elif sink != "archive":
                name = f"iceberg:{contract.record_type}" if sink == "iceberg" else sink
                routed.setdefault(name, Counter()).update(keys)
    return {"records": records, "claims": claims, "archived": archived, "dead_letters": dead,
            "resends_dropped": resends, "routed": routed}

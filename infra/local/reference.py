"""Synthetic reference data (payer directory, providers, plan codes) that matches the synthetic feeds.

Built from the same seeded pools as infra.local.synthetic, so lookups hit — except for one payer,
left out on purpose ("not yet onboarded"): its claims and payments exercise each feed's miss
policy, and publishing a newer version with `all_payers` shows a live refresh.
"""

from __future__ import annotations

from typing import Any

import orjson

from connectors.reference import reference_key
from infra.local.synthetic import _build_pools
from udfs.enrich import ReferenceData, parse_reference

PLAN_CODES = {
    "PPO500": {"name": "PPO 500", "line_of_business": "commercial", "metal_level": "gold"},
    "PPO1000": {"name": "PPO 1000", "line_of_business": "commercial", "metal_level": "silver"},
    "HMO250": {"name": "HMO 250", "line_of_business": "commercial", "metal_level": "platinum"},
    "HDHP3000": {"name": "HDHP 3000", "line_of_business": "commercial", "metal_level": "bronze"},
    "EPO750": {"name": "EPO 750", "line_of_business": "exchange", "metal_level": "silver"},
}
_LINES_OF_BUSINESS = ("commercial", "medicare_advantage", "medicaid_managed_care")
_TAXONOMIES = ("207Q00000X", "208D00000X", "207R00000X", "261QP2300X", "282N00000X")


def unknown_payer(seed: int) -> str:
    """The payer id version 1 of the directory leaves out."""
    return str(_build_pools(seed).payers[-1]["payer_id"])


def reference_documents(seed: int, version: int = 1, *, all_payers: bool = False) -> dict[str, dict[str, Any]]:
    """Dataset name -> reference document (udfs.enrich.parse_reference's shape) numbered `version`.

    Without `all_payers` the directory lacks unknown_payer(seed). Versions only move forward in a
    running job, so each publication needs a higher number than the last (the demo uses the time).
    """
    pools = _build_pools(seed)
    payers = pools.payers if all_payers else pools.payers[:-1]
    providers = {p["npi"]: {"taxonomy": _TAXONOMIES[i % len(_TAXONOMIES)], "organization_type": "group"}
                 for i, p in enumerate(pools.organizations)}
    providers |= {p["npi"]: {"taxonomy": _TAXONOMIES[i % len(_TAXONOMIES)], "organization_type": "individual"}
                  for i, p in enumerate(pools.providers)}
    return {
        "payer_directory": {"dataset": "payer_directory", "version": version, "entries": {
            p["payer_id"]: {"name": p["name"], "line_of_business": _LINES_OF_BUSINESS[i % 3]}
            for i, p in enumerate(payers)}},
        "providers": {"dataset": "providers", "version": version, "entries": providers},
        "plan_codes": {"dataset": "plan_codes", "version": version, "entries": PLAN_CODES},
    }


def reference_data(seed: int, version: int = 1, *, all_payers: bool = False) -> ReferenceData:
    """The same documents, parsed and held as the job holds them (for ground truth, tests, benchmarks)."""
    data = ReferenceData()
    data.update_all(parse_reference(orjson.dumps(doc))
                    for doc in reference_documents(seed, version, all_payers=all_payers).values())
    return data


def publish_reference(s3_client: Any, bucket: str, prefix: str, seed: int, version: int,
                      *, all_payers: bool = False) -> list[str]:
    """Write every dataset's `version` under s3://bucket/prefix; returns the object keys."""
    keys = []
    for dataset, document in reference_documents(seed, version, all_payers=all_payers).items():
        key = reference_key(prefix, dataset, version)
        s3_client.put_object(Bucket=bucket, Key=key, Body=orjson.dumps(document), ContentType="application/json")
        keys.append(key)
    return keys

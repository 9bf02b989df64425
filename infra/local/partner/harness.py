"""One delivery run against the stand-in: contract variant, run-unique properties, credentials in Secrets Manager.

Shared by the delivery tests, the kill test and bench/partner_delivery_bench.py, so each sets up a run
the same way: the shipped clearwater_health contract with test-sized numbers (rate, lease, retries),
the stand-in's URL as the partner's base URL, and every topic, table and checkpoint folder unique.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors.secrets import put_secret
from infra.local.partner.rules import PartnerConfig
from schemas.partner_contract import PARTNERS_DIR

PARTNER = "clearwater_health"
CLIENT_ID = "medistream-local"


def write_contract(folder: Path, **overrides: Any) -> Path:
    """The shipped clearwater_health contract with top-level keys replaced (e.g. rate_limit, retry, lease_s)."""
    document = yaml.safe_load((PARTNERS_DIR / f"{PARTNER}.yaml").read_text())
    document.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PARTNER}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def standin_config(rate: float, burst: int, **faults: Any) -> PartnerConfig:
    """A stand-in that issues OAuth2 tokens to CLIENT_ID with a fresh random secret."""
    return PartnerConfig(rate=rate, burst=burst, client_id=CLIENT_ID, client_secret=secrets.token_urlsafe(18), **faults)


def delivery_properties(run_id: str, home: Path, standin_url: str, contracts_dir: Path,
                        partners: Mapping[str, str] | None = None) -> Path:
    """Run-unique properties (infra.local.isolation) plus the `partners` group for this run."""
    from infra.local.isolation import write_properties

    path = write_properties(run_id, home)
    groups = json.loads(path.read_text())
    group = {
        "contracts.dir": str(contracts_dir), f"{PARTNER}.base.url": standin_url,
        "ledger.table": f"ledger-t{run_id}", "dlq.topic": f"dlq.partner.t{run_id}",
        "group.id": f"partner-t{run_id}", "checkpoints.dir": (home / "partner-checkpoints").as_uri(),
        "job.name": f"partner-{run_id}", **(partners or {}),
    }
    path.write_text(json.dumps(with_partners(groups, group)))
    return path


def with_partners(documents: list[dict[str, Any]], overrides: Mapping[str, str]) -> list[dict[str, Any]]:
    """Property documents with `overrides` merged into the `partners` group (added when missing)."""
    group = next((g for g in documents if g["PropertyGroupId"] == "partners"), None)
    if group is None:
        group = {"PropertyGroupId": "partners", "PropertyMap": {}}
        documents.append(group)
    group["PropertyMap"].update(overrides)
    return documents


def provision_credentials(secrets_client: Any, contract: Any, config: PartnerConfig) -> None:
    """Store the stand-in's client credentials where the contract's auth.secret_id says."""
    put_secret(secrets_client, contract.auth.secret_id,
               {"client_id": config.client_id or "", "client_secret": config.client_secret or ""})


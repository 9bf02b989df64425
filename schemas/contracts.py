"""Feed contracts: load, check and look up the YAML files in schemas/feeds/ (one per feed).

A contract is the one place a feed is defined (source doors, format and its options, record type,
canonical schema version, field mapping, standardization, enrichment miss policy, PHI policy,
routes). Adding a feed is adding a file: everything downstream reads these objects. Every problem
is reported at start-up with the file and the key, never at the first record.

This module checks a contract's shape: its JSON Schema, the schema version, the X12 transaction,
the PHI policy and the routes. The options a stage reads (a decoder's format options, a CSV
mapping, standardization) are checked by the code that reads them: jobs load contracts through
udfs.contract_checks.load_feed_contracts, which runs both.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from schemas import is_readable_version, raise_first_error
from schemas.routes import Route, RouteError, parse_routes

FEEDS_DIR = Path(__file__).resolve().parent / "feeds"
CONTRACT_SCHEMA = Path(__file__).resolve().parent / "feed_contract.schema.json"
DEFAULT_MAX_UNIT_BYTES = 64 * 1024 * 1024

# X12 transaction sets and the record type each yields.
X12_RECORD_TYPES = {"837P": "claim", "837I": "claim", "835": "payment", "834": "eligibility"}


class ContractError(ValueError):
    """A feed contract is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class FeedContract:
    """One feed's definition, as loaded from schemas/feeds/<feed>.yaml."""

    feed: str
    owner: str
    record_type: str
    schema_version: str
    sources: tuple[str, ...]
    format: str
    options: Mapping[str, Any]
    mapping: Mapping[str, Any] | None
    standardize: Mapping[str, Any]
    on_miss: str
    phi_policy: str
    routes: tuple[Route, ...]
    max_unit_bytes: int
    description: str = ""
    origin: str = field(default="", compare=False)  # the file it came from, for messages
    expected_interval_s: int | None = None  # the feed-silent alert's window (None: ops/alerts.yaml's default)

    @property
    def decoder_options(self) -> dict[str, Any]:
        """The options the feed's decoder is called with (Avro also needs the record type for its reader schema)."""
        return {**self.options, "record_type": self.record_type} if self.format == "avro" else dict(self.options)


@functools.cache
def _contract_validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(CONTRACT_SCHEMA.read_text()))


def parse_contract(document: Any, origin: str) -> FeedContract:
    """Check one contract document against the contract schema and the semantic rules."""
    raise_first_error(_contract_validator(), document, origin, ContractError)
    doc: dict[str, Any] = document
    fmt = doc["format"]
    options: dict[str, Any] = dict(fmt.get("options") or {})
    if not is_readable_version(doc["record_type"], doc["schema_version"]):
        raise ContractError(f"{origin}: schema_version: {doc['schema_version']} is not a readable "
                            f"version of the {doc['record_type']} schema")
    mapping = doc.get("mapping")
    if fmt["type"] == "csv":
        if not mapping:
            raise ContractError(f"{origin}: mapping: a csv feed needs a mapping from columns to canonical paths")
    elif mapping:
        raise ContractError(f"{origin}: mapping: only csv feeds are mapped; {fmt['type']} decodes to canonical")
    if fmt["type"] == "x12":
        transaction = options.get("transaction")
        if X12_RECORD_TYPES.get(str(transaction)) != doc["record_type"]:
            raise ContractError(f"{origin}: format/options/transaction: {transaction!r} does not yield "
                                f"{doc['record_type']} records (one of {sorted(X12_RECORD_TYPES)})")
    contract = FeedContract(
        feed=doc["feed"],
        owner=doc["owner"],
        record_type=doc["record_type"],
        schema_version=doc["schema_version"],
        sources=tuple(doc["sources"]),
        format=fmt["type"],
        options=options,
        mapping=mapping,
        standardize=dict(doc.get("standardize") or {}),
        on_miss=(doc.get("enrichment") or {}).get("on_miss", "flag"),
        phi_policy=doc["phi_policy"],
        routes=(),  # parsed below, once the PHI policy is known
        max_unit_bytes=int((doc.get("limits") or {}).get("max_unit_bytes", DEFAULT_MAX_UNIT_BYTES)),
        description=doc.get("description", ""),
        origin=origin,
        expected_interval_s=(doc.get("monitoring") or {}).get("expected_interval_s"),
    )
    from schemas.phi_policy import load_policy

    try:
        policy = load_policy(contract.phi_policy)
    except ValueError as err:
        raise ContractError(f"{origin}: phi_policy: {err}") from None
    clear = frozenset(p for p, rule in policy.rules[contract.record_type].items() if rule.action == "clear")
    try:
        routes = parse_routes(doc["routes"], clear)
    except RouteError as err:
        raise ContractError(f"{origin}: {err}") from None
    return dataclasses.replace(contract, routes=routes)


def load_contract(path: Path) -> FeedContract:
    """Load and check one contract file; its file name must be the feed name."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ContractError(f"{path.name}: not valid YAML ({err.__class__.__name__})") from None
    contract = parse_contract(document, path.name)
    if path.stem != contract.feed:
        raise ContractError(f"{path.name}: feed: {contract.feed!r} must equal the file name {path.stem!r}")
    return contract


def load_contracts(directory: Path = FEEDS_DIR) -> dict[str, FeedContract]:
    """All contracts in `directory`, by feed name; an empty or unreadable directory is an error."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ContractError(f"{directory}: no feed contracts (*.yaml)")
    contracts = [load_contract(p) for p in paths]
    return {c.feed: c for c in contracts}

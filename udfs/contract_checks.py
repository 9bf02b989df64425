"""The record logic's checks of a contract's options: run when a job loads its contracts, before it starts.

schemas/ checks a contract's shape (its JSON Schema, versions, PHI policy, routes, reveal grants).
The options a stage reads are checked by the code that reads them, here, through the same functions
the stage compiles them with: a decoder's format options, a CSV feed's mapping, standardization, a
partner's retry policy. A bad contract stops the job at start-up with the file and the key, never at
the first record. Jobs load contracts through `load_feed_contracts` / `check_partner_contracts`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from schemas.contracts import FEEDS_DIR, ContractError, FeedContract, load_contracts
from schemas.partner_contract import PartnerContract, PartnerContractError
from udfs.delivery import RetryPolicy
from udfs.mapping import check_mapping
from udfs.standardize import StandardizeOptions


def check_contract(contract: FeedContract) -> FeedContract:
    """Run the decoder's, the mapping's and standardization's own option checks; return the contract."""
    decoder = importlib.import_module(f"udfs.decoders.{contract.format}")
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("format/options", lambda: decoder.check_options(contract.decoder_options)),
        ("standardize", lambda: StandardizeOptions.from_contract(contract.standardize)),
    ]
    if contract.mapping:
        checks.insert(0, ("mapping", lambda: check_mapping(contract.mapping or {})))
    for where, check in checks:
        try:
            check()
        except ValueError as err:
            raise ContractError(f"{contract.origin}: {where}: {err}") from None
    return contract


def load_feed_contracts(directory: Path = FEEDS_DIR) -> dict[str, FeedContract]:
    """Every feed contract in `directory`, by feed, with its shape and its options checked."""
    return {feed: check_contract(contract) for feed, contract in load_contracts(directory).items()}


def check_partner_contracts(contracts: Mapping[str, PartnerContract]) -> Mapping[str, PartnerContract]:
    """Check each partner contract's retry options with the policy the delivery job builds from them."""
    for contract in contracts.values():
        try:
            RetryPolicy(**contract.retry)
        except (TypeError, ValueError) as err:
            raise PartnerContractError(f"{contract.origin}: retry: {err}") from None
    return contracts

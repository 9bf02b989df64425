"""Authorized re-identification: decide whether a role may see fields for a purpose, and pick them out.

The decision is pure and deny-by-default (schemas/access/reidentification.yaml). Callers (tools/reveal.py) write
every decision, granted or denied, to the audit log *before* any value is shown, and show nothing
when the audit write fails. Tokens are HMACs and cannot be reversed; a tokened field is re-identified
through the sealed copy of the record that holds it, so there is no token vault holding PHI twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.phi_access import AccessRules

_INDEX = re.compile(r"\[[0-9]+\]")


@dataclass(frozen=True)
class Decision:
    """Granted or not, and why (PHI-free: role, purpose and paths only)."""

    granted: bool
    reason: str


def leaf_path(concrete: str) -> str:
    """"dependents[0].first_name" -> "dependents[].first_name" (the policy's notation)."""
    return _INDEX.sub("[]", concrete)


def decide(rules: AccessRules, role: str, purpose: str, record_type: str, fields: Iterable[str]) -> Decision:
    """May `role` see `fields` (concrete paths) of a `record_type` record for `purpose`?"""
    grant = rules.roles.get(role)
    if grant is None:
        return Decision(False, f"unknown role {role}")
    if purpose not in grant.purposes:
        return Decision(False, f"role {role} may not re-identify for purpose {purpose}")
    allowed = grant.fields.get(record_type, frozenset())
    refused = sorted(f for f in fields if leaf_path(f) not in allowed)
    if refused:
        return Decision(False, f"role {role} may not see {', '.join(refused)} of {record_type} records")
    return Decision(True, f"role {role} granted for {purpose}")


def pick(record: Mapping[str, Any], path: str) -> Any:
    """The value at a concrete path ("claims[2].patient.first_name"); KeyError when absent."""
    node: Any = record
    for part in path.split("."):
        name, _, rest = part.partition("[")
        node = node[name]
        for index in re.findall(r"([0-9]+)\]", "[" + rest if rest else ""):
            node = node[int(index)]
    return node

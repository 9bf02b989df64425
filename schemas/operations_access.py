"""Who may operate the jobs: roles -> actions (schemas/access/operations.yaml), deny by default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

OPERATIONS_FILE = Path(__file__).parent / "access" / "operations.yaml"
ACTIONS = frozenset({"list", "status", "savepoint", "stop", "start", "upgrade", "backfill", "batch", "replay"})


class OperationsAccessError(ValueError):
    """The operations access file is malformed; the message names the entry."""


@dataclass(frozen=True)
class OperationsAccess:
    """Every role's granted actions."""

    origin: str
    roles: Mapping[str, frozenset[str]]

    def allows(self, role: str, action: str) -> bool:
        """Whether `role` may take `action` (unknown roles and actions: no)."""
        return action in self.roles.get(role, frozenset())


def parse_operations_access(document: Any, origin: str) -> OperationsAccess:
    """Check and load a parsed operations access document."""
    if not isinstance(document, Mapping) or not isinstance(document.get("roles"), Mapping):
        raise OperationsAccessError(f"{origin}: roles: a mapping of role -> actions is required")
    roles: dict[str, frozenset[str]] = {}
    for role, grant in document["roles"].items():
        actions = (grant or {}).get("actions") if isinstance(grant, Mapping) else None
        if not isinstance(actions, list) or not actions:
            raise OperationsAccessError(f"{origin}: roles/{role}/actions: a list of actions is required")
        unknown = sorted(set(map(str, actions)) - ACTIONS)
        if unknown:
            raise OperationsAccessError(f"{origin}: roles/{role}/actions: unknown action {unknown[0]!r} "
                                        f"(one of {', '.join(sorted(ACTIONS))})")
        roles[str(role)] = frozenset(map(str, actions))
    return OperationsAccess(str(document.get("access", origin)), roles)


def load_operations_access(path: Path = OPERATIONS_FILE) -> OperationsAccess:
    """Load and check the operations access file."""
    return parse_operations_access(yaml.safe_load(path.read_text(encoding="utf-8")), path.name)

"""Routing: which sinks receive a record, from its feed contract's routes (schemas/routes.py).

Conditions are evaluated on the *protected* record (the contract loader allows only fields the PHI
policy leaves in clear). A record whose conditions cannot be decided (a condition field absent or
not a scalar) is refused with `route_unresolved` rather than guessed either way: skipping could lose
a partner delivery, sending could disclose a record to a partner that should not have it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from schemas.routes import Route
from udfs.dead_letters import Rejected
from udfs.reasons import define

ROUTE_UNRESOLVED = define("route_unresolved", "routing",
                          "a routing condition's field is missing or not a single value, so the sinks are unknown",
                          alert=True)


def _value(record: Mapping[str, Any], path: str) -> str | None:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (str, int, float)):
        return None
    return str(node)


def resolve(routes: tuple[Route, ...], record: Mapping[str, Any]) -> tuple[str, ...]:
    """The sinks this record goes to, in contract order; raise Rejected when a condition is undecidable."""
    sinks = []
    for route in routes:
        for path, allowed in route.when:
            value = _value(record, path)
            if value is None:
                raise Rejected(ROUTE_UNRESOLVED,
                               f"route {route.sink}: condition field {path} is missing or not a value")
            if value not in allowed:
                break
        else:
            sinks.append(route.sink)
    return tuple(sinks)


def routes_column(sinks: Iterable[str]) -> str:
    """The sinks as one delimited string (`,iceberg,archive,`) that SQL filters with POSITION(',x,' IN ...)."""
    return "," + ",".join(sinks) + ","


def partners(routes_by_feed: Mapping[str, tuple[Route, ...]]) -> list[str]:
    """Every partner id any contract routes to, sorted: one curated topic each."""
    return sorted({r.partner for routes in routes_by_feed.values() for r in routes if r.partner})

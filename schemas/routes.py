"""A feed contract's routes: which sinks a record may reach, and on which conditions (contract data).

A contract lists routes; a route is a sink name, optionally with conditions on fields of the record:

    routes:
      - iceberg
      - archive
      - snowflake
      - to: partner:acme_health
        when: {payer.payer_id: ["87255", "44307"]}   # every condition must hold; a list means "one of"

Only fields the feed's PHI policy leaves in clear can be conditions (checked here, when the contract
loads): a token or a ciphertext never equals a value written in a contract. The archive receives
every accepted record whatever the routes say (retention is not optional), so a contract must list
it. udfs/routing.py decides a record's sinks from these routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ARCHIVE = "archive"
SINKS = ("iceberg", ARCHIVE, "snowflake", "operational")
PARTNER_PREFIX = "partner:"  # a partner's route is `partner:<id>`
_PARTNER = re.compile(rf"^{PARTNER_PREFIX}([a-z0-9_]+)$")


def is_partner_sink(sink: str) -> bool:
    """Whether a route's sink (as a record's routes name it) is a partner's."""
    return sink.startswith(PARTNER_PREFIX)


class RouteError(ValueError):
    """A contract's routes are invalid; the message names the route."""


@dataclass(frozen=True)
class Route:
    """One sink and the conditions (field path -> allowed values) a record must meet to reach it."""

    sink: str
    when: tuple[tuple[str, frozenset[str]], ...] = ()

    @property
    def partner(self) -> str | None:
        """The partner id of a `partner:<id>` route, else None."""
        match = _PARTNER.match(self.sink)
        return match.group(1) if match else None


def parse_routes(entries: Iterable[Any], clear_paths: frozenset[str]) -> tuple[Route, ...]:
    """Routes from a contract's `routes` list; `clear_paths` are the fields a condition may test."""
    routes: list[Route] = []
    for index, entry in enumerate(entries):
        sink, when = (entry, {}) if isinstance(entry, str) else (entry.get("to"), entry.get("when") or {})
        if sink not in SINKS and not (isinstance(sink, str) and _PARTNER.match(sink)):
            raise RouteError(f"routes[{index}]: unknown sink {sink!r} (one of {', '.join(SINKS)} or partner:<id>)")
        conditions = []
        for path, values in sorted(when.items()):
            if path not in clear_paths:
                raise RouteError(f"routes[{index}]: condition field {path!r} is not a field the PHI policy "
                                 "leaves in clear, so it cannot be compared")
            allowed = values if isinstance(values, list) else [values]
            conditions.append((path, frozenset(str(v) for v in allowed)))
        if sink == ARCHIVE and conditions:
            raise RouteError(f"routes[{index}]: the archive keeps every record; it takes no conditions")
        routes.append(Route(sink, tuple(conditions)))
    sinks = [r.sink for r in routes]
    if ARCHIVE not in sinks:
        raise RouteError("routes: every feed is archived (7-year retention); list `archive`")
    if len(set(sinks)) != len(sinks):
        raise RouteError("routes: a sink is listed twice; put alternatives into one route's `when` lists")
    return tuple(routes)

"""The sink and door registry is keyed by exactly the names the feed contracts use."""

from __future__ import annotations

import importlib
import json

from connectors.registry import DOORS, SINKS, route_kind
from schemas.contracts import CONTRACT_SCHEMA, load_contracts
from schemas.routes import SINKS as ROUTE_SINKS


def test_every_route_name_has_a_sink_and_every_sink_a_route_or_the_refusals_or_the_signals() -> None:
    # device_events: the device events' iceberg and operational routes, wired after every other sink (decision 0040).
    assert set(SINKS) == {*ROUTE_SINKS, "partner", "dead_letters", "fraud_signals", "device_events"}
    used = {route_kind(r.sink) for c in load_contracts().values() for r in c.routes}
    assert used <= set(SINKS) and not used & {"dead_letters", "fraud_signals", "device_events"}


def test_every_source_name_a_contract_may_use_has_a_door() -> None:
    enum = json.loads(CONTRACT_SCHEMA.read_text())["properties"]["sources"]["items"]["enum"]
    assert set(DOORS) == set(enum)
    assert all(DOORS[name] for name in enum)


def test_builders_and_door_jobs_resolve() -> None:
    for sink in SINKS.values():
        assert callable(sink.build)
        assert callable(importlib.import_module(sink.visible_via).main)
    for doors in DOORS.values():
        for door in doors:
            assert callable(importlib.import_module(door.job).main)


def test_route_kind() -> None:
    assert route_kind("partner:acme_health") == "partner"
    assert route_kind("iceberg") == "iceberg"

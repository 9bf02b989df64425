"""Routing: contract routes parse strictly, resolve per record, and refuse what they cannot decide."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from infra.local.static_keys import static_protectors
from infra.local.synthetic import generate
from schemas.contracts import ContractError
from schemas.routes import Route, RouteError, parse_routes
from tests.unit.test_ingest_stage import contract, reference
from udfs.dead_letters import Rejected
from udfs.ingest import Accepted, IngestStage, Refused
from udfs.routing import partners, resolve, routes_column
from udfs.source import SourceRef

CLEAR = frozenset({"claim_kind", "payer.payer_id", "frequency_code"})
CLAIM: dict[str, Any] = {"claim_kind": "professional", "payer": {"payer_id": "87255"}, "frequency_code": "1"}


def test_plain_routes_go_everywhere_they_name_in_contract_order() -> None:
    routes = parse_routes(["iceberg", "archive", "snowflake", "partner:acme"], CLEAR)
    assert resolve(routes, CLAIM) == ("iceberg", "archive", "snowflake", "partner:acme")
    assert routes[3].partner == "acme" and routes[0].partner is None


@pytest.mark.parametrize(("when", "expected"), [
    ({"claim_kind": ["professional"]}, True),
    ({"claim_kind": ["institutional"]}, False),
    ({"claim_kind": ["professional"], "payer.payer_id": ["11111", "87255"]}, True),  # all must hold
    ({"claim_kind": ["professional"], "payer.payer_id": ["11111"]}, False),
    ({"frequency_code": [1]}, True),  # contract numbers compare as the record's strings
])
def test_conditional_route_needs_every_condition(when: dict[str, Any], expected: bool) -> None:
    routes = parse_routes(["archive", {"to": "partner:acme", "when": when}], CLEAR)
    assert ("partner:acme" in resolve(routes, CLAIM)) is expected


@pytest.mark.parametrize("record", [
    {"claim_kind": "professional"},  # payer missing
    {"claim_kind": "professional", "payer": {"payer_id": None}},
    {"claim_kind": "professional", "payer": {"payer_id": ["87255"]}},  # not a single value
])
def test_undecidable_condition_is_refused_not_guessed(record: dict[str, Any]) -> None:
    routes = parse_routes(["archive", {"to": "partner:acme", "when": {"payer.payer_id": ["87255"]}}], CLEAR)
    with pytest.raises(Rejected) as err:
        resolve(routes, record)
    assert err.value.reason_code == "route_unresolved"
    assert "87255" not in str(err.value)


@pytest.mark.parametrize(("entries", "message"), [
    (["iceberg"], "list `archive`"),
    (["archive", "kafka"], "unknown sink 'kafka'"),
    (["archive", "archive"], "listed twice"),
    (["archive", {"to": "partner:acme", "when": {"subscriber.last_name": ["Doe"]}}], "not a field the PHI policy"),
    ([{"to": "archive", "when": {"claim_kind": ["professional"]}}], "takes no conditions"),
])
def test_bad_routes_are_refused_with_the_route_named(entries: list[Any], message: str) -> None:
    with pytest.raises(RouteError, match=message):
        parse_routes(entries, CLEAR)


def test_contract_conditions_may_only_test_fields_policy_leaves_clear() -> None:
    ok = contract("feed_ok", "claim", routes=["archive", {"to": "snowflake", "when": {"claim_kind": ["professional"]}}])
    assert ok.routes[1] == Route("snowflake", (("claim_kind", frozenset({"professional"})),))
    with pytest.raises(ContractError, match=r"feed_bad.yaml: routes\[1\]: condition field 'subscriber.member_id'"):
        contract("feed_bad", "claim", routes=["archive", {"to": "snowflake", "when": {"subscriber.member_id": ["x"]}}])


def test_partner_topics_come_from_every_contracts_routes() -> None:
    a = parse_routes(["archive", "partner:zeta"], CLEAR)
    b = parse_routes(["archive", {"to": "partner:acme", "when": {"claim_kind": ["professional"]}}, "partner:zeta"],
                     CLEAR)
    assert partners({"a": a, "b": b}) == ["acme", "zeta"]
    assert routes_column(["iceberg", "partner:acme"]) == ",iceberg,partner:acme,"


def test_stage_routes_by_the_protected_record_and_dead_letters_unresolved_routes() -> None:
    claims = [g for g in generate(80, 5) if g.expect == "valid" and g.record_type == "claim"
              and g.feed == "hospital_a_claims"][:6]
    routed = contract("hospital_a_claims", "claim", routes=[
        "archive", {"to": "partner:acme", "when": {"frequency_code": ["1"]}},
        {"to": "snowflake", "when": {"rendering_provider.npi": ["0"]}}])
    stage = IngestStage({"hospital_a_claims": routed}, static_protectors(), reference())
    records = [orjson.loads(g.payload) for g in claims]
    del records[0]["rendering_provider"]  # optional in the schema: this record's route is undecidable
    outcomes = []
    for record in records:
        source = SourceRef.from_kafka("raw.hospital_a_claims", 0, 1)
        outcomes.extend(stage.process(orjson.dumps(record), source, 1_750_000_000_000))
    for record, outcome in zip(records, outcomes, strict=True):
        if "rendering_provider" not in record:
            assert isinstance(outcome, Refused) and outcome.error.reason_code == "route_unresolved"
            continue
        assert isinstance(outcome, Accepted)
        assert ("partner:acme" in outcome.routes) == (record["frequency_code"] == "1")
        assert "snowflake" not in outcome.routes
    assert {type(o) for o in outcomes} == {Accepted, Refused}  # the sample exercises both paths

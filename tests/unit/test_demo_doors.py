"""The demo's ground truth through the ingest doors: what the API's pre-check refuses, and what enters."""

from __future__ import annotations

import orjson

from infra.local.synthetic import Feed, Mix, generate
from tools.demo_doors import API_FEED, PULL_FEED, SFTP_FEED, as_the_api_takes_it, entering

FEEDS = (Feed(API_FEED, "claim", "kafka"), Feed(PULL_FEED, "payment", "kafka"),
         Feed(SFTP_FEED, "payment", "landing", "x12"), Feed("other", "eligibility", "kafka"))
CLAIMS_ONLY = Mix(claim=1.0, payment=0.0, eligibility=0.0)


def test_the_api_refuses_malformed_json_and_scalars_and_unwraps_a_batch_of_one() -> None:
    records = list(generate(600, seed=3, mix=CLAIMS_ONLY, duplicate_rate=0.05, invalid_rate=0.3, feeds=FEEDS[:1]))
    kinds = {g.invalid_kind for g in records}
    assert {"malformed_json", "not_an_object", None} <= kinds
    for g in records:
        taken = as_the_api_takes_it(g)
        body = orjson.loads(g.payload) if g.invalid_kind != "malformed_json" else None
        if g.invalid_kind == "malformed_json" or (g.invalid_kind == "not_an_object" and not isinstance(body, list)):
            assert taken is None
        elif g.invalid_kind == "not_an_object":
            assert taken is not None and taken.expect == "valid" and orjson.loads(taken.payload) == body[0]
        else:
            assert taken is g


def test_what_enters_keeps_generation_order_duplicates_and_the_api_view() -> None:
    generated = list(generate(400, seed=5, duplicate_rate=0.1, invalid_rate=0.2, feeds=FEEDS))
    api = [t for g in generated if g.feed == API_FEED and (t := as_the_api_takes_it(g)) is not None]
    pulled = [g for g in generated if g.feed == PULL_FEED and g.invalid_kind != "malformed_json"]
    direct = [g for g in generated if g.feed not in (API_FEED, PULL_FEED)]
    entered = entering(generated, direct, api, pulled)
    assert len(entered) == len(direct) + len(api) + len(pulled)
    assert [g.record_id for g in entered] == [g.record_id for g in generated
                                              if any(g.record_id == e.record_id for e in entered)]
    assert sum(g.is_duplicate for g in entered) == sum(g.is_duplicate for g in (*direct, *api, *pulled))

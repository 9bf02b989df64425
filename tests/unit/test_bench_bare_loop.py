"""bench.ingest_bench's bare loop: its verdict counts as it goes, and it leaves no input frozen behind it."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import orjson

from bench.ingest_bench import bare_loop, feed_name, generate_claims, write_contracts
from udfs.enrich import ReferenceData


def _run(tmp_path: Path, break_one: bool) -> dict[str, object]:
    feed = feed_name(4, "unittest")
    contracts = write_contracts(tmp_path / "feeds", [feed])
    records = generate_claims(12, 4, feed)
    if break_one:
        # Still a claim the ground truth expects (it reads keys, not the place of service), refused by the schema.
        claim = orjson.loads(records[5].payload)
        records[5] = dataclasses.replace(records[5], payload=orjson.dumps({**claim, "place_of_service": "not a code"}))
    return bare_loop(records, f"raw.{feed}", contracts, ReferenceData())


def test_every_generated_claim_is_accepted_under_the_key_it_expects(tmp_path: Path) -> None:
    loop = _run(tmp_path, break_one=False)
    assert (loop["ok"], loop["refused"], loop["keys_missing"], loop["keys_unexpected"]) == (True, 0, 0, 0)
    assert gc.get_freeze_count() == 0  # unfrozen after the timed loop


def test_a_refused_record_is_counted_and_its_key_missed(tmp_path: Path) -> None:
    loop = _run(tmp_path, break_one=True)
    assert (loop["ok"], loop["refused"], loop["keys_missing"], loop["keys_unexpected"]) == (False, 1, 1, 0)

"""The faster record path (issue 19) decides every record as the path before it did, for every shipped feed.

Three stages run generated code now: the schema check's fast yes (schemas.fast_accepts), the
standardize walk and the rules' field selectors. Each keeps its former implementation as the
reference (fastjsonschema alone, standardize_reference, rules._select). This test runs the whole
IngestStage both ways over the same seeded units of every shipped feed, in its own format: the
generator's valid records, its invalid kinds, exact re-sends, and canonical JSON records broken at
random. Every outcome must be the same: a refusal's reason code, detail, position and dead-letter
record id; an accepted record's keys, columns, routes, enrichment and protected payload (field
ciphertexts compared by where they sit, since each encryption draws a fresh nonce).
"""

from __future__ import annotations

import random
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from infra.local import synthetic
from infra.local.device_events import Rates, generate_device_events
from infra.local.feed_encoding import encode_unit
from infra.local.reference import reference_data
from infra.local.static_keys import static_protectors
from schemas import _never
from schemas.contracts import load_contracts
from tests.unit import feed_samples
from udfs import ingest, rules
from udfs.ingest import Accepted, IngestStage, Outcome
from udfs.phi.envelope import FIELD_PREFIX
from udfs.standardize import standardize_reference

SEED = 31
NOW = datetime(2026, 11, 22, tzinfo=UTC)
UNIT_MS = 1_750_000_000_000
CONTRACTS = load_contracts()


def _units(feed: str) -> list[bytes]:
    """Seeded units of one feed: generated records (invalid kinds and re-sends included) and broken ones."""
    contract = CONTRACTS[feed]
    if contract.record_type == "device_event":  # every bent kind, the clock skew among them (against UNIT_MS)
        bent = Rates(out_of_order=0.1, allowed_late=0.1, late=0.1, clock_skew=0.1, duplicate=0.05, invalid=0.25)
        generated = [e.payload for e in generate_device_events(24, SEED, devices=2, rates=bent, now_ms=UNIT_MS,
                                                               feed=feed)]
    else:
        feeds = synthetic.feeds_from_contracts([contract])
        mix = synthetic.Mix(**{t: float(t == contract.record_type) for t in ("claim", "payment", "eligibility")})
        generated = [g.payload for g in synthetic.generate(24, seed=SEED, feeds=feeds, mix=mix, invalid_rate=0.25,
                                                           duplicate_rate=0.05, size_kb=(1, 5))]
    rng = random.Random(f"{SEED}:{feed}")
    if contract.format == "json":  # canonical records broken at random: the schema, standardize and rules speak
        for payload in generated[:12]:
            try:
                record = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue  # a malformed kind: nothing to break further
            if isinstance(record, dict):
                generated += [orjson.dumps(feed_samples.mutate(record, rng)) for _ in range(4)]
    units = []
    per_unit = 1 if {"kafka", "kinesis"} & set(contract.sources) else 5  # one message per unit on raw.<feed>
    for i in range(0, len(generated), per_unit):
        try:
            units.append(encode_unit(contract, generated[i:i + per_unit]))
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            # An invalid kind that its format cannot carry (a CSV of a non-object): sent as raw bytes.
            units.append(b"\n".join(generated[i:i + per_unit]))
    return units


def _comparable(outcome: Outcome) -> dict[str, Any]:
    fields = {f.name: getattr(outcome, f.name) for f in dataclass_fields(outcome)}
    if isinstance(outcome, Accepted):
        payload = orjson.loads(fields.pop("payload"))
        fields.pop("sealed")  # encrypted whole under a fresh nonce; the same canonical JSON is sealed (checked below)
        fields["payload"] = _without_nonces(payload)
    else:
        fields["error"] = (outcome.error.reason_code, outcome.error.detail, outcome.error.stage)
    return fields


def _without_nonces(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nonces(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nonces(v) for v in value]
    if isinstance(value, str) and value.startswith(FIELD_PREFIX):
        return value.rsplit(".", 1)[0]  # e1.<key id>: the key it is under, not the nonce and ciphertext
    return value


def _run(stage: IngestStage, feed: str, units: list[bytes]) -> list[Outcome]:
    source = feed_samples.source(CONTRACTS[feed])
    return [o for unit in units for o in stage.process(unit, source, UNIT_MS, NOW)]


@pytest.mark.parametrize("feed", sorted(CONTRACTS))
def test_new_and_reference_paths_decide_alike(feed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    protectors = static_protectors()  # one data-key cache: both paths encrypt under the same key
    stage = IngestStage({feed: CONTRACTS[feed]}, protectors, reference_data(SEED))
    units = _units(feed)
    new = _run(stage, feed, units)

    with monkeypatch.context() as patched:
        patched.setattr(stage.feeds[feed], "accepts", _never)
        patched.setattr(ingest, "standardize", standardize_reference)
        patched.setattr(rules, "_selector", lambda patterns: lambda record: rules._select(record, patterns))
        reference = _run(stage, feed, units)

    assert [_comparable(o) for o in new] == [_comparable(o) for o in reference]
    protector = protectors[CONTRACTS[feed].phi_policy]
    for a, b in zip(new, reference, strict=True):
        if isinstance(a, Accepted) and isinstance(b, Accepted):
            assert protector.open_record(a.sealed, feed, a.record_id) == \
                protector.open_record(b.sealed, feed, b.record_id)
    assert any(isinstance(o, Accepted) for o in new)
    assert any(not isinstance(o, Accepted) for o in new) or CONTRACTS[feed].format != "json"

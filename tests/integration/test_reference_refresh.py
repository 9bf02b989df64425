"""Reference data refreshes while the job runs: a payer missing from the directory is dead-lettered,
then a newer directory version is published and the same payer's next claims are accepted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from infra.local import synthetic
from infra.local.publish import publish
from infra.local.reference import publish_reference, unknown_payer
from schemas.contracts import load_contracts
from tests.conftest import isolated_config
from tests.integration.conftest import wait_for, write_properties
from tools.job_processes import start_job, stop_job
from tools.readback import committed_dead_letters, iceberg_claim_ids, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.flink]
SEED = 41


def test_a_new_reference_version_is_used_without_a_restart(stack: object, run_id: str, tmp_path: Path) -> None:
    cfg = isolated_config(run_id, tmp_path)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    feed = next(c for c in contracts.values() if c.feed.endswith("hospital_d_claims"))
    assert feed.on_miss == "dead_letter"
    missing = unknown_payer(SEED)
    claims = [g for g in synthetic.generate(900, seed=SEED, mix=synthetic.Mix(1.0, 0.0, 0.0), duplicate_rate=0.0,
                                            invalid_rate=0.0, size_kb=(1, 2),
                                            feeds=synthetic.feeds_from_contracts([feed]))
              if orjson.loads(g.payload)["payer"]["payer_id"] == missing]
    assert len(claims) >= 20
    before, after = claims[: len(claims) // 2], claims[len(claims) // 2:]
    s3 = s3_client(cfg.s3)
    prefix = f"t{run_id}/"
    publish_reference(s3, "medistream-reference", prefix, SEED, version=1)
    log = tmp_path / "ingest.log"
    job = start_job(log, write_properties(run_id, tmp_path))
    try:
        publish(before, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=prefix,
                contracts=contracts)
        wait_for(lambda: len(committed_dead_letters(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic)) >= len(before),
                 240, "the first claims dead-lettered as enrichment misses")
        publish_reference(s3, "medistream-reference", prefix, SEED, version=2, all_payers=True)
        # Probe one claim at a time until the job enriches with v2: before that, each probe is a miss.
        probes: list[synthetic.Generated] = []
        while not iceberg_claim_ids(cfg):
            assert len(probes) < len(after) - 5, "the job never took directory v2"
            probes.append(after[len(probes)])
            publish(probes[-1:], cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=prefix,
                    contracts=contracts)
            settled = len(before) + len(probes)
            wait_for(lambda settled=settled: len(committed_dead_letters(cfg.kafka.bootstrap_servers,
                                                                        cfg.kafka.dlq_topic))
                     + len(iceberg_claim_ids(cfg)) >= settled, 120, "the probe claim to settle")
        rest = after[len(probes):]
        publish(rest, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=prefix,
                contracts=contracts)
        wait_for(lambda: len(iceberg_claim_ids(cfg)) >= len(rest) + 1, 240, "the later claims in Iceberg")
        assert stop_job(job) == 0
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)

    letters = committed_dead_letters(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic)
    accepted = iceberg_claim_ids(cfg)
    refused = {x["record_id"] for x in letters}
    assert {x["reason_code"] for x in letters} == {"enrichment_miss"}
    assert {g.record_id for g in before} <= refused  # v1 lacked the payer
    assert {g.record_id for g in rest} <= set(accepted)  # v2, taken while running, has it
    assert len(letters) + sum(accepted.values()) == len(before) + len(probes) + len(rest)  # each claim once
    assert set(iceberg_claim_ids(cfg, "payer_name")) - {None}  # enriched from the new version

"""Kill test: SIGKILL the running ingest job mid-stream, restart it from its latest retained
checkpoint, and show that no record is lost or duplicated in Iceberg, the archive or the DLQ."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from infra.local import synthetic
from infra.local.ground_truth import expected_outcome
from infra.local.publish import publish
from infra.local.reference import publish_reference
from jobs.runtime import latest_restore_point
from schemas.contracts import load_contracts
from tests.conftest import isolated_config
from tests.integration.conftest import wait_for, write_properties
from tools.job_processes import start_job, stop_job
from tools.readback import covered, iceberg_claim_ids, linkage_digest, read_sinks, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.kill]

WAVES, PER_WAVE = 8, 250
SEED = 31


def test_sigkill_mid_stream_then_restore_loses_and_duplicates_nothing(stack: object, run_id: str,
                                                                       tmp_path: Path) -> None:
    cfg = isolated_config(run_id, tmp_path)
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    feeds = synthetic.feeds_from_contracts(contracts.values())
    generated = list(synthetic.generate(WAVES * PER_WAVE, seed=SEED, feeds=feeds, mix=synthetic.Mix(0.8, 0.2, 0.0),
                                        duplicate_rate=0.02,
                                        invalid_rate=0.04))
    properties = write_properties(run_id, tmp_path)
    s3 = s3_client(cfg.s3)
    log = tmp_path / "ingest.log"
    def publish_wave(wave: int) -> None:
        chunk = generated[wave * PER_WAVE:(wave + 1) * PER_WAVE]
        publish(chunk, cfg.kafka.bootstrap_servers, s3, "medistream-landing", landing_prefix=f"t{run_id}/",
                contracts=contracts)

    # After the first wave is in, the rest keep arriving while the job is killed and restarted.
    def publish_waves() -> None:
        for wave in range(1, WAVES):
            publish_wave(wave)
            time.sleep(2.5)

    publisher = threading.Thread(target=publish_waves, daemon=True)
    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    publish_reference(s3, "medistream-reference", f"t{run_id}/", SEED, version=1)
    try:
        publish_wave(0)
        job = start_job(log, properties)
        wait_for(lambda: latest_restore_point(cfg.checkpoints) is not None and bool(iceberg_claim_ids(cfg)),
                 240, "a first completed checkpoint with rows in Iceberg")
        publisher.start()
        time.sleep(4)  # mid-stream: waves are flowing, some records processed but not yet checkpointed
        rows_before_kill = sum(iceberg_claim_ids(cfg).values())
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        assert publisher.is_alive(), "the kill must land while records are still arriving"
        restored_from = latest_restore_point(cfg.checkpoints)

        job = start_job(log, properties)
        publisher.join(timeout=120)
        expected = expected_outcome(generated, contracts, SEED, linkage_digest(cfg))
        want = sum(expected["claims"].values())
        wait_for(lambda: covered(iceberg_claim_ids(cfg, "business_key"), expected["claims"]) >= want,
                 300, f"all {want} claims in Iceberg after the restore")
        time.sleep(5)  # one more checkpoint: archive and DLQ commits of the last records
        assert stop_job(job) == 0
    finally:
        os.environ.pop("MEDISTREAM_PROPERTIES", None)
        if "job" in locals() and job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)

    assert restored_from is not None and "chk-" in restored_from
    assert 0 < rows_before_kill < want
    assert "restored from" in log.read_text()
    sinks = read_sinks(cfg)
    lost = expected["claims"] - sinks.iceberg_claim_keys
    duplicated = sinks.iceberg_claim_keys - expected["claims"]
    assert (sum(lost.values()), sum(duplicated.values())) == (0, 0)
    assert sinks.archived_keys == expected["archived"]
    assert sinks.dead_letters == expected["dead_letters"]

"""`medistream deploy --target local` on the packaged zip: refusals, exact sinks, a TaskManager kill, a savepoint.

One zip built from HEAD for the module (tools.package.build into tmp), one cluster of its own (tmp
folder, free loopback ports, a run-unique S3 prefix) whose Python workers are the Python 3.12 runtime
that holds only apache-flink. The ingest and partner delivery jobs run from the unpacked zip at
parallelism 2 on the generator's data with run-unique topics, prefixes, tables and ledger; deliveries
go to the partner stand-in at the shipped contract's rate limit; every sink is read back by key.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.properties import medistream_home
from infra.local import synthetic
from infra.local.ground_truth import expected_outcome
from infra.local.isolation import isolated_config, write_properties
from infra.local.partner.harness import PARTNER
from infra.local.publish import publish
from infra.local.reference import publish_reference
from infra.local.settings import StackSettings
from schemas.contracts import load_contracts
from tools import cluster, cluster_status, deploy, signing
from tools.attest import sign_local
from tools.cluster_config import ClusterSettings
from tools.demo import ShippedPartner
from tools.package import Target, build
from tools.private_cluster import ClusterSampler, private_cluster
from tools.readback import compare, compare_sinks, covered, inexact, linkage_digest, read_sinks, s3_client

pytestmark = [pytest.mark.integration, pytest.mark.kill, pytest.mark.timeout(1500)]

SEED = 47
FIRST, WAVES, PER_WAVE, AFTER_SAVEPOINT = 400, 5, 120, 240
RUN = os.urandom(4).hex()
JOBS = ("ingest", "partner_delivery")


@pytest.fixture(scope="module")
def packaged(packaged_zip: Path) -> Path:
    return packaged_zip


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _refused(zip_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    unpacked = medistream_home() / "deploy" / zip_path.stem
    # The zip is judged before the runtime, the cluster or the unpacking: its error names the zip.
    assert deploy.main(["--target", "local", str(zip_path)]) == 2
    assert not unpacked.exists()
    return _error_line(capsys)


def test_a_tampered_zip_or_one_without_its_jar_is_refused_before_submission(
        packaged: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tampered, jarless = tmp_path / "tampered-py3.12.zip", tmp_path / "jarless-py3.12.zip"
    with zipfile.ZipFile(packaged) as src, zipfile.ZipFile(tampered, "w") as bad, \
            zipfile.ZipFile(jarless, "w") as nojar:
        for info in src.infolist():
            data = src.read(info)
            changed = info.filename == "application-code/udfs/ingest.py"
            bad.writestr(copy.copy(info), data + b"\n# changed" if changed else data)
            if info.filename != "lib/pyflink-dependencies.jar":
                nojar.writestr(copy.copy(info), data)
    # Unsigned, each is refused by its signature; signed anyway (a release key signs what it is given), by its manifest.
    assert "tampered-py3.12.zip is unsigned" in _refused(tampered, capsys)
    sign_local(tampered)
    for role, companion in signing.companion_paths(packaged).items():  # no jar, so no JVM SBOM of its own: packaged's
        shutil.copy(companion, signing.companion_paths(jarless)[role])
    signing.sign(jarless, signing.SigningSettings.for_environment("local"))
    assert "application-code/udfs/ingest.py does not match its SHA-256" in _refused(tampered, capsys)
    assert "lib/pyflink-dependencies.jar" in _refused(jarless, capsys)


def test_a_zip_built_for_python_3_11_is_refused_before_submission(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = sign_local(build(Target("3.11"), tmp_path))
    line = _refused(other, capsys)
    assert "built for Python 3.11, the runtime runs Python 3.12" in line


# The cluster and one run of the ingest job across the rest of the module ---------------------------------


@pytest.fixture(scope="module")
def settings(stack: StackSettings, tmp_path_factory: pytest.TempPathFactory,
             runtime_python: Path) -> Iterator[ClusterSettings]:
    with private_cluster(tmp_path_factory.mktemp("cluster"), f"s3://{stack.warehouse_bucket}/deploy-test-{RUN}",
                         str(runtime_python), checkpoint_interval="3 s") as found:
        yield found


class Run:
    """One run of the ingest job from the zip: its data, config and what was measured."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.cfg = isolated_config(RUN, home)
        self.properties = write_properties(RUN, home)
        self.contracts = load_contracts(Path(self.cfg.feeds.contracts_dir))
        feeds = synthetic.feeds_from_contracts(self.contracts.values())
        total = FIRST + WAVES * PER_WAVE + AFTER_SAVEPOINT
        self.generated = list(synthetic.generate(total, seed=SEED, feeds=feeds, mix=synthetic.Mix(0.8, 0.2, 0.0),
                                                 duplicate_rate=0.02, invalid_rate=0.04))
        self.s3 = s3_client(self.cfg.s3)
        self.partner = ShippedPartner(self.properties, {
            "ledger.table": f"ledger-t{RUN}", "group.id": f"partner-t{RUN}", "dlq.topic": f"dlq.partner.t{RUN}",
            "job.name": f"partner-{RUN}"})
        self.job_ids: dict[str, str] = {}
        self.figures: dict[str, Any] = {}

    def publish(self, start: int, stop: int) -> None:
        publish(self.generated[start:stop], self.cfg.kafka.bootstrap_servers, self.s3, "medistream-landing",
                landing_prefix=f"t{RUN}/", contracts=self.contracts)

    def expected(self, upto: int) -> dict[str, Any]:
        return expected_outcome(self.generated[:upto], self.contracts, SEED, linkage_digest(self.cfg))

    def wait_exact(self, upto: int, timeout_s: float) -> float:
        """Seconds until every expected claim, archived record, dead letter and partner delivery is there."""
        expected, start = self.expected(upto), time.monotonic()
        to_partner = expected["routed"][f"partner:{PARTNER}"]
        want = {"claims": sum(expected["claims"].values()), "archived": sum(expected["archived"].values()),
                "dead": sum(expected["dead_letters"].values()), "partner": sum(to_partner.values())}
        have: dict[str, int] = {}
        while have != want:
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"after {timeout_s:.0f} s: {have} of {want}")
            time.sleep(2)
            try:
                sinks = read_sinks(self.cfg)
            except TimeoutError:  # a topic read cut short on a loaded machine: no verdict while waiting
                continue
            have = {"claims": covered(sinks.iceberg_claim_keys, expected["claims"]),
                    "archived": covered(sinks.archived_keys, expected["archived"]),
                    "dead": covered(sinks.dead_letters, expected["dead_letters"]),
                    "partner": covered(Counter(self.partner.deliveries()), to_partner)}
        return time.monotonic() - start

    def assert_exact(self, upto: int) -> dict[str, dict[str, int]]:
        """Every sink holds exactly the expected keys: 0 lost, 0 duplicated, nothing else."""
        expected, sinks = self.expected(upto), read_sinks(self.cfg)
        found = compare_sinks(expected, sinks)
        # Exactly once at the partner itself, by business key (the stand-in counts accepted deliveries).
        found["partner stand-in"] = compare(expected["routed"][f"partner:{PARTNER}"],
                                            Counter(self.partner.deliveries()))
        assert not inexact(found), inexact(found)
        assert sinks.iceberg_claim_keys == expected["claims"] and sinks.archived_keys == expected["archived"]
        return found


@pytest.fixture(scope="module")
def run(settings: ClusterSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    found = Run(tmp_path_factory.mktemp("run"))
    publish_reference(found.s3, "medistream-reference", f"t{RUN}/", SEED, version=1)
    try:
        with ClusterSampler.of(settings) as sampler:
            yield found
    finally:
        found.partner.stop()
    out = medistream_home() / "bench" / "deploy-last.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**found.figures, "peak_rss_mib": sampler.peak_rss_mib}, indent=1) + "\n")


def _checkpoints(settings: ClusterSettings, job_id: str) -> dict[str, Any]:
    return cluster_status.rest_get(settings, f"/jobs/{job_id}/checkpoints") or {}


def test_deployed_zip_at_parallelism_two_fills_every_sink_exactly_and_survives_a_taskmanager_kill(
        packaged: Path, settings: ClusterSettings, run: Run) -> None:
    run.publish(0, FIRST)
    result = deploy.deploy(packaged, JOBS, settings=settings, base_properties=run.properties)
    run.job_ids = result["jobs"]
    assert Path(result["runtime"]).is_relative_to(deploy.runtime_dir())
    running_s = 0.0
    for job, job_id in run.job_ids.items():
        info = cluster_status.rest_get(settings, f"/jobs/{job_id}") or {}
        parallelism = {v["name"]: v["parallelism"] for v in info["vertices"]}
        # The Python operators and the Kafka sources run at 2; single-writer parts (committers) at 1 by design.
        assert max(parallelism.values()) == 2, (job, parallelism)
        running_s = max(running_s, cluster_status.wait_running(settings, job_id, 180))
    exact_s = run.wait_exact(FIRST, 300)
    time.sleep(4)  # one more checkpoint: nothing arrives twice after it
    first = run.assert_exact(FIRST)
    run.figures |= {"deploy_s": result["deploy_s"], "jobs_running_after_deploy_s": round(running_s, 1),
                    "first_records": FIRST, "exact_after_running_s": round(exact_s, 1),
                    "records_per_s_p2": round(FIRST / exact_s, 1), "first_counts": first}

    # Waves keep arriving while one TaskManager is SIGKILLed; `cluster up` starts a replacement.
    def waves() -> None:
        for wave in range(WAVES):
            run.publish(FIRST + wave * PER_WAVE, FIRST + (wave + 1) * PER_WAVE)
            time.sleep(2.5)

    publisher = threading.Thread(target=waves, daemon=True)
    publisher.start()
    time.sleep(4)
    completed_before = {job: _checkpoints(settings, job_id)["counts"]["completed"]
                        for job, job_id in run.job_ids.items()}
    victim = cluster.running(settings)["tm1"]
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(timeout=30)  # gone (and reaped, it is our child) before `up` looks for it
    assert publisher.is_alive(), "the kill must land while records are still arriving"
    topped = cluster.up(settings)
    assert topped["started"] == ["tm1"]
    publisher.join(timeout=120)
    upto = FIRST + WAVES * PER_WAVE
    run.wait_exact(upto, 400)
    restored = {job: _checkpoints(settings, job_id)["latest"]["restored"] for job, job_id in run.job_ids.items()}
    # Each job had subtasks on the killed TaskManager (slots are spread), so each restarted from a checkpoint.
    for job in JOBS:
        assert restored[job] is not None and restored[job]["is_savepoint"] is False and completed_before[job] > 0, job
    time.sleep(4)
    run.figures |= {"taskmanager_kill": {"exact_after_kill_s": round(time.monotonic() - killed_at, 1),
                                         "restored_from": {j: r["external_path"] for j, r in restored.items()},
                                         "counts": run.assert_exact(upto)}}


def test_stop_with_savepoint_and_a_restart_of_the_zip_from_it_lose_and_duplicate_nothing(
        packaged: Path, settings: ClusterSettings, run: Run, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert run.job_ids, "runs after the deployment test"
    monkeypatch.setenv("MEDISTREAM_FLINK_REST_PORT", str(settings.rest_port))
    savepoints = {}
    for job, job_id in run.job_ids.items():
        assert deploy.main(["--target", "local", "--stop", job_id]) == 0
        stopped = json.loads(capsys.readouterr().out)
        assert stopped["state"] == "FINISHED" and stopped["savepoint"].startswith(settings.checkpoints_uri)
        savepoints[job] = stopped["savepoint"]
    upto = FIRST + WAVES * PER_WAVE
    run.publish(upto, upto + AFTER_SAVEPOINT)  # arrives while no job runs
    result = deploy.deploy(packaged, JOBS, settings=settings, base_properties=run.properties, savepoints=savepoints)
    for job_id in result["jobs"].values():
        cluster_status.wait_running(settings, job_id, 180)
        restored = _checkpoints(settings, job_id)["latest"]["restored"]
        assert restored is not None and restored["is_savepoint"] is True
    run.wait_exact(upto + AFTER_SAVEPOINT, 300)
    time.sleep(4)
    counts = run.assert_exact(upto + AFTER_SAVEPOINT)
    run.figures |= {"savepoint": {"paths": savepoints, "redeploy_s": result["deploy_s"], "counts": counts}}
    for job_id in result["jobs"].values():
        assert deploy.stop(job_id, settings)["state"] == "FINISHED"
    shutil.rmtree(medistream_home() / "deploy" / packaged.stem, ignore_errors=True)

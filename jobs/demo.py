"""The demo: stack up, publish synthetic feeds, run the ingest job, wait for every record, stop, summarise.

The job runs as its own process (`python -m jobs.ingest`), as it would under an operator; the demo
watches the sinks, then asks the job to stop with a savepoint (SIGTERM) and reads everything back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from jobs.config import IngestConfig, default_properties_path, load_ingest_config, medistream_home, read_property_groups
from jobs.readback import iceberg_claim_ids, linkage_digest, read_sinks, s3_client, split_s3_url

REPO_ROOT = Path(__file__).resolve().parent.parent


def publish_synthetic(
    cfg: IngestConfig, records: int, seed: int, duplicate_rate: float, invalid_rate: float,
    ground_truth: Path | None = None,
) -> dict[str, Any]:
    """Publish reference data, then records for every feed contract in its own format; return expected counts."""
    from infra.local import synthetic
    from infra.local.ground_truth import expected_outcome
    from infra.local.publish import publish
    from infra.local.reference import publish_reference
    from schemas.contracts import FEEDS_DIR, load_contracts

    contracts = load_contracts(Path(cfg.feeds.contracts_dir) if cfg.feeds.contracts_dir else FEEDS_DIR)
    feeds = synthetic.feeds_from_contracts(contracts.values())
    generated = list(synthetic.generate(records, seed=seed, duplicate_rate=duplicate_rate,
                                        invalid_rate=invalid_rate, feeds=feeds))
    if ground_truth is not None:
        synthetic.write_ground_truth(ground_truth, generated)
    s3 = s3_client(cfg.s3)
    ref_bucket, ref_prefix = split_s3_url(cfg.reference.path)
    # A running job keeps the newest version it has seen, so each publication gets a higher number.
    publish_reference(s3, ref_bucket, ref_prefix, seed, version=int(time.time()))
    bucket, prefix = split_s3_url(cfg.landing.path)
    publish(generated, cfg.kafka.bootstrap_servers, s3, bucket, landing_prefix=prefix, contracts=contracts)
    return expected_outcome(generated, contracts, seed, linkage_digest(cfg))


def covered(found: Counter[str], wanted: Counter[str]) -> int:
    """How many of the wanted records are present (a duplicate is not counted twice)."""
    return sum(min(found[k], v) for k, v in wanted.items())


class RssSampler(threading.Thread):
    """Peak resident memory of a set of process trees, sampled every 0.5 s."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak_bytes, self._stop = list(pids), 0, threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self._stop.wait(0.5):
            total = 0
            for pid in self.pids:
                try:
                    root = psutil.Process(pid)
                    total += sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()


def start_job(log_path: Path, properties: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the ingest job as a child process in its own process group, logging to a file.

    It resumes from the newest checkpoint or savepoint, as an operator's restart would. Its own
    group lets a crash test SIGKILL the job together with its JVM.
    """
    argv = [sys.executable, "-m", "jobs.ingest"] + (["--properties", str(properties)] if properties else [])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy(), start_new_session=True)


def stop_job(job: subprocess.Popen[bytes], timeout_s: float = 180.0) -> int:
    """Ask the job to stop with a savepoint; kill it if it does not within the timeout."""
    if job.poll() is None:
        job.send_signal(signal.SIGTERM)
        try:
            return job.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
            return -9
    return job.returncode


def run_demo(records: int, seed: int, timeout_s: float) -> int:
    """The first README command after set-up; returns the process exit code."""
    from infra.local import stack

    started = time.monotonic()
    print("== starting the local stack (Kafka, S3/KMS API, Iceberg catalog)")
    status = stack.up()
    cfg = load_ingest_config(read_property_groups(default_properties_path()))
    print(f"== publishing {records} synthetic records (claims, payments, eligibility; 4-12 KB; seed {seed})")
    expected = publish_synthetic(cfg, records, seed, duplicate_rate=0.02, invalid_rate=0.03)
    # The sinks may hold earlier runs' rows (the job resumes from its last savepoint): this run's
    # seed gives new record ids, and only those are compared.
    log_path = medistream_home() / "logs" / "ingest.log"
    print(f"== running the ingest job on the embedded mini-cluster (log: {log_path})")
    job = start_job(log_path)
    sampler = RssSampler([job.pid, *(c.pid for c in (status.kafka, status.moto) if c.pid)])
    sampler.start()
    want = sum(expected["claims"].values())
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if job.poll() is not None:
                print(f"\nmedistream: the ingest job exited early ({job.returncode}); see {log_path}", file=sys.stderr)
                return 1
            have = covered(iceberg_claim_ids(cfg, "business_key"), expected["claims"])
            print(f"\r   claims committed to Iceberg: {have}/{want}  ({time.monotonic() - started:5.0f} s)",
                  end="", flush=True)
            if have >= want:
                break
            if time.monotonic() > deadline:
                print(f"\nmedistream: timed out after {timeout_s:.0f} s waiting for the sinks", file=sys.stderr)
                return 1
            time.sleep(2)
        # One more checkpoint so the archive and dead-letter commits of the same records complete.
        time.sleep(cfg.checkpoints.interval_ms / 1000 * 2)
    finally:
        print("\n== stopping the job with a savepoint")
        code = stop_job(job)
        sampler.stop()
    sinks = read_sinks(cfg)
    return print_summary(expected, sinks, code, sampler.peak_bytes, time.monotonic() - started)


def print_summary(expected: dict[str, Any], sinks: Any, stop_code: int, peak_rss: int, elapsed_s: float) -> int:
    """Print what each sink holds for this run's records; 0 when every count matches exactly."""

    def held(found: Counter[str], wanted: Counter[str]) -> int:
        return sum(found[k] for k in wanted)

    rows = [
        ("claims rows in Iceberg", held(sinks.iceberg_claim_keys, expected["claims"]),
         sum(expected["claims"].values())),
        ("records in the archive", held(sinks.archived_keys, expected["archived"]),
         sum(expected["archived"].values())),
        ("dead letters", held(sinks.dead_letters, expected["dead_letters"]), sum(expected["dead_letters"].values())),
    ]
    # Every routed sink: each record type's table and the curated topics (by business key).
    rows += [(f"routed to {sink}", held(sinks.routed.get(sink, Counter()), keys), sum(keys.values()))
             for sink, keys in sorted(expected["routed"].items())]
    print(f"\nrecords in: {expected['records']}  (exact re-sends for dedup to drop: {expected['resends_dropped']}; "
          f"an 834 member's dependents are records of their own)")
    for name, have, want in rows:
        print(f"  {name:<37} {have:>7}  expected {want:>7}  {'ok' if have == want else 'MISMATCH'}")
    print(f"  archive objects                       {sinks.archive_objects:>7}")
    reasons = Counter(sinks.dead_letter_reasons[k] for k in expected["dead_letters"] if k in sinks.dead_letter_reasons)
    print(f"  dead-letter reasons                   {dict(reasons)}")
    print(f"  peak RSS (stack + job)                {peak_rss / 2**20:7.0f} MiB")
    print(f"  job stopped with savepoint            {'yes' if stop_code == 0 else f'no (exit {stop_code})'}")
    print(f"  elapsed                               {elapsed_s:7.0f} s")
    ok = stop_code == 0 and all(have == want for _, have, want in rows)
    return 0 if ok else 1

"""The demo: stack up, publish synthetic feeds, run the ingest and partner delivery jobs, wait, stop, summarise.

The jobs run as their own processes (`python -m jobs.ingest`, `python -m jobs.partner_delivery`), as
they would under an operator. Partner deliveries go to the partner stand-in (infra/local/partner) on
loopback, at the shipped clearwater_health contract's rate limit, with OAuth2 client credentials from
the local Secrets Manager. The demo watches the sinks and the stand-in, then asks both jobs to stop with
a savepoint (SIGTERM) and reads everything back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from connectors.properties import (
    REPO_ROOT,
    IngestConfig,
    default_properties_path,
    load_ingest_config,
    medistream_home,
    read_property_groups,
)
from tools.demo_doors import API_FEED, PULL_FEED, SFTP_FEED, Doors, as_the_api_takes_it, entering
from tools.job_processes import RssSampler, start_job, stop_job
from tools.readback import covered, iceberg_claim_ids, linkage_digest, read_sinks, s3_client, split_s3_url


def publish_synthetic(
    cfg: IngestConfig, records: int, seed: int, duplicate_rate: float, invalid_rate: float,
    ground_truth: Path | None = None, doors: Doors | None = None,
) -> dict[str, Any]:
    """Publish reference data, then records for every feed contract in its own format; return expected counts.

    With `doors`, three feeds come through the ingestion API, an SFTP pull and a REST pull instead; the
    expected counts are then over the records that entered through a door (the API refuses some).
    """
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
    if doors is None:
        publish(generated, cfg.kafka.bootstrap_servers, s3, bucket, landing_prefix=prefix, contracts=contracts)
        return expected_outcome(generated, contracts, seed, linkage_digest(cfg))
    direct, by_door = doors.route(generated)
    publish(direct, cfg.kafka.bootstrap_servers, s3, bucket, landing_prefix=prefix, contracts=contracts,
            partner_folders={SFTP_FEED: doors.sftp_folder})
    accepted = doors.send(by_door)
    entered = entering(generated, direct, accepted, by_door[PULL_FEED])
    return expected_outcome(entered, contracts, seed, linkage_digest(cfg)) | {
        "doors": {"api_sent": len(by_door[API_FEED]), "api_accepted": len(accepted),
                  "api_refusable": sum(1 for g in by_door[API_FEED] if as_the_api_takes_it(g) is None),
                  "pull_offered": len(by_door[PULL_FEED])}}


class PartnerRun:
    """The partner stand-in and the delivery job of one demo run."""

    def __init__(self, log_path: Path) -> None:
        import json

        from connectors.kms import aws_client
        from infra.local.partner.harness import PARTNER, provision_credentials, standin_config, with_partners
        from infra.local.partner.server import start_in_thread
        from jobs.partner_delivery import load_delivery_config

        properties = default_properties_path()
        groups = read_property_groups(properties)
        contract = load_delivery_config(groups).contracts[PARTNER]
        self.standin = standin_config(contract.requests_per_second, contract.burst)
        self.partner = start_in_thread(self.standin)
        documents = with_partners(json.loads(properties.read_text()), {f"{PARTNER}.base.url": self.partner.url})
        self.properties = medistream_home() / "demo_partner_properties.json"
        self.properties.write_text(json.dumps(documents))
        cfg = load_delivery_config(read_property_groups(self.properties))
        provision_credentials(aws_client(cfg.phi, "secretsmanager"), contract, self.standin)
        self.limit = contract.requests_per_second
        argv = [sys.executable, "-m", "jobs.partner_delivery", "--properties", str(self.properties)]
        with log_path.open("ab") as log:
            self.job = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                        env=os.environ.copy(), start_new_session=True)

    def stats(self) -> dict[str, Any]:
        """The stand-in's counts (deliveries per business key, statuses, busiest second)."""
        import json
        import urllib.request

        with urllib.request.urlopen(self.partner.url + "/v1/_stats", timeout=30) as answer:  # noqa: S310 - loopback
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def stop(self) -> int:
        """Stop the delivery job with a savepoint, then the stand-in."""
        try:
            return stop_job(self.job)
        finally:
            self.partner.stop()


def run_demo(records: int, seed: int, timeout_s: float) -> int:
    """The first README command after set-up; returns the process exit code."""
    from infra.local import stack

    started = time.monotonic()
    print("== starting the local stack (Kafka, S3/KMS API, Iceberg catalog)")
    status = stack.up()
    cfg = load_ingest_config(read_property_groups(default_properties_path()))
    print(f"== starting the ingest doors: the REST ingestion API ({API_FEED}), an SFTP puller ({SFTP_FEED}) and "
          f"a REST puller ({PULL_FEED}), with partner servers on loopback")
    doors = Doors(medistream_home())
    try:
        doors.start()
        print(f"== publishing {records} synthetic records (claims, payments, eligibility; 4-12 KB; seed {seed})")
        expected = publish_synthetic(cfg, records, seed, duplicate_rate=0.02, invalid_rate=0.03, doors=doors)
    except BaseException:
        doors.stop()
        raise
    # The sinks may hold earlier runs' rows (the job resumes from its last savepoint): this run's
    # seed gives new record ids, and only those are compared.
    log_path = medistream_home() / "logs" / "ingest.log"
    print(f"== running the ingest job on the embedded mini-cluster (log: {log_path})")
    job = start_job(log_path)
    partner_log = medistream_home() / "logs" / "partner_delivery.log"
    print(f"== running the partner delivery job against the partner stand-in (log: {partner_log})")
    delivery = PartnerRun(partner_log)
    sampler = RssSampler([job.pid, delivery.job.pid, *(c.pid for c in (status.kafka, status.moto) if c.pid),
                          *doors.pids()])
    sampler.start()
    want = sum(expected["claims"].values())
    to_partner = expected["routed"].get("partner:clearwater_health", Counter())
    partner_stats: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            for name, process, path in (("ingest", job, log_path), ("delivery", delivery.job, partner_log)):
                if process.poll() is not None:
                    print(f"\nmedistream: the {name} job exited early ({process.returncode}); see {path}",
                          file=sys.stderr)
                    return 1
            have = covered(iceberg_claim_ids(cfg, "business_key"), expected["claims"])
            partner_stats = delivery.stats()
            delivered = sum(1 for k in to_partner if k in partner_stats["deliveries_by_business_key"])
            door_stats = doors.summary()
            doors_done = (door_stats["sftp_landed"] >= door_stats["sftp_files"]
                          and door_stats["pull_served"]["records_never_served"] == 0)
            print(f"\r   claims committed to Iceberg: {have}/{want}; delivered to the partner: "
                  f"{delivered}/{len(to_partner)}; SFTP files landed: {door_stats['sftp_landed']}/"
                  f"{door_stats['sftp_files']}  ({time.monotonic() - started:5.0f} s)", end="", flush=True)
            if have >= want and delivered >= len(to_partner) and doors_done:
                break
            if time.monotonic() > deadline:
                print(f"\nmedistream: timed out after {timeout_s:.0f} s waiting for the sinks", file=sys.stderr)
                return 1
            time.sleep(2)
        # One more checkpoint so the archive and dead-letter commits of the same records complete.
        time.sleep(cfg.checkpoints.interval_ms / 1000 * 2)
    finally:
        print("\n== stopping the jobs with a savepoint")
        code = stop_job(job)
        partner_code = delivery.stop()
        door_stats = doors.summary()
        doors.stop()
        sampler.stop()
    sinks = read_sinks(cfg)
    held = Counter({k: partner_stats.get("deliveries_by_business_key", {}).get(k, 0) for k in to_partner})
    partner = {"held": held, "wanted": to_partner, "stop_code": partner_code, "limit": delivery.limit,
               "max_per_1s": partner_stats.get("max_admitted_per_1s", 0),
               "refused_429": partner_stats.get("by_status", {}).get("429", 0)}
    served = door_stats["pull_served"]
    door_rows = [
        ("refused at the API door (400)", door_stats["api_answers"].get(400, 0), expected["doors"]["api_refusable"]),
        ("accepted by the API (202)", door_stats["api_answers"].get(202, 0), expected["doors"]["api_accepted"]),
        ("SFTP files landed once", door_stats["sftp_landed"], door_stats["sftp_files"]),
        ("REST pull records served once", served["records"] - served["records_never_served"]
         - served["records_served_more_than_once"], expected["doors"]["pull_offered"]),
    ]
    return print_summary(expected, sinks, code, sampler.peak_bytes, time.monotonic() - started, partner, door_rows)


def print_summary(expected: dict[str, Any], sinks: Any, stop_code: int, peak_rss: int, elapsed_s: float,
                  partner: dict[str, Any] | None = None, door_rows: list[tuple[str, int, int]] | None = None) -> int:
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
    if partner is not None:  # exactly once by business key at the stand-in
        rows.append(("delivered to the partner (stand-in)", sum(partner["held"].values()),
                     sum(partner["wanted"].values())))
    rows += door_rows or []
    print(f"\nrecords in: {expected['records']}  (exact re-sends for dedup to drop: {expected['resends_dropped']}; "
          f"an 834 member's dependents are records of their own)")
    for name, have, want in rows:
        print(f"  {name:<37} {have:>7}  expected {want:>7}  {'ok' if have == want else 'MISMATCH'}")
    print(f"  archive objects                       {sinks.archive_objects:>7}")
    reasons = Counter(sinks.dead_letter_reasons[k] for k in expected["dead_letters"] if k in sinks.dead_letter_reasons)
    print(f"  dead-letter reasons                   {dict(reasons)}")
    print(f"  peak RSS (stack, jobs, doors)         {peak_rss / 2**20:7.0f} MiB")
    if partner is not None:
        print(f"  partner busiest second / 429s         {partner['max_per_1s']:>7}  (limit {partner['limit']:g}/s; "
              f"429s: {partner['refused_429']})")
        stop_code = stop_code or partner["stop_code"]
    print(f"  jobs stopped with savepoint           {'yes' if stop_code == 0 else f'no (exit {stop_code})'}")
    print(f"  elapsed                               {elapsed_s:7.0f} s")
    ok = stop_code == 0 and all(have == want for _, have, want in rows)
    return 0 if ok else 1

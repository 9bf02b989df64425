"""The demo: stack up, publish synthetic feeds, run the ingest and partner delivery jobs, wait, stop, summarise.

The jobs run as their own processes (`python -m jobs.ingest`, `python -m jobs.partner_delivery`), as
they would under an operator. Partner deliveries go to the partner stand-in (infra/local/partner) on
loopback, at the shipped clearwater_health contract's rate limit, with OAuth2 client credentials from
the local Secrets Manager. The demo watches the sinks and the stand-in, then asks both jobs to stop with
a savepoint (SIGTERM) and reads everything back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess  # nosec B404 # - the demo starts our own modules as child processes, fixed argv
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.properties import (
    REPO_ROOT,
    CheckpointConfig,
    IngestConfig,
    default_properties_path,
    load_ingest_config,
    medistream_home,
    read_property_groups,
)
from jobs.runtime import latest_restore_point, savepoint_directory
from tools.cluster_config import ClusterSettings
from tools.demo_doors import API_FEED, PULL_FEED, SFTP_FEED, Doors, as_the_api_takes_it, entering
from tools.job_processes import RssSampler, start_job, stop_job
from tools.readback import (
    covered,
    expected_signals,
    fraud_signals,
    iceberg_claim_ids,
    iceberg_column,
    linkage_digest,
    matched_signals,
    read_sinks,
    s3_client,
    split_s3_url,
)

DEMO_JOBS = ("ingest", "partner_delivery")
FRAUD_RATE = 0.02  # the share of original claims that start a planted fraud pattern (synthetic.FraudPlanter)
DEVICE_EVENTS_MIN = 1000  # device events put on the Kinesis stream: a fifth of the records, at least this many


def publish_synthetic(
    cfg: IngestConfig, records: int, seed: int, duplicate_rate: float, invalid_rate: float,
    ground_truth: Path | None = None, doors: Doors | None = None, fraud_rate: float = 0.0,
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
                                        invalid_rate=invalid_rate, feeds=feeds, fraud_rate=fraud_rate))
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


def publish_device_events(cfg: IngestConfig, groups: Mapping[str, Mapping[str, str]], count: int, seed: int,
                          ground_truth: Path | None = None, per_second: float | None = None) -> dict[str, Any]:
    """Put `count` generated device events on the Kinesis stream of the `kinesis_pull` group (2 shards, created if
    missing), where the Kinesis door reads them; return their expected outcome (infra.local.ground_truth)."""
    from connectors.kinesis_pull.config import load_kinesis_pull_config
    from connectors.kms import aws_client
    from infra.local.device_events import ensure_stream, generate_device_events, put_to_kinesis, write_ground_truth
    from infra.local.ground_truth import device_outcome
    from schemas.contracts import FEEDS_DIR, load_contracts

    door = load_kinesis_pull_config(groups)
    contract = load_contracts(Path(cfg.feeds.contracts_dir) if cfg.feeds.contracts_dir else FEEDS_DIR)[door.feed]
    events = generate_device_events(count, seed, feed=door.feed)
    if ground_truth is not None:
        write_ground_truth(ground_truth, events)
    kinesis = aws_client(cfg.phi, "kinesis")
    ensure_stream(kinesis, door.stream)
    put_to_kinesis(kinesis, door.stream, events, per_second=per_second)
    return device_outcome(events, contract, linkage_digest(cfg)) | {"feed": door.feed, "stream": door.stream}


class ShippedPartner:
    """The stand-in for the shipped clearwater_health contract, at that contract's rate limit, with its
    OAuth2 credentials in the local Secrets Manager and its URL in the `partners` group of `properties`
    (rewritten in place, with `group` merged in). What the demo and the packaged-zip tests deliver to.

    `faults` are the stand-in's (PartnerConfig: reject_fraction, fail_rate, ...). `down()` is an outage
    (nothing listens on its port); `up(**faults)` serves again on the same port, as a new instance that
    remembers no delivery, so a re-send of a delivered key shows as a second delivery in `deliveries()`,
    which counts across every instance."""

    def __init__(self, properties: Path, group: Mapping[str, str] | None = None, **faults: Any) -> None:
        from connectors.kms import aws_client
        from infra.local.partner.harness import PARTNER, provision_credentials, standin_config, with_partners
        from infra.local.partner.server import start_in_thread
        from jobs.partner_delivery import load_delivery_config

        contract = load_delivery_config(read_property_groups(properties)).contracts[PARTNER]
        self.limit = contract.requests_per_second
        self.standin = standin_config(contract.requests_per_second, contract.burst, **faults)
        self.server: Any = start_in_thread(self.standin)
        self.url: str = self.server.url
        self.standin = dataclasses.replace(self.standin, port=urlsplit(self.url).port or 0)
        self.earlier: Counter[str] = Counter()  # deliveries accepted by instances since stopped
        documents = with_partners(json.loads(properties.read_text()),
                                  {f"{PARTNER}.base.url": self.url, **(group or {})})
        properties.write_text(json.dumps(documents))
        cfg = load_delivery_config(read_property_groups(properties))
        provision_credentials(aws_client(cfg.phi, "secretsmanager"), contract, self.standin)

    def stats(self) -> dict[str, Any]:
        """The serving instance's counts (deliveries per business key, statuses, busiest second)."""
        with urllib.request.urlopen(self.url + "/v1/_stats", timeout=30) as answer:  # noqa: S310 - loopback
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def deliveries(self) -> dict[str, int]:
        """Deliveries accepted per business key, by every instance so far."""
        serving = Counter(self.stats()["deliveries_by_business_key"]) if self.server else Counter()
        return dict(self.earlier + serving)

    def down(self) -> None:
        """An outage: the instance stops (its deliveries kept in `earlier`); requests are refused until `up`."""
        if self.server is not None:
            self.earlier += Counter(self.stats()["deliveries_by_business_key"])
            self.server.stop()
            self.server = None

    def up(self, **faults: Any) -> None:
        """Serve again on the same port and credentials, with `faults` (none given: the same as before)."""
        from infra.local.partner.server import start_in_thread

        self.down()
        if faults:
            self.standin = dataclasses.replace(self.standin, **faults)
        self.server = start_in_thread(self.standin)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class EmbeddedJobs:
    """The ingest and partner delivery jobs, each its own process with its own embedded mini-cluster."""

    where = "on the embedded mini-cluster"

    def __init__(self, properties: Path) -> None:
        self.properties = properties
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = {job: medistream_home() / "logs" / f"{job}.log" for job in DEMO_JOBS}
        self.runs: dict[str, str] = {}  # job -> its OpenLineage run id
        self.rest_port = 0

    def start(self) -> None:
        """Start both jobs; each resumes from its newest checkpoint or savepoint. Each run's START goes to lineage."""
        from infra.local.process import free_loopback_port
        from tools import lineage

        self.rest_port = free_loopback_port()  # the ingest job's REST API: its counts for lineage, read at stop
        self.processes["ingest"] = start_job(self.logs["ingest"], self.properties, self.rest_port)
        argv = [sys.executable, "-m", "jobs.partner_delivery", "--properties", str(self.properties)]
        with self.logs["partner_delivery"].open("ab") as log:
            # B603 - our own interpreter and module, fixed argv, no shell
            self.processes["partner_delivery"] = subprocess.Popen(
                argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
                start_new_session=True)
        self.runs = {job: str(uuid.uuid4()) for job in self.processes}
        for job, run in self.runs.items():
            lineage.emit("START", job, self.properties, run, where="embedded mini-cluster")

    def failure(self) -> str | None:
        """Why a job is no longer running, if one is not."""
        for job, proc in self.processes.items():
            if proc.poll() is not None:
                return f"the {job} job exited early ({proc.returncode}); see {self.logs[job]}"
        return None

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes.values()]

    def stop(self) -> int:
        """Stop both with a savepoint (SIGTERM); the first non-zero exit code, else 0."""
        from tools import lineage
        from tools.minicluster_rest import MiniClusterRest

        quality: dict[str, dict[str, Any]] = {}
        if self.processes.get("ingest") is not None and self.processes["ingest"].poll() is None:
            # read while it runs: the run's counts per feed, for its COMPLETE event's dataQuality facet
            quality = lineage.run_quality(self.properties, lambda: MiniClusterRest.of_only_job(self.rest_port))
        codes = {job: stop_job(proc) for job, proc in self.processes.items()}
        for job, code in codes.items():
            if job not in self.runs:
                continue
            if code:
                lineage.emit("FAIL", job, self.properties, self.runs[job], error=f"exit code {code}")
            else:
                lineage.emit("COMPLETE", job, self.properties, self.runs[job],
                             quality=quality if job == "ingest" else None)
        return next((code for code in codes.values() if code), 0)


class ClusterJobs:
    """Both jobs from the packaged zip on `medistream cluster`, the way Managed Flink runs them.

    One savepoint lineage with the embedded demo: each job resumes from the newest savepoint or
    checkpoint in its local folder and is stopped with a savepoint into the same folder, so embedded
    and cluster runs can follow one another without reading a record twice.
    """

    where = "on the local Flink cluster, from the packaged zip (parallelism 2)"

    def __init__(self, properties: Path, checkpoints: dict[str, CheckpointConfig]) -> None:
        self.properties, self.checkpoints = properties, checkpoints
        self.settings = ClusterSettings.from_env()
        self.job_ids: dict[str, str] = {}
        self.started_cluster: list[str] = []

    def start(self) -> None:
        """Package, start the cluster (if it is not up) with the Python 3.12 runtime, deploy both jobs."""
        from tools import cluster, deploy
        from tools.attest import sign_local
        from tools.package import Target, build

        print("== packaging the Managed Flink zip and signing it with the local release key")
        zip_path = sign_local(build(Target(deploy.RUNTIME_PYTHON), REPO_ROOT / "dist"))  # deploy verifies it first
        python = deploy.ensure_runtime()
        self.settings = ClusterSettings.from_env(python_executable=str(python))
        print(f"== starting the local Flink cluster unless it is up ({self.settings.rest_url()})")
        self.started_cluster = cluster.up(self.settings).get("started", [])
        savepoints = {job: Path(found).as_uri() for job, chk in self.checkpoints.items()
                      if (found := latest_restore_point(chk))}
        print(f"== deploying {zip_path.name}: {', '.join(DEMO_JOBS)} (resuming from "
              f"{', '.join(f'{j}: {Path(p).name}' for j, p in savepoints.items()) or 'nothing'})")
        self.job_ids = deploy.deploy(zip_path, DEMO_JOBS, settings=self.settings, base_properties=self.properties,
                                     savepoints=savepoints)["jobs"]

    def failure(self) -> str | None:
        """Why a job is no longer running, with its root cause, if one is not."""
        from tools import cluster_status

        for job, job_id in self.job_ids.items():
            state = (cluster_status.rest_get(self.settings, f"/jobs/{job_id}") or {}).get("state")
            if state in ("FAILED", "CANCELED", "FINISHED"):
                cause = (cluster_status.job_exceptions(self.settings, job_id) or {}).get("root_cause", "")
                return f"the {job} job is {state} on the cluster: {cause or 'see medistream cluster status'}"
        return None

    def pids(self) -> list[int]:
        from tools import cluster

        return [proc.pid for proc in cluster.running(self.settings).values() if proc is not None]

    def stop(self) -> int:
        """Stop both with a savepoint into their local savepoint folders; take down a cluster started here."""
        from tools import cluster, deploy

        code = 0
        try:
            for job, job_id in self.job_ids.items():
                try:
                    where = savepoint_directory(self.checkpoints[job])
                    stopped = deploy.stop(job_id, self.settings, target_directory=where)
                    code = code or (0 if stopped["state"] == "FINISHED" else 1)
                except deploy.DeployError as err:
                    print(f"medistream: {err}", file=sys.stderr)
                    code = 1
        finally:
            if len(self.started_cluster) == len(self.settings.processes()):
                cluster.down(self.settings)
        return code


def start_console(properties: Path, prometheus_url: str | None) -> Any:
    """The ops console for the demo's run, with a fresh viewer token in a file; None (said why) if it cannot start.

    The console only watches: a failure to start it never stops the demo.
    """
    from tools.ops_console.command import demo_token, start_background

    try:
        token = demo_token(read_property_groups(properties), medistream_home() / "ops-console")
        child, url = start_background(properties, medistream_home() / "logs" / "ops-console.log", prometheus_url)
    except Exception as err:  # the demo goes on without its observer
        print(f"== the ops console did not start ({type(err).__name__}: {err}); the demo goes on without it")
        return None
    print(f"== ops console on {url}/ while the demo runs; sign in with the viewer token in {token}")
    return child


def start_watcher(properties: Path, name: str, command: list[str], what: str) -> subprocess.Popen[bytes] | None:
    """A `medistream` watch command as a child process for the demo's run, its output in logs/<name>.log.

    Like the console, a watcher only watches: a failure to start it never stops the demo.
    """
    log_file = medistream_home() / "logs" / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tools.cli", *command]
    try:
        with log_file.open("wb") as log:  # this run's output only: the summary reads the last line
            # B603 - our own interpreter and module, fixed argv, no shell
            child = subprocess.Popen(argv, env={**os.environ, "MEDISTREAM_PROPERTIES": str(properties)},
                                     stdout=log, stderr=subprocess.STDOUT)
    except OSError as err:
        print(f"== {name} did not start ({type(err).__name__}); the demo goes on without it")
        return None
    print(f"== {what} (pid {child.pid}; {log_file})")
    return child


def start_audit_watch(properties: Path, interval_s: int = 15) -> subprocess.Popen[bytes] | None:
    """`medistream audit watch`: the chain verified every `interval_s`, its verdict served to Prometheus
    (the AuditChainBroken and AuditVerificationStale alerts read it)."""
    return start_watcher(properties, "audit-watch", ["audit", "watch", "--interval", str(interval_s)],
                         f"the audit chain is verified every {interval_s} s while the demo runs")


def start_freshness_watch(properties: Path, interval_s: int = 10) -> subprocess.Popen[bytes] | None:
    """`medistream freshness watch`: the Iceberg tables' and the archive's commits read every `interval_s`,
    served to Prometheus (SinkDelayOverTarget reads the tables' delay)."""
    return start_watcher(properties, "freshness-watch", ["freshness", "watch", "--interval", str(interval_s)],
                         f"the sinks' freshness is read from their commits every {interval_s} s")


def last_report(log_file: Path) -> dict[str, Any] | None:
    """The last JSON object a watcher wrote to its log (one per pass), or None."""
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.startswith("{")]
        last = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
    return last if isinstance(last, dict) else None


def audit_verdict(log_file: Path | None = None) -> str:
    """The audit watch's last verdict in this run, in words (its log holds one JSON object per check)."""
    last = last_report(log_file or medistream_home() / "logs" / "audit-watch.log")
    if last is None:
        return "no verdict (the watch did not report; see its log)"
    return (f"chain intact, {last.get('entries')} entries" if last.get("ok")
            else f"BROKEN at seq {last.get('first_bad_seq')}: {last.get('problem')}")


def freshness_verdict(log_file: Path | None = None) -> str:
    """Each Iceberg table's delay in the freshness watch's last pass: commit time minus its oldest row's ingest."""
    last = last_report(log_file or medistream_home() / "logs" / "freshness-watch.log")
    if last is None or not last.get("iceberg"):
        return "no commit read (the watch did not report; see its log)"
    delays = ", ".join(f"{table} {commit['delay_s']:.1f} s" for table, commit in sorted(last["iceberg"].items())
                       if isinstance(commit.get("delay_s"), (int, float)))
    return delays + (f"; read errors: {len(last['errors'])}" if last.get("errors") else "")


def stop_console(console: Any) -> None:
    """Stop the demo's console (if it started)."""
    if console is not None:
        from tools.ops_console.command import stop_background

        stop_background(console)


def run_demo(records: int, seed: int, timeout_s: float, on_cluster: bool = False) -> int:
    """The first README command after set-up (`on_cluster`: the jobs from the zip on the local cluster);
    returns the process exit code."""
    from infra.local import stack
    from infra.local.ground_truth import merge_outcomes
    from jobs.partner_delivery import load_delivery_config

    started = time.monotonic()
    print("== starting the local stack (Kafka, S3/KMS API, Iceberg catalog)")
    status = stack.up()
    if status.prometheus is not None:
        print(f"== Prometheus on {status.prometheus.endpoint} scrapes every job and door it finds; alerts: "
              f"{status.prometheus.endpoint}/alerts")
    # One properties file for both jobs: the shipped ones, with the partner stand-in's URL.
    properties = medistream_home() / "demo_properties.json"
    properties.write_text(default_properties_path().read_text())
    partner = ShippedPartner(properties)
    groups = read_property_groups(properties)
    cfg = load_ingest_config(groups)
    checkpoints = {"ingest": cfg.checkpoints, "partner_delivery": load_delivery_config(groups).checkpoints}
    jobs: EmbeddedJobs | ClusterJobs = ClusterJobs(properties, checkpoints) if on_cluster else EmbeddedJobs(properties)
    print(f"== starting the ingest doors: the REST ingestion API ({API_FEED}), an SFTP puller ({SFTP_FEED}) and "
          f"a REST puller ({PULL_FEED}), with partner servers on loopback")
    doors = Doors(medistream_home())
    console = start_console(properties, status.prometheus.endpoint if status.prometheus else None)
    watchers = [start_audit_watch(properties), start_freshness_watch(properties)]
    try:
        doors.start()
        print(f"== publishing {records} synthetic records (claims, payments, eligibility; 4-12 KB; seed {seed})")
        expected = publish_synthetic(cfg, records, seed, duplicate_rate=0.02, invalid_rate=0.03, doors=doors,
                                     fraud_rate=FRAUD_RATE)
        device_count = max(DEVICE_EVENTS_MIN, records // 5)
        print(f"== putting {device_count} device events on the local Kinesis stream (2 shards; out-of-order, late, "
              f"skewed and re-sent ones among them) for the Kinesis door")
        devices = publish_device_events(cfg, read_property_groups(doors.properties), device_count, seed)
        expected = merge_outcomes(expected, devices) | {"devices": devices}
        # The sinks may hold earlier runs' rows (the jobs resume from their last savepoint): this run's
        # seed gives new record ids, and only those are compared.
        print(f"== running the ingest and partner delivery jobs {jobs.where}; deliveries go to the partner "
              f"stand-in at {partner.url} (logs: {medistream_home() / 'logs'})")
        jobs.start()
    except BaseException:
        doors.stop()
        partner.stop()
        for child in (console, *watchers):
            stop_console(child)
        raise
    sampler = RssSampler([*jobs.pids(), *(c.pid for c in (status.kafka, status.moto) if c.pid), *doors.pids()])
    sampler.start()
    want = sum(expected["claims"].values())
    to_partner = expected["routed"].get("partner:clearwater_health", Counter())
    device_keys = expected["devices"]["routed"].get("iceberg:device_event", Counter())
    partner_stats: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            failure = jobs.failure()
            if failure:
                print(f"\nmedistream: {failure}", file=sys.stderr)
                return 1
            have = covered(iceberg_claim_ids(cfg, "business_key"), expected["claims"])
            readings = covered(iceberg_column(cfg, "device_events", "business_key"), device_keys)
            signals = fraud_coverage(expected, fraud_signals(cfg))
            partner_stats = partner.stats()
            delivered = sum(1 for k in to_partner if k in partner_stats["deliveries_by_business_key"])
            door_stats = doors.summary()
            doors_done = (door_stats["sftp_landed"] >= door_stats["sftp_files"]
                          and door_stats["pull_served"]["records_never_served"] == 0)
            print(f"\r   claims committed to Iceberg: {have}/{want}; delivered to the partner: "
                  f"{delivered}/{len(to_partner)}; SFTP files landed: {door_stats['sftp_landed']}/"
                  f"{door_stats['sftp_files']}; fraud signals: {min(signals.values(), default=0)}/"
                  f"{sum(expected_signals(expected['fraud']).values())}; device events in Iceberg: "
                  f"{readings}/{sum(device_keys.values())}  ({time.monotonic() - started:5.0f} s)",
                  end="", flush=True)
            if have >= want and delivered >= len(to_partner) and doors_done and readings >= sum(
                    device_keys.values()) and all(
                    n >= sum(expected_signals(expected["fraud"]).values()) for n in signals.values()):
                break
            if time.monotonic() > deadline:
                print(f"\nmedistream: timed out after {timeout_s:.0f} s waiting for the sinks", file=sys.stderr)
                return 1
            time.sleep(2)
        # One more checkpoint so the archive and dead-letter commits of the same records complete.
        time.sleep(cfg.checkpoints.interval_ms / 1000 * 2)
    finally:
        print("\n== stopping the jobs with a savepoint")
        code = jobs.stop()
        partner_stats = partner.stats()  # after the stop: a retry in flight at the end is counted too
        partner.stop()
        door_stats = doors.summary()
        doors.stop()
        for child in (console, *watchers):
            stop_console(child)
        sampler.stop()
    sinks = read_sinks(cfg)
    held = Counter({k: partner_stats["deliveries_by_business_key"].get(k, 0) for k in to_partner})
    summary = {"held": held, "wanted": to_partner, "limit": partner.limit,
               "max_per_1s": partner_stats.get("max_admitted_per_1s", 0),
               "refused_429": partner_stats.get("by_status", {}).get("429", 0)}
    served = door_stats["pull_served"]
    door_rows = [
        ("refused at the API door (400)", door_stats["api_answers"].get(400, 0), expected["doors"]["api_refusable"]),
        ("accepted by the API (202)", door_stats["api_answers"].get(202, 0), expected["doors"]["api_accepted"]),
        ("SFTP files landed once", door_stats["sftp_landed"], door_stats["sftp_files"]),
        ("REST pull records served once", served["records"] - served["records_never_served"]
         - served["records_served_more_than_once"], expected["doors"]["pull_offered"]),
        *device_rows(expected["devices"], sinks),
    ]
    return print_summary(expected, sinks, code, sampler.peak_bytes, time.monotonic() - started, summary, door_rows)


def device_rows(devices: dict[str, Any], sinks: Any) -> list[tuple[str, int, int]]:
    """The device feed's dead letters by reason, held against the ground truth (its tables are routed rows)."""
    # The read-back names a reason as <stage>.<code> (tools/readback.py); the ground truth by its code.
    held = Counter(sinks.dead_letter_reasons[k].rpartition(".")[2] for k in devices["dead_letters"]
                   if k in sinks.dead_letter_reasons)
    return [(f"device dead letters: {reason}", held[reason], want)
            for reason, want in sorted(devices["dead_letter_reasons"].items())]


def fraud_coverage(expected: dict[str, Any], signals: dict[str, list[Any]]) -> dict[str, int]:
    """Per signal sink, how many of the ground truth's fraud patterns it holds a signal of."""
    patterns = expected_signals(expected["fraud"])
    return {where: covered(matched_signals(expected["fraud"], found, set(expected["archived"])), patterns)
            for where, found in signals.items()}


def fraud_quality(expected: dict[str, Any], sinks: Any) -> dict[str, str]:
    """Per rule: patterns planted or present, signals in Iceberg, precision and recall against the ground truth."""
    found = matched_signals(expected["fraud"], sinks.fraud_signals.get("iceberg", []), set(expected["archived"]))
    lines = {}
    for rule, groups in sorted(expected["fraud"].items()):
        mine = {k: n for k, n in found.items() if k.startswith(f"{rule}/")}
        right = sum(n for k, n in mine.items() if "/unexpected/" not in k)
        signals = sum(mine.values())
        precision = f"{right / signals:.2f}" if signals else "n/a"
        recall = f"{len({k for k in mine if '/unexpected/' not in k}) / len(groups):.2f}" if groups else "n/a"
        lines[rule] = f"{signals:>7}  patterns {len(groups):>5}; precision {precision}, recall {recall}"
    return lines


def firing_alerts() -> str:
    """The alerts the stack's Prometheus fires now, by name and count (rules: ops/alerts.yaml)."""
    from infra.local import prometheus

    try:
        found = prometheus.alerts(prometheus.PrometheusSettings.from_env(medistream_home()))
    except (OSError, ValueError, KeyError) as err:
        return f"(Prometheus not reachable: {type(err).__name__})"
    names = Counter(a["labels"].get("alertname", "?") for a in found if a.get("state") == "firing")
    return ", ".join(f"{name} x{n}" for name, n in sorted(names.items())) or "none"


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
    # The fraud signals: each planted or natural pattern once per sink, and no signal outside them.
    patterns = expected_signals(expected["fraud"])
    for where, signals in sinks.fraud_signals.items():
        found = matched_signals(expected["fraud"], signals, set(expected["archived"]))
        rows += [(f"fraud signals ({where})", sum(1 for k in patterns if found[k] == 1), sum(patterns.values())),
                 (f"fraud signals ({where}) extra", sum((found - patterns).values()), 0)]
    if partner is not None:  # exactly once by business key at the stand-in
        rows.append(("delivered to the partner (stand-in)", sum(partner["held"].values()),
                     sum(partner["wanted"].values())))
    rows += door_rows or []
    print(f"\nrecords in: {expected['records']}  (exact re-sends for dedup to drop: {expected['resends_dropped']}; "
          f"an 834 member's dependents are records of their own)")
    for name, have, want in rows:
        print(f"  {name:<37} {have:>7}  expected {want:>7}  {'ok' if have == want else 'MISMATCH'}")
    print(f"  archive objects                       {sinks.archive_objects:>7}")
    for rule, line in fraud_quality(expected, sinks).items():
        print(f"  {'fraud rule ' + rule:<37} {line}")
    reasons = Counter(sinks.dead_letter_reasons[k] for k in expected["dead_letters"] if k in sinks.dead_letter_reasons)
    print(f"  dead-letter reasons                   {dict(reasons)}")
    print(f"  peak RSS (stack, jobs, doors)         {peak_rss / 2**20:7.0f} MiB")
    if partner is not None:
        print(f"  partner busiest second / 429s         {partner['max_per_1s']:>7}  (limit {partner['limit']:g}/s; "
              f"429s: {partner['refused_429']})")
    print(f"  jobs stopped with savepoint           {'yes' if stop_code == 0 else f'no (exit {stop_code})'}")
    print(f"  alerts firing (local Prometheus)      {firing_alerts()}")
    print(f"  {'audit chain (`audit watch`)':<37} {audit_verdict()}")
    print(f"  {'Iceberg delay, last commit (ingest->)':<37} {freshness_verdict()}")
    print(f"  elapsed                               {elapsed_s:7.0f} s")
    ok = stop_code == 0 and all(have == want for _, have, want in rows)
    return 0 if ok else 1

"""`medistream batch`: one date of one file feed through the ingest job's stages and sinks, as a bounded run.

    medistream batch --actor NAME --role ROLE --reason TEXT --feed F --date YYYY-MM-DD [--dry-run] [--timeout S]

The files of feed F for date D land under `<batch.path>F/D/` (a prefix the live ingest job does not
read). The run builds the SAME job graph as the live job (jobs/ingest.py `build`) on the embedded
mini-cluster, without the Kafka source and with the landing source on that one folder, under its own job
name (`medistream-batch-F`: its Kafka transactional ids never meet the live job's), so every record goes
through the same stages to the same sinks (Iceberg, archive, dead letters, curated topics), exactly once.

Re-running a date changes nothing downstream because the batch job carries its state from run to run
(decision 0026): it restores the feed's last batch savepoint (the file source's memory of the files it
read, the dedup and dead-letter dedup state), so a file already read is not read again and a record
already delivered is dropped; a file added to the date since is read once, a correction flows once. The
run waits until the source has emitted every file of the date it has not read before (its numRecordsOut
through the mini-cluster's REST API), takes a checkpoint (the counts then hold every record), stops with a
savepoint (the two-phase-commit sinks commit everything before it) and records that savepoint in the
feed's batch state, `<batch.path>_state/F.json`.

Refused with one line, changing nothing: a role without `batch`, an unknown feed, a feed without the
`landing` door, a date badly formed or in the future, a date with no files, a second batch run of the
feed while one runs (the operation lease of tools/operation_lease.py). Audited before and after (counts,
savepoints). Progress on stderr, a JSON summary on stdout; never a payload.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess  # nosec B404: our own job module, fixed argv
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from connectors.audit import load_audit_settings, open_audit_log
from connectors.iceberg import split_s3_url
from connectors.lineage.datasets import Dataset, ingest_datasets, url_dataset
from connectors.properties import (
    REPO_ROOT,
    IngestConfig,
    batch_folder,
    batch_ingest_config,
    default_properties_path,
    load_batch_path,
    load_ingest_config,
    medistream_home,
    read_property_groups,
)
from schemas.contracts import load_contracts
from tools import lineage
from tools.job_control import Operator, authorize
from tools.job_interface import JobControlError
from tools.job_processes import stop_job
from tools.operation_lease import LEASE_S, take_lease

STATE_FOLDER = "_state"  # below batch.path; Flink's file source skips names starting with "_"
SOURCE = "Source__landing-files"  # the landing source's operator in the metrics
DEDUP, LETTERS = "Deduplicate", "dead-letters-once"
START_S = 600.0  # at most this long for the job's tasks to be running


class BatchError(JobControlError):
    """A refusal or failure the operator reads: one line, PHI-free."""


def parse_date(text: str) -> date:
    """A calendar date written YYYY-MM-DD."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise BatchError(f"--date {text!r} is not a date written YYYY-MM-DD (e.g. 2026-12-03)")


def check_request(feed: str, day: date, today: date, contracts: Mapping[str, Any]) -> None:
    """Refuse a feed that is not a known file feed, or a date still to come."""
    if feed not in contracts:
        raise BatchError(f"no feed {feed!r} (feeds: {', '.join(sorted(contracts))})")
    if "landing" not in contracts[feed].sources:
        raise BatchError(f"feed {feed!r} is not a file feed (its doors: {', '.join(contracts[feed].sources)}); "
                         "batch runs read landed files")
    if day > today:
        raise BatchError(f"--date {day.isoformat()} is in the future (today is {today.isoformat()} UTC)")


def date_files(s3: Any, folder: str) -> list[str]:
    """The keys of a date folder's files, as the file source sees them (names starting with _ or . are skipped)."""
    bucket, prefix = split_s3_url(folder)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not any(part.startswith(("_", ".")) for part in item["Key"][len(prefix):].split("/")):
                keys.append(item["Key"])
    return keys


@dataclass
class BatchState:
    """A feed's batch memory between runs: its last savepoint and how many files of each date it has read."""

    feed: str
    savepoint: str | None = None
    dates: dict[str, dict[str, Any]] = field(default_factory=dict)  # date -> files_read, runs, last_run

    @staticmethod
    def key(batch_path: str, feed: str) -> tuple[str, str]:
        """(bucket, key) of the state object: <batch.path>_state/<feed>.json."""
        bucket, prefix = split_s3_url(batch_path)
        return bucket, f"{prefix}{STATE_FOLDER}/{feed}.json"

    @classmethod
    def load(cls, s3: Any, batch_path: str, feed: str) -> BatchState:
        """The feed's state, or an empty one before its first run."""
        bucket, key = cls.key(batch_path, feed)
        try:
            document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return cls(feed)
        return cls(feed, document.get("savepoint"), document.get("dates", {}))

    def save(self, s3: Any, batch_path: str) -> None:
        """Write the state (one writer per feed: the lease)."""
        bucket, key = self.key(batch_path, self.feed)
        s3.put_object(Bucket=bucket, Key=key, ContentType="application/json", Body=json.dumps(
            {"feed": self.feed, "savepoint": self.savepoint, "dates": self.dates}, indent=1, sort_keys=True).encode())

    def files_read(self, day: date) -> int:
        """How many files of `day` the batch job's source has read in earlier runs."""
        return int(self.dates.get(day.isoformat(), {}).get("files_read", 0))


@dataclass
class JobRun:
    """What one run of the batch job did, from Flink's operator counters (no payload read)."""

    savepoint: str | None = None
    files_read: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)  # per feed, for lineage's dataQuality facet
    complete: bool = False
    stopped: str = ""  # why it stopped before reading every new file: interrupted, out of time, failed

    def count(self, operator: str, metric: str) -> int:
        """One counter, 0 when the operator never reported it."""
        return self.counts.get(operator, {}).get(metric, 0)


def run_job(run: JobRun, cfg: IngestConfig, properties: Path, feed: str, day: date, restore: str | None,
            expected: int, timeout_s: float, log_path: Path, renew: Callable[[], None],
            progress: Callable[[str], None]) -> None:
    """Run `python -m jobs.ingest --batch F D` (the live job's graph, one JVM per run: the planner numbers SQL
    operators per JVM, so a second graph in one JVM would not restore the first's savepoint) until its source has
    read `expected` new files; then checkpoint, count, and SIGTERM it: it stops with a savepoint, as the live job
    does. `cfg` is the batch job's (batch_ingest_config). Interrupted (SIGTERM/SIGINT) or out of time: stopped
    with a savepoint all the same (what it delivered is committed and remembered). Either way `run.savepoint`
    is the newest savepoint or checkpoint of the feed's batch job, which holds what it committed."""
    from infra.local.process import free_loopback_port
    from jobs.runtime import latest_restore_point
    from tools.minicluster_rest import MiniClusterRest

    port = free_loopback_port()
    argv = [sys.executable, "-m", "jobs.ingest", "--properties", str(properties), "--batch", feed, day.isoformat(),
            "--rest-port", str(port), *(["--restore", restore] if restore else ["--fresh"])]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        job = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603  # nosec B603
                               start_new_session=True)
    stop: list[int] = []
    handlers = {signum: signal.signal(signum, lambda number, _frame: stop.append(number))
                for signum in (signal.SIGTERM, signal.SIGINT)}
    # The timeout counts from the moment every task runs: a thread-mode task opens its Python operator first
    # (contracts, reference data, keys), which took up to a minute on a loaded machine. Starting is bounded apart.
    start_by, deadline, renew_at = time.monotonic() + START_S, None, time.monotonic() + LEASE_S / 3
    rest, running = None, False
    try:
        while not stop and job.poll() is None:
            try:
                rest = rest or MiniClusterRest.of_only_job(port)
                state = rest.call("")
                running = state["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in state["vertices"])
                run.files_read = rest.operator_counts().get(SOURCE, {}).get("numRecordsOut", 0)
            except (OSError, KeyError, ValueError):  # REST not up yet, metrics not fetched yet
                running = False
            if running and run.files_read >= expected:
                run.complete = True
                break
            if running and deadline is None:
                deadline = time.monotonic() + timeout_s
            if deadline is not None and time.monotonic() > deadline:
                break
            if deadline is None and time.monotonic() > start_by:
                raise BatchError(f"the batch job's tasks were not all running after {START_S:.0f} s; see {log_path}")
            if time.monotonic() > renew_at:
                renew()
                renew_at = time.monotonic() + LEASE_S / 3
            time.sleep(0.25)
        if job.poll() is not None:
            raise BatchError(f"the batch job exited ({job.returncode}) after reading {run.files_read} file(s); "
                             f"see {log_path}")
        run.stopped = "" if run.complete else "interrupted" if stop else "out of time"
        progress(f"source read {run.files_read} of {expected} new file(s){f' ({run.stopped})' if run.stopped else ''}")
        if not running:  # interrupted while starting: no checkpoint can have completed, nothing was committed
            raise BatchError("interrupted before the batch job ran; nothing was delivered")
        if run.complete and rest is not None:
            rest.checkpoint_now()  # after it, every operator has counted every record the source emitted
            run.counts = rest.settled_counts((SOURCE, DEDUP, LETTERS))
            run.files_read = run.count(SOURCE, "numRecordsOut")
            run.quality = lineage.run_quality(properties, lambda: rest)  # counts by feed and reason, for lineage
        if stop_job(job) != 0:
            raise BatchError(f"the batch job did not stop with a savepoint; see {log_path}")
    except BaseException:
        run.stopped = run.stopped or "failed"
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        # What the job committed is in its newest savepoint or checkpoint: the feed's state points there.
        run.savepoint = latest_restore_point(cfg.checkpoints)
    progress(f"stopped with savepoint {run.savepoint}")


def run_batch(properties: Path, operator: Operator, feed: str, day: date, dry_run: bool,
              timeout_s: float = 300.0, audit: Any = None, today: date | None = None,
              progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Authorize, check, lock, run, record the state, audit the counts; the JSON summary."""
    from connectors.kms import aws_client
    from connectors.s3 import s3_client

    groups = read_property_groups(properties)
    cfg, batch_path = load_ingest_config(groups), load_batch_path(groups)
    audit = audit or open_audit_log(load_audit_settings(groups))
    what = f"batch {feed} {day.isoformat()}{' (dry run)' if dry_run else ''}"
    authorize(operator, "batch", "batch", what, audit)
    check_request(feed, day, today or datetime.now(UTC).date(), load_contracts(cfg.feeds.directory))
    if cfg.runtime.deployment != "embedded":
        raise BatchError("batch runs run on the embedded mini-cluster (runtime.deployment=embedded)")
    s3 = s3_client(cfg.s3)
    folder = batch_folder(batch_path, feed, day.isoformat())
    files = date_files(s3, folder)
    if not files:
        raise BatchError(f"no files for {feed} on {day.isoformat()} under {folder}")
    run_name = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    lease = None if dry_run else take_lease(aws_client(cfg.phi, "dynamodb"), groups, "batch", feed,
                                            f"{operator.actor}/{run_name}/{os.getpid()}")
    started = time.monotonic()
    try:
        state = BatchState.load(s3, batch_path, feed)
        expected = max(0, len(files) - state.files_read(day))
        summary: dict[str, Any] = {"feed": feed, "date": day.isoformat(), "run": run_name, "dry_run": dry_run,
                                   "files": len(files), "files_new": expected, "restored_from": state.savepoint}
        progress(f"{folder}: {len(files)} file(s), {expected} not read before; "
                 f"restoring {state.savepoint or 'nothing (first run of the feed)'}")
        if dry_run:
            return summary
        run = JobRun()
        log_path = medistream_home() / "logs" / f"batch-{feed}-{run_name}.log"
        progress(f"job log {log_path}")
        job_cfg = batch_ingest_config(cfg, batch_path, feed, day.isoformat())
        lineage_id, datasets = str(uuid.uuid4()), batch_datasets(job_cfg, folder, feed)
        lineage.emit("START", f"batch.{feed}", groups, lineage_id, datasets=datasets, processing="BATCH",
                     batch_run=run_name, date=day.isoformat())
        try:
            run_job(run, job_cfg, properties, feed, day, state.savepoint, expected, timeout_s, log_path,
                    lease.take if lease else (lambda: None), progress)
        except BaseException as err:
            lineage.emit("FAIL", f"batch.{feed}", groups, lineage_id, error=type(err).__name__, datasets=datasets,
                         processing="BATCH", batch_run=run_name, date=day.isoformat())
            authorize(operator, "batch", "batch", f"{what} failed ({type(err).__name__}): state at "
                      f"{_name(run.savepoint or state.savepoint)}", audit)
            raise
        finally:
            # What the job committed is in its last savepoint (or checkpoint): that is the feed's state from now on.
            record = state.dates.setdefault(day.isoformat(), {"files_read": 0, "runs": 0})
            # Out of time, the source has long read all it could see: the date's files count as read, so a count
            # thrown off (a file deleted, one landing as the run stopped) cannot hold every later run up. Failed: what
            # its last checkpoint holds is unknown, so the count stays, and at worst the next run waits its timeout.
            if run.stopped == "out of time":
                record["files_read"] = len(files)
            elif run.stopped != "failed":
                record["files_read"] += run.files_read
            record["runs"] += 1
            record["last_run"] = run_name
            state.savepoint = run.savepoint or state.savepoint
            state.save(s3, batch_path)
    finally:
        if lease is not None:
            lease.release()
    seconds = time.monotonic() - started
    summary |= {"files_read": run.files_read, "records_accepted": run.count(DEDUP, "numRecordsIn"),
                "records_delivered": run.count(DEDUP, "numRecordsOut"),
                "dead_letters": run.count(LETTERS, "numRecordsOut"), "savepoint": run.savepoint,
                "complete": run.complete, "seconds": round(seconds, 1)}
    lineage.emit("COMPLETE", f"batch.{feed}", groups, lineage_id, datasets=datasets, processing="BATCH",
                 quality=run.quality, batch_run=run_name, date=day.isoformat(), files_read=run.files_read,
                 seconds=round(seconds, 1))
    # Savepoints by name (the audit reason is short; the feed's state holds the paths): savepoint-<job>-<id>.
    authorize(operator, "batch", "batch", f"{what} done: {run.files_read} file(s) read, {summary['records_accepted']} "
              f"record(s) accepted ({summary['records_delivered']} new), {summary['dead_letters']} dead letter(s); "
              f"restored {_name(summary['restored_from'])}, savepoint {_name(run.savepoint)}; {seconds:.0f} s", audit)
    return summary


def batch_datasets(cfg: IngestConfig, folder: str, feed: str) -> tuple[list[Dataset], list[Dataset]]:
    """What a batch run of `feed` reads (the date's folder) and writes (what the feed's routes reach)."""
    contracts = load_contracts(cfg.feeds.directory)
    return [url_dataset(folder)], ingest_datasets(cfg, {feed: contracts[feed]})[1]


def _name(savepoint: str | None) -> str:
    return savepoint.rstrip("/").rsplit("/", 1)[-1] if savepoint else "nothing"


def parser() -> argparse.ArgumentParser:
    """The `medistream batch` arguments."""
    root = argparse.ArgumentParser(prog="medistream batch", description=__doc__.split("\n", 1)[0])
    root.add_argument("--actor", required=True, help="who runs it (audited)")
    root.add_argument("--role", required=True, help="a role of schemas/access/operations.yaml")
    root.add_argument("--reason", required=True, help="why (audited; no PHI)")
    root.add_argument("--feed", required=True, help="a file feed (its contract lists the landing door)")
    root.add_argument("--date", required=True, help="YYYY-MM-DD: the folder <batch.path><feed>/<date>/")
    root.add_argument("--dry-run", action="store_true", help="list and count; run nothing, write nothing")
    root.add_argument("--timeout", type=float, default=300.0,
                      help="seconds to wait, once the job runs, for its source to read the date's new files "
                           "(default 300)")
    root.add_argument("--properties", help="application_properties.json (default: conf/ or MEDISTREAM_PROPERTIES)")
    return root


def main(argv: list[str] | None = None) -> int:
    """Exit 0 with the JSON summary on stdout; 2 with one line on stderr when refused or failed; 1 when stopped
    before the date's files were all read (the summary says how far it got)."""
    args = parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    from connectors.properties import ConfigError

    try:
        day = parse_date(args.date)
        properties = Path(args.properties) if args.properties else default_properties_path()
        summary = run_batch(properties, Operator(args.actor, args.role, args.reason), args.feed, day, args.dry_run,
                            args.timeout, progress=lambda line: print(f"batch: {line}", file=sys.stderr))
    except (JobControlError, ConfigError) as err:
        print(f"medistream batch: {err}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as err:
        print(f"medistream batch: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    if not summary["dry_run"] and not summary["complete"]:
        print(f"medistream batch: stopped after {summary['files_read']} of {summary['files_new']} new file(s); "
              "what was read is delivered and remembered: run the date again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

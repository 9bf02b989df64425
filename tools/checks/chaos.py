"""Chaos run: SIGKILL the ingest job and the Snowflake loader at random moments while records flow,
freeze the broker and the S3 API for a while, then compare every sink with the generator's ground truth.

    python -m tools.checks.chaos [--records N] [--kills K] [--outages O] [--seed S]   (or `medistream chaos`)

Everything runs against the local stack on loopback under run-unique names, and stops by itself:
the kills, the outages and every wait are bounded. A killed job is restarted the way an operator
(or Managed Flink) would: the ingest job from its newest retained checkpoint, the loader from its
channels' committed offset tokens. An outage is SIGSTOP/SIGCONT of the broker or the S3/KMS API
server, so clients see a silent peer (timeouts), the hardest kind of outage; the jobs must back off
and recover on their own.

The verdict compares, by business key (dead letters by id): each record type's Iceberg table, the
archive, the curated topics (Snowflake and every partner), the Snowflake channel (emulator) and the
dead letters in their topic, archive and table. It is "0 lost, 0 duplicated" in each, or a failure.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.properties import medistream_home
from tools.job_processes import JobProcesses

CHECK_EVERY_S = 3.0


@dataclass(frozen=True)
class ChaosPlan:
    """How much to send and how much to break."""

    records: int = 6_000
    kills: int = 10  # SIGKILLs in all, split between the ingest job and the loader
    outages: int = 2  # broker and S3 API freezes, alternating
    outage_s: float = 8.0
    seed: int = 77
    publish_chunk: int = 250
    publish_pause_s: float = 1.0
    kill_gap_s: tuple[float, float] = (4.0, 12.0)
    settle_timeout_s: float = 600.0


@dataclass
class ChaosReport:
    """What happened and what every sink holds against the ground truth."""

    plan: ChaosPlan
    events: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    outages: Counter[str] = field(default_factory=Counter)
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)  # sink -> expected, held, lost, duplicated
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every sink holds every expected key exactly once."""
        return bool(self.sinks) and all(s["lost"] == 0 and s["duplicated"] == 0 for s in self.sinks.values())

    def table(self) -> str:
        """The verdict as a text table."""
        lines = [f"{'sink':<34}{'expected':>10}{'held':>10}{'lost':>8}{'dup':>8}"]
        for name, s in self.sinks.items():
            lines.append(f"{name:<34}{s['expected']:>10}{s['held']:>10}{s['lost']:>8}{s['duplicated']:>8}")
        return "\n".join(lines)


def emulator_keys(path: Path) -> Counter[str]:
    """Business keys of the rows the Snowflake channel emulator committed (plain SQL on its file)."""
    if not path.exists():
        return Counter()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return Counter(key for (key,) in db.execute("SELECT BUSINESS_KEY FROM RECORDS"))


def _pid_of(component: str) -> int:
    from infra.local import stack
    from infra.local.settings import StackSettings

    status = stack.status(StackSettings.from_env())
    pid = {"kafka": status.kafka.pid, "s3": status.moto.pid}[component]
    if not pid:
        raise RuntimeError(f"the local stack's {component} is not running")
    return int(pid)


def _freeze(component: str, seconds: float) -> None:
    pid = _pid_of(component)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


def _moved_on(checkpoints: Any, before: str | None) -> bool:
    """The job has completed a checkpoint since `before` was its newest restore point."""
    from jobs.runtime import latest_restore_point

    return latest_restore_point(checkpoints) != before


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, jobs: JobProcesses) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        jobs.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(CHECK_EVERY_S)


def run_chaos(plan: ChaosPlan, workdir: Path, say: Callable[[str], None] = print) -> ChaosReport:
    """Run one chaos experiment on the local stack (which must be up) and return its report."""
    from infra.local import synthetic
    from infra.local.ground_truth import expected_outcome
    from infra.local.isolation import isolated_config, write_properties
    from infra.local.publish import publish
    from infra.local.reference import publish_reference
    from jobs.runtime import latest_restore_point
    from schemas.contracts import load_contracts
    from tools.readback import compare, covered, iceberg_column, linkage_digest, read_sinks, s3_client, split_s3_url

    started = time.monotonic()
    rng = random.Random(plan.seed)  # noqa: S311 - reproducible chaos, not crypto
    run_id = uuid.uuid4().hex[:8]
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = isolated_config(run_id, workdir)
    properties = write_properties(run_id, workdir)
    emulator = workdir / "snowflake.sqlite"
    contracts = load_contracts(Path(cfg.feeds.contracts_dir))
    generated = list(synthetic.generate(plan.records, seed=plan.seed, feeds=synthetic.feeds_from_contracts(
        contracts.values()), duplicate_rate=0.02, invalid_rate=0.02, size_kb=(4, 6)))
    expected = expected_outcome(generated, contracts, plan.seed, linkage_digest(cfg))
    report = ChaosReport(plan)

    def event(text: str) -> None:
        report.events.append(f"{time.monotonic() - started:7.1f}s {text}")
        say(report.events[-1])

    s3 = s3_client(cfg.s3)
    landing_bucket, landing_prefix = split_s3_url(cfg.landing.path)
    reference_bucket, reference_prefix = split_s3_url(cfg.reference.path)
    publish_reference(s3, reference_bucket, reference_prefix, plan.seed, version=1)
    chunks = [generated[i:i + plan.publish_chunk] for i in range(0, len(generated), plan.publish_chunk)]
    published = threading.Event()
    failures: list[BaseException] = []

    def publisher() -> None:
        try:
            for chunk in chunks:
                publish(chunk, cfg.kafka.bootstrap_servers, s3, landing_bucket, landing_prefix=landing_prefix,
                        contracts=contracts, flush_timeout_s=120)
                time.sleep(plan.publish_pause_s)
        except BaseException as err:  # handed to the main thread, which fails the run
            failures.append(err)
        finally:
            published.set()

    os.environ["MEDISTREAM_PROPERTIES"] = str(properties)
    jobs = JobProcesses(properties, workdir / "logs")
    try:
        event(f"run {run_id}: {plan.records} records, {plan.kills} kills, {plan.outages} outages")
        jobs.start("ingest")
        jobs.start("loader")
        sender = threading.Thread(target=publisher, daemon=True)
        sender.start()
        _wait(lambda: latest_restore_point(cfg.checkpoints) is not None, 300, "the first checkpoint", jobs)
        event("first checkpoint completed; chaos begins")
        # Kills alternate at random between the jobs, each job at least a third of them; an outage
        # lands between kills. A job is killed again only once it has made progress since its
        # restart (the ingest job: a newer checkpoint), so every restart is exercised, not stacked.
        targets = ["ingest"] * (plan.kills // 3) + ["loader"] * (plan.kills // 3)
        targets += [rng.choice(["ingest", "loader"]) for _ in range(plan.kills - len(targets))]
        rng.shuffle(targets)
        outage_at = set(rng.sample(range(len(targets)), min(plan.outages, len(targets))))
        for index, target in enumerate(targets):
            time.sleep(rng.uniform(*plan.kill_gap_s))
            if index in outage_at:
                component = ("kafka", "s3")[report.outages.total() % 2]
                event(f"outage: {component} frozen for {plan.outage_s:.0f} s")
                _freeze(component, plan.outage_s)
                report.outages[component] += 1
            jobs.check_alive()
            before = latest_restore_point(cfg.checkpoints)
            jobs.kill(target)
            report.kills[target] += 1
            event(f"SIGKILL {target} (kill {index + 1}/{len(targets)})")
            jobs.start(target)
            if target == "ingest":
                _wait(functools.partial(_moved_on, cfg.checkpoints, before), 300, "a checkpoint after the restart",
                      jobs)
        event("kills done; waiting for the publisher and for every sink to settle")
        if not published.wait(timeout=plan.settle_timeout_s):
            raise TimeoutError("the publisher did not finish")
        if failures:
            raise RuntimeError(f"publishing failed: {failures[0]!r}")
        routed = expected["routed"]
        _wait(lambda: all(covered(iceberg_column(cfg, table, "business_key"), routed[f"iceberg:{kind}"])
                          >= sum(routed[f"iceberg:{kind}"].values())
                          for kind, table in (("claim", "claims"), ("payment", "payments"),
                                              ("eligibility", "eligibility"))),
              plan.settle_timeout_s, "every routed record in Iceberg", jobs)
        _wait(lambda: covered(emulator_keys(emulator), routed["snowflake"]) >= sum(routed["snowflake"].values()),
              plan.settle_timeout_s, "every Snowflake record in the channel", jobs)
        # Two more checkpoints: the archive and dead-letter commits of the last records.
        time.sleep(2 * cfg.checkpoints.interval_ms / 1000 + 2)
        event("settled; stopping both jobs (ingest with a savepoint)")
    finally:
        jobs.stop_all()
        os.environ.pop("MEDISTREAM_PROPERTIES", None)

    sinks = read_sinks(cfg)
    for sink, keys in sorted(expected["routed"].items()):
        report.sinks[sink] = compare(keys, sinks.routed.get(sink, Counter()))
    report.sinks["archive"] = compare(expected["archived"], sinks.archived_keys)
    report.sinks["snowflake channel (emulator)"] = compare(expected["routed"]["snowflake"], emulator_keys(emulator))
    report.sinks["dead letters (topic)"] = compare(expected["dead_letters"], sinks.dead_letters)
    report.sinks["dead letters (archive)"] = compare(sinks.dead_letter_ids["topic"], sinks.dead_letter_ids["archive"])
    report.sinks["dead letters (iceberg)"] = compare(sinks.dead_letter_ids["topic"], sinks.dead_letter_ids["iceberg"])
    report.elapsed_s = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the chaos experiment from the command line; exit 0 only when every sink is exact."""
    parser = argparse.ArgumentParser(prog="medistream chaos", description=__doc__.split("\n\n")[0])
    plan = ChaosPlan()
    parser.add_argument("--records", type=int, default=plan.records)
    parser.add_argument("--kills", type=int, default=plan.kills)
    parser.add_argument("--outages", type=int, default=plan.outages)
    parser.add_argument("--seed", type=int, default=plan.seed)
    parser.add_argument("--chunk", type=int, default=plan.publish_chunk, help="records published per second")
    parser.add_argument("--report", help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    from infra.local import stack

    stack.up()
    plan = ChaosPlan(records=args.records, kills=args.kills, outages=args.outages, seed=args.seed,
                     publish_chunk=args.chunk, settle_timeout_s=max(600.0, args.records / 50))
    report = run_chaos(plan, medistream_home() / "chaos" / time.strftime("%Y%m%d-%H%M%S"))
    print(report.table())
    verdict = "PASS: 0 lost, 0 duplicated in every sink" if report.passed else "FAIL"
    print(f"{verdict} ({dict(report.kills)} kills, {dict(report.outages)} outages, {report.elapsed_s:.0f} s)")
    if args.report:
        document: dict[str, Any] = {"plan": plan.__dict__, "kills": report.kills, "outages": report.outages,
                                    "sinks": report.sinks, "events": report.events, "elapsed_s": report.elapsed_s,
                                    "passed": report.passed}
        Path(args.report).write_text(json.dumps(document, indent=2, default=list) + "\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

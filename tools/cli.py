"""`medistream` command line: the local stack, synthetic feeds, the ingest job and the demo."""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
from pathlib import Path

from connectors.properties import (
    ConfigError,
    default_properties_path,
    load_ingest_config,
    local_aws_environment,
    read_property_groups,
)
from infra.local.process import StackError
from tools import audit as audit_command
from tools import dlq as dlq_command
from tools import keys as keys_command
from tools import reveal as reveal_command


def _stack(args: argparse.Namespace) -> int:
    from infra.local import stack

    if args.action == "up":
        result = stack.up()
    elif args.action == "down":
        stopped = stack.down()
        print(json.dumps({"stopped": stopped}, default=str))
        return 0
    else:
        result = stack.status()
    print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.healthy or args.action == "status" else 1


def _generate(args: argparse.Namespace) -> int:
    from tools.demo import publish_synthetic

    cfg = load_ingest_config(read_property_groups(default_properties_path()))
    summary = publish_synthetic(cfg, args.records, args.seed, args.duplicate_rate, args.invalid_rate,
                                Path(args.ground_truth) if args.ground_truth else None, fraud_rate=args.fraud_rate)
    summary["fraud"] = {rule: len(patterns) for rule, patterns in summary["fraud"].items()}  # patterns per rule
    if args.device_events:
        from tools.demo import publish_device_events

        groups = read_property_groups(default_properties_path())
        devices = publish_device_events(cfg, groups, args.device_events, args.seed,
                                        Path(args.device_ground_truth) if args.device_ground_truth else None)
        summary["device_events"] = {
            "feed": devices["feed"], "stream": devices["stream"], "events": devices["records"],
            "landing": sum(devices["archived"].values()), "resends_dropped": devices["resends_dropped"],
            "dead_letters": dict(devices["dead_letter_reasons"]),
            "devices_in_operational_store": sum(devices["routed"].get("operational:device_event", {}).values())}
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _run(args: argparse.Namespace) -> int:
    from jobs import ingest

    argv = (["--restore", args.restore] if args.restore else []) + (["--fresh"] if args.fresh else [])
    return ingest.main(argv)


def _demo(args: argparse.Namespace) -> int:
    import time

    from tools.demo import run_demo

    return run_demo(args.records, args.seed if args.seed is not None else int(time.time()), args.timeout,
                    on_cluster=args.cluster)


# Commands that own their arguments: everything after the name goes to the module's main().
PASSTHROUGH = {"chaos": "tools.checks.chaos", "cluster": "tools.cluster", "load-snowflake": "jobs.snowflake_load",
               "deliver": "jobs.partner_delivery", "ingest-api": "jobs.ingest_api", "sftp-pull": "jobs.sftp_pull",
               "rest-pull": "jobs.rest_pull", "kinesis-pull": "jobs.kinesis_pull", "package": "tools.package",
               "batch": "tools.batch",
               "deploy": "tools.deploy", "jobs": "tools.job_control", "backfill": "tools.backfill",
               "lineage": "tools.lineage", "ops": "tools.ops_console.command", "infra": "tools.infra",
               "freshness": "tools.sink_freshness", "sign": "tools.attest:main_sign", "verify": "tools.attest",
               "release": "tools.release"}


def _aws_release_key(argv: list[str]) -> bool:
    """Whether a sign/verify/release command names an AWS environment's key: the caller's credentials (the
    pipeline role's) must win over the local stack's placeholders."""
    environment = [a.split("=", 1)[1] for a in argv if a.startswith("--environment=")] + \
        [b for a, b in itertools.pairwise(argv) if a == "--environment"]
    return argv[0] in ("sign", "verify", "release") and any(e != "local" for e in environment)


def parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per task)."""
    root = argparse.ArgumentParser(prog="medistream", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or inspect the local stack (Kafka, S3/KMS API, catalog)")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.set_defaults(func=_stack)

    gen = sub.add_parser("generate", help="publish synthetic claims, payments and eligibility records")
    gen.add_argument("--records", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--duplicate-rate", type=float, default=0.02)
    gen.add_argument("--invalid-rate", type=float, default=0.03)
    gen.add_argument("--ground-truth", help="write the expected outcome per record (JSONL, no PHI) here")
    gen.add_argument("--fraud-rate", type=float, default=0.0,
                     help="share of original claims that start a planted fraud pattern (schemas/fraud/rules.yaml)")
    gen.add_argument("--device-events", type=int, default=0,
                     help="also put N synthetic device events (out-of-order, late, skewed among them) on the Kinesis "
                          "stream of the kinesis_pull group, for the Kinesis door")
    gen.add_argument("--device-ground-truth", help="write each device event's expected outcome (JSONL, no PHI) here")
    gen.set_defaults(func=_generate)

    run = sub.add_parser("run", help="run the ingest job on the local mini-cluster until SIGTERM/Ctrl-C")
    run.add_argument("--restore", help="checkpoint or savepoint directory to resume from (default: newest)")
    run.add_argument("--fresh", action="store_true", help="start without restoring any state")
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="stack up, generate, run the job, stop it, summarise the sinks")
    demo.add_argument("--records", type=int, default=5000)
    demo.add_argument("--seed", type=int, help="generator seed (default: a new one per run)")
    demo.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every record")
    demo.add_argument("--cluster", action="store_true",
                      help="run the jobs from the packaged zip on the local Flink cluster (medistream cluster)")
    demo.set_defaults(func=_demo)

    dlq = sub.add_parser("dlq", help="list, show or replay committed dead letters (never a payload)")
    dlq_command.add_arguments(dlq)

    audit = sub.add_parser("audit", help="verify, list or anchor the hash-chained audit log (no PHI)")
    audit_command.add_arguments(audit)

    reveal = sub.add_parser("reveal", help="re-identify fields of one archived record: role + purpose, audited")
    reveal_command.add_arguments(reveal)

    keys = sub.add_parser("keys", help="rotate token keys or a domain's CMK, crypto-shred a CMK (audited)")
    keys_command.add_arguments(keys)
    sub.add_parser("chaos", help="SIGKILL the jobs and freeze the stack while records flow; check every sink "
                   "(`medistream chaos --help`)")
    sub.add_parser("package", help="build the Managed Flink zip of the current commit, reproducibly "
                   "(`medistream package --help`)")
    sub.add_parser("deploy", help="run the zip on the local cluster as Managed Flink would; stop with savepoint "
                   "(`medistream deploy --help`)")
    sub.add_parser("jobs", help="operate the jobs on the local cluster or Managed Flink: list, status, savepoint, "
                   "stop, start, upgrade; audited, by role (`medistream jobs --help`)")
    sub.add_parser("backfill", help="re-read a past range of one feed through the running ingest job; nothing is "
                   "delivered twice; audited, by role (`medistream backfill --help`)")
    sub.add_parser("batch", help="one date of one file feed through the ingest job's stages and sinks as a bounded "
                   "run; re-running a date changes nothing; audited, by role (`medistream batch --help`)")
    sub.add_parser("ops", help="the ops console on 127.0.0.1: jobs, dead letters (replay by role), feeds, partners, "
                   "alerts, audit chain; its tokens (`medistream ops --help`)")
    sub.add_parser("freshness", help="how fresh the Iceberg tables and the archive are, from their commits; "
                   "`watch` serves it to Prometheus (`medistream freshness --help`)")
    sub.add_parser("sign", help="write a zip's SBOMs and provenance and sign all four with the release KMS key "
                   "(`medistream sign --help`)")
    sub.add_parser("verify", help="check a zip's signature, SBOMs and provenance against the release key; exit 2 if "
                   "refused (`medistream verify --help`)")
    sub.add_parser("release", help="every release gate in order (lint, types, bandit, secrets, pip-audit, Maven tree, "
                   "tests, infra), then package, SBOMs, provenance, KMS signature (`medistream release --help`)")
    sub.add_parser("cluster", help="a standalone Flink cluster (1 JobManager, 2 TaskManagers): up, down, status, "
                   "submit (`medistream cluster --help`)")
    sub.add_parser("load-snowflake", help="run the Snowflake loader: curated.snowflake -> one channel per partition "
                   "(`medistream load-snowflake --help`)")
    return root


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `medistream` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        # The local stack's placeholder credentials, except for Managed Flink itself (no stand-in
        # endpoint): there the caller's own AWS credentials must win.
        if not (argv[0] == "jobs" and "managed-flink" in argv and not os.environ.get("MEDISTREAM_MSF_ENDPOINT")) \
                and not _aws_release_key(argv):
            local_aws_environment()
        module, _, function = PASSTHROUGH[argv[0]].partition(":")
        return int(getattr(importlib.import_module(module), function or "main")(argv[1:]))
    args = parser().parse_args(argv)
    local_aws_environment()
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"medistream: configuration error: {err}", file=sys.stderr)
        return 2
    except StackError as err:
        print(f"medistream: local stack: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""`medistream kinesis-pull run`: a Kinesis data stream onto raw.<feed>, exactly once, through KCL 3.

    run            check the configuration, create the topics, then become the KCL worker (a JVM, same pid)
                   until SIGTERM/SIGINT: each processor commits or aborts its batch in hand and checkpoints
    settings       print the worker's settings (no credentials) and its command line, then exit

Configuration: group `kinesis_pull` (`stream`, `feed`, optional `application` = the KCL lease table,
`cursor.topic`, `transactional.id.prefix`, `max.records`, `idle.between.reads.ms`, `failover.time.ms`,
`shard.sync.interval.ms`, `parent.shard.poll.ms`, `shutdown.timeout.ms`, `retry.max.attempts`,
`retry.backoff.ms`, `cloudwatch.metrics`, `worker.id`, `heap`); Kafka from `kafka`; the AWS region and
endpoint (the local API's, or none in AWS) from `phi`. Guarantees: connectors/kinesis_pull/ and decision 0039.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from connectors.kinesis_pull.config import load_kinesis_pull_config
from connectors.kinesis_pull.worker import java_command, prepare_topics, settings_text, write_settings
from connectors.properties import (
    ConfigError,
    default_properties_path,
    local_aws_environment,
    medistream_home,
    read_property_groups,
)


def main(argv: list[str] | None = None) -> int:
    """`run` execs the worker (exit codes are the JVM's); `settings` prints; 2 on a configuration error."""
    parser = argparse.ArgumentParser(prog="medistream kinesis-pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    parser.add_argument("--log-level", default="warn", choices=("error", "warn", "info", "debug"),
                        help="KCL's and the AWS SDK's log level on stderr")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("run", help="consume the stream until SIGTERM")
    sub.add_parser("settings", help="print the worker's settings and command line")
    args = parser.parse_args(argv)
    try:
        groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
        cfg = load_kinesis_pull_config(groups)
        if args.action == "settings":
            path = medistream_home() / "run" / f"kinesis-pull-{cfg.application}.properties"
            print(json.dumps({"settings": settings_text(cfg).splitlines(),
                              "command": java_command(cfg, path, log_level=args.log_level)}, indent=2))
            return 0
        settings = write_settings(cfg, medistream_home() / "run")
        command = java_command(cfg, settings, log_level=args.log_level)
        prepare_topics(cfg)
    except (ConfigError, ConnectionError) as err:
        print(f"medistream kinesis-pull: configuration error: {err}", file=sys.stderr)
        return 2
    if cfg.local:
        local_aws_environment()  # the local API's placeholder keys; in AWS the SDK finds the role's
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: the pid a supervisor (or a test's SIGKILL) sees is the worker itself, so nothing is orphaned.
    os.execv(command[0], command)  # noqa: S606 - argv from validated settings, no shell
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

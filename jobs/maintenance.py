"""Iceberg table maintenance: compact small files, expire old snapshots, remove orphan files.

The streaming writer commits one snapshot per checkpoint, so every table gathers small data files,
snapshots and metadata files without bound. This job keeps them in check for every table in the
configured namespace (listed from the catalog on every pass, so new tables are picked up):

    python -m jobs.maintenance --once          # one pass, exit 1 if any table failed
    python -m jobs.maintenance                 # a pass every maintenance.interval.s until SIGTERM

It runs beside the writer: compaction validates against concurrent appends and Iceberg retries the
commit, so no row is lost or doubled; orphan removal never touches files younger than
maintenance.orphan.min.age.h. Guarantees and numbers: docs/iceberg-maintenance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from connectors.iceberg_maintenance import MaintenanceConfig, TableMaintainer, TableReport
from connectors.properties import (
    CheckpointConfig,
    ConfigError,
    IngestConfig,
    PropertyGroup,
    default_properties_path,
    load_ingest_config,
    medistream_home,
    read_property_groups,
)
from jobs.runtime import flink_configuration, initialize_filesystems, prepare_process_environment

if TYPE_CHECKING:
    from pyflink.common import Configuration

log = logging.getLogger("medistream.maintenance")
HOUR_S = 3600.0


def load_maintenance_config(groups: Mapping[str, Mapping[str, str]]) -> MaintenanceConfig:
    """The `maintenance` property group; every key has a default, and so does a missing group."""
    group = PropertyGroup(groups if "maintenance" in groups else {"maintenance": {}}, "maintenance")
    return MaintenanceConfig(
        interval_s=group.int("interval.s", 3600),
        target_file_size_bytes=group.int("target.file.size.bytes", 128 * 1024 * 1024),
        snapshot_max_age_s=group.int("snapshot.max.age.h", 24) * HOUR_S,
        snapshot_retain_last=group.int("snapshot.retain.last", 10),
        orphan_min_age_s=group.int("orphan.min.age.h", 72) * HOUR_S,
    )


def maintenance_flink_configuration(cfg: IngestConfig) -> Configuration:
    """The writer's cluster settings, run as a batch job with checkpoints kept apart from the writer's."""
    # The writer restores from the newest checkpoint folder it finds under its directory: a
    # maintenance job must never leave one there.
    checkpoints = CheckpointConfig(directory=(medistream_home() / "maintenance" / "checkpoints").as_uri(),
                                   interval_ms=cfg.checkpoints.interval_ms, timeout_ms=cfg.checkpoints.timeout_ms)
    conf = flink_configuration(checkpoints, cfg.runtime, cfg.s3, None)
    conf.set_string("execution.runtime-mode", "BATCH")
    conf.set_string("pipeline.name", "medistream-maintenance")
    return conf


def create_maintainer(cfg: IngestConfig, maintenance: MaintenanceConfig) -> TableMaintainer:
    """Start (or reuse) the PyFlink gateway JVM and open the writer's catalog in it."""
    prepare_process_environment()
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.java_gateway import get_gateway

    conf = maintenance_flink_configuration(cfg)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    initialize_filesystems(conf)
    return TableMaintainer(get_gateway(), env._j_stream_execution_environment, cfg.iceberg, cfg.s3, maintenance)


def failed_report(table: str, error: str) -> TableReport:
    """A report for a table whose pass raised: counts are zero, the error says why."""
    return TableReport(table=table, data_files_before=0, data_files_after=0, rows_before=0, rows_after=0,
                       files_rewritten=0, files_added=0, snapshots_before=0, snapshots_expired=0,
                       snapshots_after=0, stored_files_before=0, stored_files_after=0, orphans_removed=0,
                       orphans_too_young=0, seconds=0.0, error=error)


def run_pass(maintainer: TableMaintainer, only: list[str] | None = None) -> list[TableReport]:
    """One pass over the namespace's tables (or `only` those); a failing table is reported, not fatal."""
    tables = maintainer.tables()
    if only:
        missing = sorted(set(only) - set(tables))
        if missing:
            raise ConfigError(f"tables {missing} are not in the catalog namespace")
        tables = [t for t in tables if t in only]
    now_ms = int(time.time() * 1000)  # one reference time: every table gets the same cut-offs
    reports = []
    for name in tables:
        try:
            report = maintainer.maintain(name, now_ms)
        except Exception as err:  # py4j wraps every Java failure; report it and go on to the next table
            log.exception("maintenance of table %s failed", name)
            report = failed_report(name, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        print(json.dumps(dataclasses.asdict(report)), flush=True)
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    """Load config, then one pass (--once) or a pass every interval until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m jobs.maintenance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    parser.add_argument("--once", action="store_true", help="run one pass and exit")
    parser.add_argument("--interval", type=int, help="seconds between passes (default: maintenance.interval.s)")
    parser.add_argument("--table", action="append", help="only this table of the namespace (repeatable)")
    args = parser.parse_args(argv)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    cfg, maintenance = load_ingest_config(groups), load_maintenance_config(groups)
    if urlsplit(cfg.s3.endpoint).hostname in ("127.0.0.1", "localhost"):
        from connectors.properties import local_aws_environment

        local_aws_environment()  # the local S3 API takes any key; AWS SDKs still want one
    if args.interval is not None:
        if args.interval <= 0:
            raise ConfigError("--interval must be a positive number of seconds")
        maintenance = dataclasses.replace(maintenance, interval_s=args.interval)
    maintainer = create_maintainer(cfg, maintenance)
    if args.once:
        return 1 if any(r.error for r in run_pass(maintainer, args.table)) else 0

    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop_requested.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stop_requested.append(signum))
    while not stop_requested:
        started = time.monotonic()
        reports = run_pass(maintainer, args.table)
        log.info("pass over %d tables took %.1f s (%d failed)", len(reports), time.monotonic() - started,
                 sum(1 for r in reports if r.error))
        next_pass = started + maintenance.interval_s
        while not stop_requested and time.monotonic() < next_pass:
            time.sleep(min(1.0, max(0.0, next_pass - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`medistream freshness watch`: how fresh the ingest job's Iceberg tables and archive are, for Prometheus.

The ingest job's sinks commit inside the JVM, where a Python metric cannot see them; their commits are
visible afterwards in what they wrote. Every `--interval` seconds this reads, per Iceberg table, the
metadata of its latest append (no data file is opened: the manifests' column bounds of `ingested_at`
say when the rows of that commit entered the job), and per feed the archive's newest committed part
file, and serves on 127.0.0.1:

- `medistream_door_sink_delay_seconds{sink="iceberg_<table>"}`: the latest append's commit time minus
  the oldest `ingested_at` among the rows it added: the largest delay of the last batch, the gauge the
  Snowflake loader sets for its sink, so the SinkDelayOverTarget alert covers these sinks too;
- `medistream_sink_newest_record_timestamp_seconds{sink}`: the newest `ingested_at` committed
  (freshness is `time()` minus it; it also grows while a feed is quiet, which FeedSilent tells apart);
- `medistream_sink_feed_newest_record_timestamp_seconds{sink, feed}`: the same per feed, for the feeds in
  the latest append (the files of one commit mix feeds: only its added files' `feed` and `ingested_at`
  columns are read, a checkpoint's worth of rows);
- `medistream_sink_last_commit_timestamp_seconds{sink}`: the latest append (Iceberg) or committed file;
- `medistream_archive_feed_last_commit_timestamp_seconds{feed}`: the archive's newest committed file
  of each feed, among its newest `ARCHIVE_PARTITIONS` day partitions (the archive is partitioned by the
  records' sent day: a late record committed into an older day is not seen);
- `medistream_sink_freshness_errors_total{sink}`: reads that failed (the last values stand).

Compaction and other maintenance commits rewrite old rows: only `append` snapshots are read. Labels
are table and feed names from our configuration and contracts: bounded, never a record value.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from connectors.properties import IngestConfig

log = logging.getLogger("medistream.freshness")
ARCHIVE = "archive"
INGESTED_AT = "ingested_at"
ARCHIVE_PARTITIONS = 7  # the newest day partitions of each feed read per pass


@dataclass(frozen=True)
class Commit:
    """What one sink's latest commit says: when it committed and the ingest times of the rows it added."""

    sink: str
    committed_s: float
    oldest_ingested_s: float | None = None  # None: the commit's files carry no bound (or it added no rows)
    newest_ingested_s: float | None = None
    newest_by_feed: dict[str, float] = field(default_factory=dict)  # feed -> its newest row's ingest time

    @property
    def delay_s(self) -> float | None:
        """Commit time minus the oldest row's ingest time: the largest delay of the batch."""
        return None if self.oldest_ingested_s is None else max(0.0, self.committed_s - self.oldest_ingested_s)


def _seconds(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    return None


def latest_append(table: Any) -> Any | None:
    """The newest `append` snapshot of a pyiceberg table (maintenance snapshots skipped), or None."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        operation = getattr(snapshot.summary, "operation", None) if snapshot.summary is not None else None
        if getattr(operation, "value", operation) == "append":
            return snapshot
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return None


def iceberg_commit(table: Any, sink: str, by_feed: bool = False) -> Commit | None:
    """The latest append of a table, from its manifests' `ingested_at` bounds; None before the first append.
    `by_feed`: also each feed's newest row, from the `feed` and `ingested_at` columns of the files it added."""
    import pyarrow.compute as pc

    snapshot = latest_append(table)
    if snapshot is None:
        return None
    names = {field.name for field in table.schema().fields}
    if INGESTED_AT not in names:  # a table without ingest times (the dead letters'): its commit time only
        return Commit(sink, snapshot.timestamp_ms / 1000)
    by_feed = by_feed and "feed" in names
    entries = table.inspect.entries(snapshot_id=snapshot.snapshot_id)
    added = entries.filter(pc.and_(pc.equal(entries["status"], 1), pc.equal(entries["snapshot_id"],
                                                                              snapshot.snapshot_id)))
    lows, highs = [], []
    for metrics in added.column("readable_metrics").to_pylist():
        bounds = (metrics or {}).get(INGESTED_AT) or {}
        low, high = _seconds(bounds.get("lower_bound")), _seconds(bounds.get("upper_bound"))
        lows += [low] if low is not None else []
        highs += [high] if high is not None else []
    newest: dict[str, float] = {}
    if by_feed:
        for path in added.column("data_file").combine_chunks().field("file_path").to_pylist():
            for feed, stamp in _newest_by_feed(table.io, path).items():
                newest[feed] = max(newest.get(feed, stamp), stamp)
    return Commit(sink, snapshot.timestamp_ms / 1000, min(lows, default=None), max(highs, default=None), newest)


def _newest_by_feed(io: Any, path: str) -> dict[str, float]:
    """Feed -> newest `ingested_at` (epoch s) in one Parquet data file: two columns read, nothing else."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with io.new_input(path).open() as stream:
        rows = pq.read_table(stream, columns=["feed", INGESTED_AT])
    grouped = rows.group_by("feed").aggregate([(INGESTED_AT, "max")])
    stamps = pc.cast(grouped.column(f"{INGESTED_AT}_max"), "int64").to_pylist()  # microseconds since the epoch
    unit = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[rows.schema.field(INGESTED_AT).type.unit]
    return {feed: stamp / unit for feed, stamp in zip(grouped.column("feed").to_pylist(), stamps, strict=True)
            if feed is not None and stamp is not None}


def archive_commits(s3: Any, bucket: str, prefix: str, feeds: Iterable[str],
                    partitions: int = ARCHIVE_PARTITIONS) -> dict[str, float]:
    """Feed -> LastModified (epoch s) of its newest committed part file in its newest `partitions` day partitions.

    The archive is laid out `<prefix>feed=<feed>/dt=<day>/part-…` (in-progress files start with "."): one
    delimited listing names a feed's partitions, then only the newest are listed, not seven years of files.
    """
    newest: dict[str, float] = {}
    for feed in sorted(feeds):
        base = f"{prefix}feed={feed}/"
        days = [common["Prefix"] for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=base, Delimiter="/") for common in page.get("CommonPrefixes", [])]
        for day in sorted(days)[-partitions:]:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=day):
                for obj in page.get("Contents", []):
                    if obj["Key"].rsplit("/", 1)[-1].startswith("part-"):
                        stamp = obj["LastModified"].timestamp()
                        newest[feed] = max(newest.get(feed, stamp), stamp)
    return newest


def _known(newest: dict[str, float], feeds: Iterable[str]) -> dict[str, float]:
    """Per-feed values with every feed that is not one of `feeds` folded into "unknown" (bounded labels)."""
    allowed, out = set(feeds), dict[str, float]()
    for feed, stamp in newest.items():
        label = feed if feed in allowed else "unknown"
        out[label] = max(out.get(label, stamp), stamp)
    return out


class FreshnessMetrics:
    """The watch's registry, served on 127.0.0.1 and announced under component `sink_freshness`."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        from connectors.metrics.doors import MetricsEndpoint

        self.endpoint = MetricsEndpoint("sink_freshness")
        r = self.endpoint.registry
        self.delay = Gauge("medistream_door_sink_delay_seconds", "Seconds from the ingest job taking a record to "
                           "the sink committing it: the largest of the last batch", ["sink"], registry=r)
        self.newest = Gauge("medistream_sink_newest_record_timestamp_seconds",
                            "Ingest time of the newest record a sink has committed (Unix seconds)", ["sink"],
                            registry=r)
        self.feed_newest = Gauge("medistream_sink_feed_newest_record_timestamp_seconds",
                                 "Ingest time of the newest record of a feed a sink has committed (Unix seconds)",
                                 ["sink", "feed"], registry=r)
        self.committed = Gauge("medistream_sink_last_commit_timestamp_seconds",
                               "When a sink last committed rows (Unix seconds)", ["sink"], registry=r)
        self.archive_feed = Gauge("medistream_archive_feed_last_commit_timestamp_seconds",
                                  "When the archive last committed a file of this feed (Unix seconds)", ["feed"],
                                  registry=r)
        self.errors = Counter("medistream_sink_freshness_errors", "Freshness reads that failed", ["sink"], registry=r)

    def record(self, commit: Commit) -> None:
        self.committed.labels(commit.sink).set(commit.committed_s)
        if commit.delay_s is not None:
            self.delay.labels(commit.sink).set(commit.delay_s)
        if commit.newest_ingested_s is not None:
            self.newest.labels(commit.sink).set(commit.newest_ingested_s)
        for feed, stamp in commit.newest_by_feed.items():
            self.feed_newest.labels(commit.sink, feed).set(stamp)


class FreshnessWatch:
    """One pass over the sinks of an ingest configuration; each sink read on its own (one failing: counted)."""

    def __init__(self, cfg: IngestConfig, feeds: Iterable[str], metrics: FreshnessMetrics | None = None) -> None:
        from connectors.iceberg import TABLES

        self.cfg, self.feeds, self.metrics = cfg, sorted(feeds), metrics
        self.tables = sorted(TABLES)

    def check(self) -> dict[str, Any]:
        """Read every sink once; what was read, as a JSON-able report (names, times and counts only)."""
        from pyiceberg.exceptions import NoSuchTableError

        from tools.readback import iceberg_table, s3_client, split_s3_url

        report: dict[str, Any] = {"iceberg": {}, "archive": {}, "not_created_yet": [], "errors": []}
        for name in self.tables:
            sink = f"iceberg_{name}"
            try:
                table = iceberg_table(self.cfg.iceberg, self.cfg.s3, self.cfg.iceberg.table(name))
                commit = iceberg_commit(table, sink, by_feed=True)
                if commit is not None:  # bounded labels: a feed that is not a contract's is "unknown"
                    commit = dataclasses.replace(commit, newest_by_feed=_known(commit.newest_by_feed, self.feeds))
            except NoSuchTableError:  # the job creates its tables when it first starts: not a failure
                report["not_created_yet"].append(name)
                continue
            except Exception as err:  # no table yet, catalog or S3 down: counted, the next pass retries
                self._failed(report, sink, err)
                continue
            if commit is not None:
                report["iceberg"][name] = asdict(commit) | {"delay_s": commit.delay_s}
                if self.metrics:
                    self.metrics.record(commit)
        try:
            bucket, prefix = split_s3_url(self.cfg.archive.path)
            prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
            newest = archive_commits(s3_client(self.cfg.s3), bucket, prefix, self.feeds)
        except Exception as err:  # S3 down: counted, the next pass retries
            self._failed(report, ARCHIVE, err)
        else:
            report["archive"] = newest
            if self.metrics:
                for feed, stamp in newest.items():
                    self.metrics.archive_feed.labels(feed).set(stamp)
                if newest:
                    self.metrics.committed.labels(ARCHIVE).set(max(newest.values()))
        return report

    def _failed(self, report: dict[str, Any], sink: str, err: Exception) -> None:
        report["errors"].append({"sink": sink, "error": type(err).__name__})  # the class only: a message may quote data
        if self.metrics:
            self.metrics.errors.labels(sink).inc()


def watch(cfg: IngestConfig, feeds: Iterable[str], interval_s: float, out: TextIO, passes: int | None = None) -> int:
    """Check every `interval_s` until SIGTERM/SIGINT (or `passes` checks), serving the gauges on 127.0.0.1."""
    metrics = FreshnessMetrics()
    checker = FreshnessWatch(cfg, feeds, metrics)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    metrics.endpoint.serve()
    done = 0
    try:
        while not stop.is_set() and (passes is None or done < passes):
            out.write(json.dumps(checker.check(), sort_keys=True, default=str) + "\n")
            out.flush()
            done += 1
            stop.wait(interval_s)
    finally:
        metrics.endpoint.close()
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Wire `freshness watch|check` into the `medistream` parser."""
    sub = parser.add_subparsers(dest="freshness_command", required=True)
    run = sub.add_parser("watch", help="read the sinks' commits every --interval seconds, serving gauges on 127.0.0.1")
    run.add_argument("--interval", type=_positive, default=30.0, metavar="S", help="seconds between passes (30)")
    sub.add_parser("check", help="read the sinks' commits once and print them as JSON")


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run one `medistream freshness` command over the ingest job's configuration."""
    from connectors.properties import default_properties_path, load_ingest_config, read_property_groups

    cfg = load_ingest_config(read_property_groups(default_properties_path()))
    from schemas.contracts import load_contracts

    feeds = sorted(load_contracts(cfg.feeds.directory))
    if args.freshness_command == "check":
        out.write(json.dumps(FreshnessWatch(cfg, feeds).check(), sort_keys=True, indent=2, default=str) + "\n")
        return 0
    return watch(cfg, feeds, args.interval, out)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tools.sink_freshness watch|check`."""
    parser = argparse.ArgumentParser(prog="medistream freshness", description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())


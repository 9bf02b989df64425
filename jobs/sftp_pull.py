"""`medistream sftp-pull`: take new files from partners' own SFTP servers into the landing prefix, once each.

    medistream sftp-pull run [--once] [--feed F ...] [--properties FILE]
    medistream sftp-pull release --feed F --sha256 S   # an operator lets a quarantined file land

`--once` lists every feed, waits `settle.s`, lists again, takes what settled and exits (1 if a feed
failed); without it, it polls every `interval.s` until SIGTERM/SIGINT, finishing the file in hand.
Partners who push use Transfer Family, which writes the landing prefix itself; this is for partners
who host their own servers. Configuration: group `sftp_pull`:
  feeds                 comma-separated feed names (each contract must list the `landing` door)
  ledger.table          DynamoDB table of what was taken (created if missing)
  quarantine.path       s3://bucket/prefix/ for refused files, outside the landing path
  settle.s, interval.s  a file is taken once unchanged for settle.s; polls every interval.s
  <feed>.host, <feed>.port, <feed>.dir
  <feed>.host.key       the server's public host key (OpenSSH line): pinned, nothing else accepted
  <feed>.secret         Secrets Manager secret: {"username", "private_key" | "password"}
  <feed>.manifest       `sha256` (each file comes with a `<file>.sha256` sidecar) or `none`
  <feed>.pgp.secret     Secrets Manager secret {"private_key", "signer_cert"?}: files are OpenPGP messages
  <feed>.after          `keep` (default) or `delete` landed files on the server
  <feed>.name.reuse     `quarantine` (default) or `land` a known name that comes back with other content
Landing path and size limit come from `landing`, the S3 endpoint from `s3`, AWS APIs from `phi`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.iceberg import split_s3_url
from connectors.landing import DEFAULT_MAX_FILE_BYTES
from connectors.lineage.datasets import Dataset, url_dataset
from connectors.lineage.emitter import lineage_run
from connectors.properties import (
    ConfigError,
    PropertyGroup,
    default_properties_path,
    load_phi_config,
    read_property_groups,
)
from connectors.sftp_pull.ledger import FileLedger
from connectors.sftp_pull.puller import (
    Destinations,
    FeedFailed,
    FeedPuller,
    ReleaseRefused,
    SftpFeed,
    release_quarantined,
)

log = logging.getLogger("medistream.sftp_pull")


@dataclass(frozen=True)
class SftpPullConfig:
    """The puller's settings (secret names only; credentials stay in Secrets Manager)."""

    feeds: tuple[SftpFeed, ...]
    ledger_table: str
    destinations: Destinations
    settle_s: float
    interval_s: float
    contracts_dir: str
    s3_endpoint: str
    s3_region: str


def _choice(group: PropertyGroup, key: str, allowed: tuple[str, ...]) -> str:
    value = group.str(key, allowed[0])
    if value not in allowed:
        raise ConfigError(f"property 'sftp_pull.{key}' must be one of {', '.join(allowed)}")
    return value


def load_sftp_config(groups: Mapping[str, Mapping[str, str]]) -> SftpPullConfig:
    """Validate the `sftp_pull`, `landing`, `s3` and `feeds` groups."""
    pull, landing, s3, feeds = (PropertyGroup(groups, n) for n in ("sftp_pull", "landing", "s3", "feeds"))
    names = [f.strip() for f in pull.str("feeds", "").split(",") if f.strip()]
    specs = []
    for feed in names:
        manifest = _choice(pull, f"{feed}.manifest", ("none", "sha256"))
        specs.append(SftpFeed(
            feed=feed, host=pull.str(f"{feed}.host"), port=pull.int(f"{feed}.port", 22),
            directory=pull.str(f"{feed}.dir"), host_key=pull.str(f"{feed}.host.key"),
            secret=pull.str(f"{feed}.secret"), manifest=manifest == "sha256",
            pgp_secret=pull.str(f"{feed}.pgp.secret", ""),
            delete_after=_choice(pull, f"{feed}.after", ("keep", "delete")) == "delete",
            quarantine_name_reuse=_choice(pull, f"{feed}.name.reuse", ("quarantine", "land")) == "quarantine"))
    landing_bucket, landing_prefix = split_s3_url(landing.str("path"))
    q_bucket, q_prefix = split_s3_url(pull.str("quarantine.path", f"s3://{landing_bucket}/quarantine/"))
    if q_bucket == landing_bucket and q_prefix.startswith(landing_prefix):
        raise ConfigError("property 'sftp_pull.quarantine.path' must be outside the landing path the job reads")
    return SftpPullConfig(
        feeds=tuple(specs), ledger_table=pull.str("ledger.table", "medistream-sftp-ledger"),
        destinations=Destinations(landing_bucket, landing_prefix, q_bucket, q_prefix,
                                  landing.int("max.file.bytes", DEFAULT_MAX_FILE_BYTES)),
        settle_s=float(pull.str("settle.s", "5")), interval_s=float(pull.str("interval.s", "30")),
        contracts_dir=feeds.str("contracts.dir", ""), s3_endpoint=s3.str("endpoint", ""), s3_region=s3.str("region"))


def _storage(cfg: SftpPullConfig, groups: Mapping[str, Mapping[str, str]]) -> tuple[Any, FileLedger]:
    """The S3 client and the ledger the pullers and `release` work with."""
    import boto3

    from connectors.kms import aws_client

    s3 = boto3.client("s3", endpoint_url=cfg.s3_endpoint or None, region_name=cfg.s3_region)
    return s3, FileLedger(aws_client(load_phi_config(groups), "dynamodb"), cfg.ledger_table)


def build_pullers(cfg: SftpPullConfig, groups: Mapping[str, Mapping[str, str]], only: list[str] | None = None,
                  stop: asyncio.Event | None = None) -> list[FeedPuller]:
    """One puller per configured feed (or the `only` ones); checks contracts, credentials and keys up front."""
    from connectors.kms import aws_client
    from connectors.secrets import read_json_object
    from connectors.sftp_pull.pgp import PgpKeys
    from schemas.contracts import FEEDS_DIR
    from udfs.contract_checks import load_feed_contracts

    chosen = [f for f in cfg.feeds if not only or f.feed in only]
    if only and (unknown := sorted(set(only) - {f.feed for f in cfg.feeds})):
        raise ConfigError(f"feeds not configured in sftp_pull.feeds: {', '.join(unknown)}")
    contracts = load_feed_contracts(Path(cfg.contracts_dir) if cfg.contracts_dir else FEEDS_DIR)
    secrets = aws_client(load_phi_config(groups), "secretsmanager")
    s3, ledger = _storage(cfg, groups)
    ledger.ensure()
    pullers = []
    for feed in chosen:
        contract = contracts.get(feed.feed)
        if contract is None:
            raise ConfigError(f"feed {feed.feed}: no contract")
        if "landing" not in contract.sources:
            raise ConfigError(f"feed {feed.feed}: its contract does not list the landing door")
        credentials = read_json_object(secrets, feed.secret, f"feed {feed.feed} credentials", ConfigError)
        if "username" not in credentials or not (credentials.get("private_key") or credentials.get("password")):
            raise ConfigError(f"feed {feed.feed} credentials: need 'username' and 'private_key' or 'password'")
        pgp = None
        if feed.pgp_secret:
            try:
                pgp = PgpKeys.from_secret(read_json_object(secrets, feed.pgp_secret, f"feed {feed.feed} PGP keys",
                                                           ConfigError))
            except ValueError as err:
                raise ConfigError(f"feed {feed.feed}: {err}") from None
        pullers.append(FeedPuller(feed, cfg.destinations, ledger, s3, credentials, pgp, cfg.settle_s, stop))
    return pullers


# FeedStats counts the metrics carry (connectors/metrics/doors.py); `landed` is the feed moving.
METRIC_COUNTS = ("listed", "landed", "landed_bytes", "duplicates", "changed_while_read", "quarantined", "rejected",
                 "failures")


async def _poll_all(pullers: list[FeedPuller], metrics: Any = None) -> list[str]:
    """One poll of every feed, concurrently; the PHI-free failures."""
    results = await asyncio.gather(*(p.poll() for p in pullers), return_exceptions=True)
    if metrics is not None:
        for puller in pullers:
            metrics.publish(puller.feed.feed, puller.stats.as_dict(), METRIC_COUNTS, "landed")
    failures = []
    for result in results:
        if isinstance(result, FeedFailed):
            log.error("%s", result)
            failures.append(str(result))
        elif isinstance(result, BaseException):
            raise result
    return failures


async def run_once(pullers: list[FeedPuller], settle_s: float, metrics: Any = None) -> list[str]:
    """List, wait for files to settle, take them; the failures of the second (taking) round."""
    await _poll_all(pullers, metrics)
    await asyncio.sleep(settle_s)
    return await _poll_all(pullers, metrics)


async def run_forever(pullers: list[FeedPuller], interval_s: float, stop: asyncio.Event, metrics: Any = None) -> None:
    """Poll every interval until `stop` is set; a failing feed is retried at the next poll."""
    while not stop.is_set():
        await _poll_all(pullers, metrics)
        for puller in pullers:
            log.info("feed=%s stats=%s", puller.feed.feed, json.dumps(puller.stats.as_dict(), sort_keys=True))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass


def run(groups: Mapping[str, Mapping[str, str]], once: bool, only: list[str] | None = None) -> int:
    """Build the pullers and run them; prints a JSON summary per feed at the end."""
    from connectors.metrics.doors import DoorMetrics

    cfg = load_sftp_config(groups)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pullers = build_pullers(cfg, groups, only, stop)
        failures: list[str] = []
        metrics = DoorMetrics("sftp_pull", [p.feed.feed for p in pullers])
        metrics.serve()
        try:
            if once:
                failures = await run_once(pullers, cfg.settle_s, metrics)
            else:
                await run_forever(pullers, cfg.interval_s, stop, metrics)
        finally:
            metrics.close()
        print(json.dumps({p.feed.feed: p.stats.as_dict() for p in pullers}, indent=2))
        return 1 if failures else 0

    feeds = [f for f in cfg.feeds if only is None or f.feed in only]
    sources = [url_dataset(f"sftp://{f.host}:{f.port}/{f.directory.lstrip('/')}") for f in feeds]
    landed = [Dataset(f"s3://{cfg.destinations.landing_bucket}", f"{cfg.destinations.landing_prefix}{f.feed}/")
              for f in feeds]
    with lineage_run("sftp_pull", groups, sources, landed, processing="BATCH" if once else "STREAMING"):
        return asyncio.run(main())


def release(groups: Mapping[str, Mapping[str, str]], feed: str, sha256: str) -> str:
    """Land a quarantined file of `feed` after an operator's review; returns its landed key."""
    cfg = load_sftp_config(groups)
    s3, ledger = _storage(cfg, groups)
    return release_quarantined(s3, ledger, cfg.destinations, feed, sha256)


def main(argv: list[str] | None = None) -> int:
    """`run` or `release`."""
    parser = argparse.ArgumentParser(prog="medistream sftp-pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    sub = parser.add_subparsers(dest="action", required=True)
    go = sub.add_parser("run", help="pull the configured feeds")
    go.add_argument("--once", action="store_true", help="one settled pull of every feed, then exit")
    go.add_argument("--feed", action="append", help="only this feed (repeatable)")
    free = sub.add_parser("release", help="land a quarantined file after review")
    free.add_argument("--feed", required=True)
    free.add_argument("--sha256", required=True, help="the file's SHA-256 (its quarantine key)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # its INFO/DEBUG lines can name remote paths
    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    try:
        if args.action == "release":
            print(release(groups, args.feed, args.sha256))
            return 0
        return run(groups, args.once, args.feed)
    except ReleaseRefused as err:
        print(f"medistream sftp-pull: {err}", file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"medistream sftp-pull: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


"""`medistream rest-pull run [--once] [--feed F]`: pull partner APIs into raw.<feed>, one transaction per page.

    --once     pull every configured feed until caught up, print a JSON summary, exit (1 if a feed failed)
    (default)  poll every `interval.s` until SIGTERM/SIGINT; the page in hand is committed, then it exits

Configuration: group `rest_pull` (`feeds`, per feed `<feed>.url`, `<feed>.secret`, `<feed>.page.size`,
optional `<feed>.token.url`; `interval.s`, `cursor.topic`, `transactional.id.prefix`, `timeout.s`,
`retry.max.attempts`, `retry.after.max.s`), Kafka from `kafka`, feed contracts from `feeds`, the
Secrets Manager endpoint from `phi`. Every feed's contract must list the `rest` door and a json format.
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
from urllib.parse import urlsplit, urlunsplit

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth
from connectors.lineage.datasets import topic_datasets, url_dataset
from connectors.lineage.emitter import lineage_run
from connectors.properties import (
    ConfigError,
    PropertyGroup,
    default_properties_path,
    load_kafka_auth,
    load_phi_config,
    read_property_groups,
)
from connectors.rest_pull.client import FeedFailed, RetryPolicy

log = logging.getLogger("medistream.rest_pull")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
FEED_KEYS = ("url", "secret", "page.size", "token.url")
RAW_PREFIX = "raw."


@dataclass(frozen=True)
class PullFeed:
    """One pulled feed: where its pages and tokens are, the secret holding its client credentials."""

    name: str
    url: str
    token_url: str
    secret: str  # Secrets Manager secret id: {"client_id", "client_secret"}; the values never leave it
    page_size: int

    @property
    def raw_topic(self) -> str:
        """The topic its records land on."""
        return f"{RAW_PREFIX}{self.name}"


@dataclass(frozen=True)
class PullConfig:
    """Everything the puller needs, validated at start-up."""

    feeds: tuple[PullFeed, ...]
    interval_s: float
    cursor_topic: str
    transactional_id_prefix: str
    bootstrap_servers: str
    contracts_dir: str
    policy: RetryPolicy
    kafka_auth: KafkaAuth = PLAINTEXT_AUTH


def _http_url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"property 'rest_pull.{key}' is not an http(s) URL")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(f"property 'rest_pull.{key}': plain http is allowed to loopback only (partners take https)")
    return value


def load_pull_config(groups: Mapping[str, Mapping[str, str]]) -> PullConfig:
    """Validate the `rest_pull`, `kafka` and `feeds` groups; errors name the bad key."""
    pull, kafka, feeds_group = (PropertyGroup(groups, n) for n in ("rest_pull", "kafka", "feeds"))
    raw = groups["rest_pull"]
    names = [n.strip() for n in pull.str("feeds", " ").split(",") if n.strip()]
    if len(set(names)) != len(names):
        raise ConfigError("property 'rest_pull.feeds' names a feed twice")
    known = {"feeds", "interval.s", "cursor.topic", "transactional.id.prefix", "timeout.s", "retry.max.attempts",
             "retry.after.max.s"}
    for key in raw:
        feed, _, rest = key.partition(".")
        if key not in known and not (feed in names and rest in FEED_KEYS):
            raise ConfigError(f"property 'rest_pull.{key}' is unknown (a feed's keys need the feed in "
                              "'rest_pull.feeds')")
    feeds = []
    for name in names:
        url = _http_url(f"{name}.url", pull.str(f"{name}.url"))
        origin = urlsplit(url)
        default_token = urlunsplit((origin.scheme, origin.netloc, "/oauth2/token", "", ""))
        token_url = _http_url(f"{name}.token.url", pull.str(f"{name}.token.url", default_token))
        feeds.append(PullFeed(name, url, token_url, pull.str(f"{name}.secret"), pull.int(f"{name}.page.size", 100)))

    def number(key: str, default: str) -> float:
        try:
            value = float(pull.str(key, default))
        except ValueError:
            raise ConfigError(f"property 'rest_pull.{key}' must be a number") from None
        if value <= 0:
            raise ConfigError(f"property 'rest_pull.{key}' must be > 0")
        return value

    policy = RetryPolicy(max_attempts=pull.int("retry.max.attempts", 6), timeout_s=number("timeout.s", "30"),
                         retry_after_max_s=number("retry.after.max.s", "30"))
    return PullConfig(tuple(feeds), number("interval.s", "60"), pull.str("cursor.topic", "medistream.pull.cursors"),
                      pull.str("transactional.id.prefix", "medistream-rest-pull"), kafka.str("bootstrap.servers"),
                      feeds_group.str("contracts.dir", ""), policy, load_kafka_auth(groups))


def check_contracts(cfg: PullConfig, contracts: Mapping[str, Any]) -> dict[str, bool]:
    """Each pulled feed's contract must exist, list the `rest` door and be json; return feed -> JSON lines."""
    lines = {}
    for feed in cfg.feeds:
        contract = contracts.get(feed.name)
        if contract is None:
            raise ConfigError(f"property 'rest_pull.feeds': feed {feed.name} has no feed contract")
        if "rest" not in contract.sources:
            raise ConfigError(f"feed {feed.name}: its contract ({contract.origin}) does not list the rest door "
                              f"(sources: {', '.join(contract.sources)})")
        if contract.format != "json":
            raise ConfigError(f"feed {feed.name}: pulled pages carry JSON records, its contract's format is "
                              f"{contract.format}")
        lines[feed.name] = bool(contract.options.get("lines"))
    return lines


# FeedMetrics counts the metrics carry (connectors/metrics/doors.py); `records` is the feed moving.
METRIC_COUNTS = ("pages", "records", "empty_polls", "retries", "rate_limited", "auth_refreshes", "aborted_transactions")


async def run(cfg: PullConfig, groups: Mapping[str, Mapping[str, str]], *, once: bool, only: str | None = None,
              stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Pull the configured feeds (or `only`); return the summary {feeds: {feed: metrics}, failed: [...]}."""
    import aiohttp

    from connectors.kafka import create_missing_topics
    from connectors.kms import aws_client
    from connectors.metrics.doors import DoorMetrics
    from connectors.partners.auth import AuthError, load_credentials
    from connectors.rest_pull.client import PageClient
    from connectors.rest_pull.cursors import ensure_cursor_topic, read_cursors
    from connectors.rest_pull.puller import FeedPuller
    from schemas.contracts import FEEDS_DIR
    from schemas.partner_contract import Auth
    from udfs.contract_checks import load_feed_contracts

    feeds = [f for f in cfg.feeds if only is None or f.name == only]
    if only is not None and not feeds:
        raise ConfigError(f"--feed {only}: not in 'rest_pull.feeds'")
    lines = check_contracts(cfg, load_feed_contracts(Path(cfg.contracts_dir) if cfg.contracts_dir else FEEDS_DIR))
    stop = stop or asyncio.Event()
    secrets = aws_client(load_phi_config(groups), "secretsmanager")
    ensure_cursor_topic(cfg.bootstrap_servers, cfg.cursor_topic, auth=cfg.kafka_auth)
    create_missing_topics(cfg.bootstrap_servers, [f.raw_topic for f in feeds], auth=cfg.kafka_auth)

    def credentials(feed: PullFeed) -> Any:
        auth = Auth(type="oauth2_client_credentials", secret_id=feed.secret, token_url=feed.token_url)
        return lambda: load_credentials(secrets, auth, feed.name)

    pullers: dict[str, FeedPuller] = {}
    failed: dict[str, str] = {}
    for feed in feeds:
        client = PageClient(feed.name, feed.url, feed.token_url, feed.page_size, credentials(feed), cfg.policy,
                            lines[feed.name], stop)
        puller = FeedPuller(client, cfg.bootstrap_servers, feed.raw_topic, cfg.cursor_topic,
                            f"{cfg.transactional_id_prefix}.{feed.name}", auth=cfg.kafka_auth)
        try:
            await asyncio.to_thread(puller.open)  # fences a crashed instance first ...
            pullers[feed.name] = puller
        except FeedFailed as err:
            failed[feed.name] = err.reason
            log.error("feed %s failed: %s", feed.name, err)
    # ... so that no transaction it left open holds the cursor read back.
    cursors = await asyncio.to_thread(read_cursors, cfg.bootstrap_servers, cfg.cursor_topic, auth=cfg.kafka_auth)
    for name, puller in pullers.items():
        puller.resume(cursors.get(name))
        log.info("feed %s: resuming after page %d (%d records so far)", name, puller.state.page, puller.state.total)

    metrics = DoorMetrics("rest_pull", [f.name for f in feeds])
    metrics.serve()

    async def one_feed(puller: FeedPuller, session: aiohttp.ClientSession) -> None:
        try:
            while not stop.is_set():
                await puller.pull(session, stop)
                metrics.publish(puller.feed, puller.metrics.as_dict(), METRIC_COUNTS, "records")
                if once or stop.is_set():
                    break
                try:
                    await asyncio.wait_for(stop.wait(), cfg.interval_s)
                except TimeoutError:
                    pass
        except (FeedFailed, AuthError) as err:
            reason = err.reason if isinstance(err, FeedFailed) else "auth_refused"
            failed[puller.feed], puller.metrics.status, puller.metrics.reason = reason, "failed", reason
            metrics.publish(puller.feed, {"failed": {reason: 1}}, ("failed",), "")
            log.error("feed %s failed: %s", puller.feed, err)

    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(one_feed(p, session) for p in pullers.values()))
    finally:
        for puller in pullers.values():
            puller.close()
        metrics.close()
    per_feed: dict[str, dict[str, Any]] = {name: p.metrics.as_dict() for name, p in pullers.items()}
    for name, reason in failed.items():
        per_feed.setdefault(name, {"status": "failed", "reason": reason})
    return {"feeds": per_feed, "failed": dict(sorted(failed.items()))}


def pull_until_caught_up(properties: Path, feed: str | None = None) -> dict[str, Any]:
    """Run `rest-pull run --once` in-process (the demo's call): pull until caught up, return the summary."""
    groups = read_property_groups(properties)
    return asyncio.run(run(load_pull_config(groups), groups, once=True, only=feed))


def main(argv: list[str] | None = None) -> int:
    """`run [--once] [--feed F]`; exit 0, 1 when a feed failed, 2 on a configuration error."""
    parser = argparse.ArgumentParser(prog="medistream rest-pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    sub = parser.add_subparsers(dest="action", required=True)
    cmd = sub.add_parser("run", help="pull the configured feeds")
    cmd.add_argument("--once", action="store_true", help="pull until caught up, then exit")
    cmd.add_argument("--feed", help="pull this feed only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main_async() -> dict[str, Any]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run(cfg, groups, once=args.once, only=args.feed, stop=stop)

    try:
        groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
        cfg = load_pull_config(groups)
        feeds = [f for f in cfg.feeds if args.feed in (None, f.name)]
        with lineage_run("rest_pull", groups, [url_dataset(f.url) for f in feeds],
                         topic_datasets(cfg.bootstrap_servers, [f.raw_topic for f in feeds]),
                         processing="BATCH" if args.once else "STREAMING"):
            summary = asyncio.run(main_async())
    except ConfigError as err:
        print(f"medistream rest-pull: configuration error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

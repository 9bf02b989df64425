"""`medistream ingest-api`: serve the REST ingestion API, or manage its per-feed API keys.

    medistream ingest-api serve [--properties FILE] [--port N]
    medistream ingest-api add-key --feed FEED      # prints a new key once; only its digest is stored
    medistream ingest-api revoke-key --feed FEED < key-file   # servers drop it within keys.refresh.s

Serves on 127.0.0.1, or the address `ingest_api.bind.host` names (0.0.0.0 in a Fargate task behind the
load balancer, whose TLS it is). Configuration: group `ingest_api` (`port`, `bind.host`, `keys.secret`,
`keys.refresh.s`, `idempotency.table`, `max.batch`, `body.timeout.s`, `header.timeout.s`, `rate`, `burst`,
and per feed `<feed>.rate` / `<feed>.burst`), Kafka from `kafka`, AWS endpoint from `phi`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.kafka import PLAINTEXT_AUTH, KafkaAuth
from connectors.lineage.datasets import Dataset, topic_datasets
from connectors.lineage.emitter import lineage_run
from connectors.properties import (
    ConfigError,
    PropertyGroup,
    default_properties_path,
    load_kafka_auth,
    load_phi_config,
    read_property_groups,
)
from udfs.source import RAW_TOPIC_PREFIX

log = logging.getLogger("medistream.ingest_api")


@dataclass(frozen=True)
class IngestApiConfig:
    """The service's settings (names only: key digests live in Secrets Manager)."""

    port: int
    keys_secret: str
    idempotency_table: str
    bootstrap_servers: str
    contracts_dir: str
    max_batch: int
    body_timeout_s: float
    header_timeout_s: float
    keys_refresh_s: float
    rate: float
    burst: int
    feed_rates: Mapping[str, tuple[float, int]]
    kafka_auth: KafkaAuth = PLAINTEXT_AUTH


def load_api_config(groups: Mapping[str, Mapping[str, str]]) -> IngestApiConfig:
    """Validate the `ingest_api`, `kafka` and `feeds` groups."""
    api, kafka, feeds = (PropertyGroup(groups, n) for n in ("ingest_api", "kafka", "feeds"))
    raw = groups.get("ingest_api", {})
    rate, burst = float(api.str("rate", "200")), api.int("burst", 400)
    feed_rates = {k.removesuffix(".rate"): (float(v), int(raw.get(k.removesuffix(".rate") + ".burst", burst)))
                  for k, v in raw.items() if k.endswith(".rate") and k != "rate"}
    return IngestApiConfig(
        port=api.int("port", 18090), keys_secret=api.str("keys.secret", "medistream/ingest-api/keys"),
        idempotency_table=api.str("idempotency.table", "medistream-ingest-idempotency"),
        bootstrap_servers=kafka.str("bootstrap.servers"), contracts_dir=feeds.str("contracts.dir", ""),
        max_batch=api.int("max.batch", 1000), body_timeout_s=float(api.str("body.timeout.s", "10")),
        header_timeout_s=_positive(api.str("header.timeout.s", "5"), "ingest_api.header.timeout.s"),
        keys_refresh_s=_positive(api.str("keys.refresh.s", "60"), "ingest_api.keys.refresh.s"),
        rate=rate, burst=burst, feed_rates=feed_rates, kafka_auth=load_kafka_auth(groups))


def _positive(value: str, key: str) -> float:
    """A number of seconds > 0, or ConfigError naming the key."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"property '{key}' must be a number of seconds > 0")
    return seconds


def build_service(cfg: IngestApiConfig, groups: Mapping[str, Mapping[str, str]],
                  metrics: Any = None) -> tuple[Any, Any]:
    """(Starlette app, producer) over the configured contracts, key digests and idempotency table."""
    from connectors.ingest_api.app import ApiSettings, build_app
    from connectors.ingest_api.keys import RefreshingKeys
    from connectors.ingest_api.producer import KafkaSender
    from connectors.ingest_api.receipts import Receipts, ensure_receipts_table
    from connectors.kafka import create_missing_topics
    from connectors.kms import aws_client
    from schemas.contracts import FEEDS_DIR
    from udfs.contract_checks import load_feed_contracts

    phi = load_phi_config(groups)
    contracts = load_feed_contracts(Path(cfg.contracts_dir) if cfg.contracts_dir else FEEDS_DIR)
    if metrics is not None:
        metrics.feeds = frozenset(contracts)  # any other name in a URL is counted as "unknown"
    # The broker does not create topics on first use: a rest feed's raw topic must exist before its first
    # record (the REST puller does the same for its feeds).
    create_missing_topics(cfg.bootstrap_servers, [f"{RAW_TOPIC_PREFIX}{f}" for f in rest_feeds(contracts)],
                          auth=cfg.kafka_auth)
    keys = RefreshingKeys(aws_client(phi, "secretsmanager"), cfg.keys_secret, cfg.keys_refresh_s)
    dynamodb = aws_client(phi, "dynamodb")
    ensure_receipts_table(dynamodb, cfg.idempotency_table)
    producer = KafkaSender(cfg.bootstrap_servers, auth=cfg.kafka_auth)
    settings = ApiSettings(max_batch=cfg.max_batch, body_timeout_s=cfg.body_timeout_s, default_rate=cfg.rate,
                           default_burst=cfg.burst)
    app = build_app(contracts, keys, producer, Receipts(dynamodb, cfg.idempotency_table), settings,
                    dict(cfg.feed_rates), metrics=metrics)
    return app, producer


def _edit_keys(groups: Mapping[str, Mapping[str, str]], change: Any) -> Any:
    """Read the key digests (none yet: {}), apply `change(doc)` and store the result; return what it returned."""
    from connectors.kms import aws_client
    from connectors.secrets import put_secret

    cfg = load_api_config(groups)
    secrets = aws_client(load_phi_config(groups), "secretsmanager")
    try:
        doc = json.loads(secrets.get_secret_value(SecretId=cfg.keys_secret)["SecretString"])
    except secrets.exceptions.ResourceNotFoundException:
        doc = {}
    result = change(doc)
    put_secret(secrets, cfg.keys_secret, doc)
    return result


def add_key(groups: Mapping[str, Mapping[str, str]], feed: str) -> str:
    """Create a key for `feed`, store its digest (creating the secret if needed), return the key."""
    from connectors.ingest_api.keys import new_key

    key, digest = new_key()
    _edit_keys(groups, lambda doc: doc.setdefault(feed, []).append(digest))
    return key


def revoke_key(groups: Mapping[str, Mapping[str, str]], feed: str, key: str) -> bool:
    """Remove `key` from `feed`'s keys; False if it was not one of them. Running servers stop accepting it
    within `keys.refresh.s`."""
    from connectors.ingest_api.keys import digest

    def remove(doc: dict[str, list[str]]) -> bool:
        held = doc.get(feed, [])
        doc[feed] = [d for d in held if d != digest(key)]
        return len(doc[feed]) < len(held)

    return bool(_edit_keys(groups, remove))


def rest_feeds(contracts: Mapping[str, Any]) -> list[str]:
    """The feeds whose contracts take records over REST (this API, or the REST puller)."""
    return sorted(f for f, c in contracts.items() if "rest" in c.sources)


def api_datasets(cfg: IngestApiConfig, port: int) -> tuple[list[Dataset], list[Dataset]]:
    """Lineage: each REST feed's records route in, its raw topic out."""
    from connectors.ingest_api.server import LOOPBACK
    from schemas.contracts import FEEDS_DIR, load_contracts

    feeds = rest_feeds(load_contracts(Path(cfg.contracts_dir) if cfg.contracts_dir else FEEDS_DIR))
    return ([Dataset(f"http://{LOOPBACK}:{port}", f"v1/feeds/{feed}/records") for feed in feeds],
            topic_datasets(cfg.bootstrap_servers, [f"{RAW_TOPIC_PREFIX}{feed}" for feed in feeds]))


def serve(groups: Mapping[str, Mapping[str, str]], port: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT (uvicorn's own handling), then flush the producer."""
    import uvicorn

    from connectors.ingest_api.server import bind_host, uvicorn_config
    from connectors.metrics.doors import DoorMetrics

    cfg = load_api_config(groups)
    metrics = DoorMetrics("ingest_api")
    app, producer = build_service(cfg, groups, metrics)
    metrics.serve()
    server = uvicorn.Server(uvicorn_config(app, port or cfg.port, cfg.header_timeout_s, host=bind_host(groups),
                                           timeout_keep_alive=5, log_level="info"))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then restores the handlers it found and raises the
    # signal again: with the default handler that kills the process before the producer is flushed.
    # Ours records it, so the shutdown ends here, with the producer closed and exit code 0.
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, _frame: received.append(sig))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with lineage_run("ingest_api", groups, *api_datasets(cfg, port or cfg.port)):
            server.run()
    finally:
        left = producer.close()
        metrics.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("ingest API stopped (signal %s); %d messages unacknowledged at shutdown",
                 ",".join(str(s) for s in received) or "none", left)
    return 0


def wait_until_serving(port: int, check: Callable[[], None], timeout_s: float = 60.0) -> None:
    """Return once the API on 127.0.0.1:`port` answers /healthz. `check` runs between tries and raises if the
    server's process (or another the caller watches) has exited; RuntimeError when time runs out."""
    import time
    import urllib.request

    from connectors.ingest_api.server import LOOPBACK

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # B310 - an http:// URL to our own loopback health check
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/healthz", timeout=2):
                return
        except OSError:
            check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the ingestion API did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    """`serve`, `add-key` or `revoke-key`."""
    parser = argparse.ArgumentParser(prog="medistream ingest-api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--properties", help="application_properties.json (default: MSF path or conf/)")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("serve", help="serve on 127.0.0.1 (or ingest_api.bind.host)")
    run.add_argument("--port", type=int)
    key = sub.add_parser("add-key", help="create an API key for a feed (printed once)")
    key.add_argument("--feed", required=True)
    revoke = sub.add_parser("revoke-key", help="revoke a feed's key, read from standard input (never argv)")
    revoke.add_argument("--feed", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    groups = read_property_groups(Path(args.properties) if args.properties else default_properties_path())
    if args.action == "add-key":
        print(add_key(groups, args.feed))
        return 0
    if args.action == "revoke-key":
        if not revoke_key(groups, args.feed, sys.stdin.readline().strip()):
            print(f"medistream ingest-api: that key is not one of feed {args.feed}'s keys", file=sys.stderr)
            return 1
        return 0
    return serve(groups, args.port)


if __name__ == "__main__":
    sys.exit(main())

"""Start-up checks: fail before the job is submitted, with a message that names what is wrong.

A Flink job whose broker or bucket is missing does not fail: it restarts, quietly, for ever.
These checks turn the common misconfigurations into one clear line instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from connectors.iceberg import IcebergConfig
from connectors.kafka import PLAINTEXT, PLAINTEXT_AUTH, KafkaAuth, create_missing_topics
from connectors.properties import ConfigError, IngestConfig

_TIMEOUT_S = 10.0


def check_kafka(bootstrap_servers: str, ensure_topics: tuple[str, ...], auth: KafkaAuth = PLAINTEXT_AUTH) -> None:
    """The broker answers (authenticating as `auth` says) and the topics the job writes exist (created if missing)."""
    from confluent_kafka import KafkaException

    try:
        create_missing_topics(bootstrap_servers, ensure_topics, timeout_s=_TIMEOUT_S,
                              admin_config={"socket.timeout.ms": 5000}, auth=auth)
    except ConnectionError:
        how = "" if auth.security == PLAINTEXT else f" with kafka.security={auth.security}"
        raise ConfigError(f"Kafka broker unreachable at kafka.bootstrap.servers={bootstrap_servers}{how}") from None
    except KafkaException as err:
        raise ConfigError(f"cannot create Kafka topics {list(ensure_topics)}: {err}") from None


def check_buckets(endpoint: str, region: str, paths: dict[str, str]) -> None:
    """Every s3:// path's bucket exists and is reachable; names the property on failure."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = boto3.client(
        "s3", endpoint_url=endpoint or None, region_name=region,
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}),
    )
    for prop, path in paths.items():
        url = urlparse(path)
        if url.scheme not in ("s3", "s3a"):
            continue
        try:
            s3.head_bucket(Bucket=url.netloc)
        except (ClientError, BotoCoreError) as err:
            raise ConfigError(f"bucket '{url.netloc}' of {prop}={path} is not reachable at "
                              f"{endpoint or 'AWS'}: {type(err).__name__}") from None


def mark_source_prefix(endpoint: str, region: str, path: str) -> None:
    """Make a monitored S3 prefix exist before any file arrives: the FileSource fails on a missing one.

    A hidden `.keep` object does it (Flink skips names starting with `.` or `_`, so it is never read).
    """
    import boto3

    url = urlparse(path)
    if url.scheme not in ("s3", "s3a"):
        return
    s3 = boto3.client("s3", endpoint_url=endpoint or None, region_name=region)
    key = url.path.lstrip("/").rstrip("/") + "/.keep" if url.path.strip("/") else ".keep"
    s3.put_object(Bucket=url.netloc, Key=key, Body=b"")


def check_catalog(ice: IcebergConfig, region: str) -> None:
    """The catalog is there: a SQLite JDBC catalog's folder exists (the file is created on first use);
    the Glue Data Catalog answers for the namespace's database (which the job creates if missing)."""
    if ice.is_glue:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        glue = boto3.client("glue", endpoint_url=ice.glue_endpoint or None, region_name=region,
                            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2}))
        try:
            glue.get_database(Name=ice.namespace)
        except glue.exceptions.EntityNotFoundException:
            return
        except (ClientError, BotoCoreError) as err:
            raise ConfigError(f"Glue Data Catalog (iceberg.catalog-impl) not usable for database {ice.namespace} at "
                              f"{ice.glue_endpoint or 'AWS'}: {type(err).__name__}") from None
    elif ice.uri.startswith("jdbc:sqlite:"):
        folder = Path(ice.uri.removeprefix("jdbc:sqlite:")).parent
        if not folder.is_dir():
            raise ConfigError(f"iceberg.uri={ice.uri}: folder {folder} does not exist (is the stack up?)")


def check_contracts(contracts_dir: str) -> int:
    """Every feed contract loads and passes its checks; returns how many there are."""
    from schemas.contracts import FEEDS_DIR, ContractError
    from udfs.contract_checks import load_feed_contracts

    try:
        return len(load_feed_contracts(Path(contracts_dir) if contracts_dir else FEEDS_DIR))
    except ContractError as err:
        raise ConfigError(f"feed contract invalid: {err}") from None


def check_phi_keys(cfg: IngestConfig) -> None:
    """The token keys open and every data domain's CMK is usable, before any record is read."""
    from connectors.kms import KmsDataKeys, aws_client, configured_token_keys
    from schemas.phi_policy import DEAD_LETTER_DOMAIN, load_policy
    from udfs.contract_checks import load_feed_contracts
    from udfs.phi.errors import ProtectionError

    contracts = load_feed_contracts(cfg.feeds.directory)
    domains = {DEAD_LETTER_DOMAIN} | {d for c in contracts.values() for d in load_policy(c.phi_policy).domains.values()}
    kms = aws_client(cfg.phi, "kms")
    try:
        configured_token_keys(cfg.phi, kms)
        source = KmsDataKeys(kms, cfg.phi.alias_prefix)
        for domain in sorted(domains):
            source.generate(domain)
    except ProtectionError as err:
        raise ConfigError(f"PHI keys (phi.* properties) not usable: {err}") from None


def check_ingest_dependencies(cfg: IngestConfig) -> None:
    """All external systems the ingest job needs, in the order a person would check them."""
    check_contracts(cfg.feeds.contracts_dir)
    from jobs.topics import output_topics

    check_kafka(cfg.kafka.bootstrap_servers, output_topics(cfg), cfg.kafka.auth)
    os.environ.setdefault("AWS_REGION", cfg.s3.region)
    check_buckets(cfg.s3.endpoint, cfg.s3.region, {
        "landing.path": cfg.landing.path,
        "archive.path": cfg.archive.path,
        "archive.dead.letters.path": cfg.archive.dead_letters_path,
        "iceberg.warehouse": cfg.iceberg.warehouse,
        "reference.path": cfg.reference.path,
    })
    for path in (cfg.landing.path, cfg.reference.path):
        mark_source_prefix(cfg.s3.endpoint, cfg.s3.region, path)
    check_catalog(cfg.iceberg, cfg.s3.region)
    check_phi_keys(cfg)

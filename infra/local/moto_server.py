"""moto in server mode: local S3 and KMS for the stack, and their provisioning.

moto keeps all state in memory: `down` (or a crash) loses every bucket, object and key. That is
intended for a local stack; `up` re-provisions whatever is missing, so it is safe to run again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psutil

from infra.local import process
from infra.local.settings import LOOPBACK, StackSettings
from infra.storage_policy import encryption_configuration, lifecycle_configuration


def pid_file(settings: StackSettings) -> Path:
    """PID file of the moto server."""
    return settings.run_dir / "moto.pid"


def log_file(settings: StackSettings) -> Path:
    """The moto server's log (werkzeug request lines and errors)."""
    return settings.logs_dir / "moto.log"


def _marker(settings: StackSettings) -> str:
    return f"moto_serialized -H {LOOPBACK} -p {settings.moto_port}"


def client(settings: StackSettings, service: str, *, health_probe: bool = False) -> Any:
    """A boto3 client for `service` pointed at the local moto server."""
    import boto3
    from botocore.config import Config

    config = (
        Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1})
        if health_probe
        else Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})
    )
    return boto3.client(
        service,
        endpoint_url=settings.s3_endpoint(),
        region_name=settings.region,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        config=config,
    )


def start(settings: StackSettings) -> psutil.Process:
    """Start the moto server (infra.local.moto_serialized) on 127.0.0.1:<moto_port> in the background."""
    # Our launcher: moto.server plus atomic DynamoDB conditional writes (see infra/local/moto_serialized.py).
    argv = [sys.executable, "-m", "infra.local.moto_serialized", "-H", LOOPBACK, "-p", str(settings.moto_port)]
    return process.launch(
        argv,
        log_file=log_file(settings),
        pid_file=pid_file(settings),
        marker=_marker(settings),
        cwd=settings.home,
    )


def is_healthy(settings: StackSettings) -> bool:
    """True if S3 ListBuckets succeeds against the server."""
    try:
        client(settings, "s3", health_probe=True).list_buckets()
    except Exception:
        return False
    return True


def wait_healthy(settings: StackSettings) -> float:
    """Block until moto answers; return seconds waited or raise HealthTimeout."""
    return process.wait_until(
        lambda: is_healthy(settings),
        component="moto",
        timeout_s=settings.moto_health_timeout_s,
        pid_file=pid_file(settings),
        log_file=log_file(settings),
        interval_s=0.2,
    )


def ensure_archive_key(settings: StackSettings) -> str:
    """Return the ARN of the KMS key behind the archive alias, creating both if missing."""
    kms = client(settings, "kms")
    for page in kms.get_paginator("list_aliases").paginate():
        for alias in page["Aliases"]:
            if alias["AliasName"] == settings.archive_kms_alias and alias.get("TargetKeyId"):
                return str(kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]["Arn"])
    key = kms.create_key(Description="medistream archive bucket default encryption (local)")
    arn = str(key["KeyMetadata"]["Arn"])
    kms.create_alias(AliasName=settings.archive_kms_alias, TargetKeyId=key["KeyMetadata"]["KeyId"])
    return arn


def ensure_phi_keys(settings: StackSettings) -> None:
    """One CMK per data domain, the token-keys secret and the audit table, named as the local properties say."""
    from connectors.audit import ensure_audit_table, load_audit_settings
    from connectors.kms import ensure_domain_keys, ensure_token_secret
    from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
    from schemas.phi_policy import key_domains

    groups = read_property_groups(LOCAL_PROPERTIES)
    phi, audit_table = load_phi_config(groups), load_audit_settings(groups).audit.table
    kms = client(settings, "kms")
    ensure_domain_keys(kms, phi.alias_prefix, key_domains())
    ensure_token_secret(client(settings, "secretsmanager"), kms, phi.alias_prefix, phi.token_secret)
    ensure_audit_table(client(settings, "dynamodb"), audit_table)


def provision(settings: StackSettings) -> str:
    """Create buckets, archive KMS key, the archive's SSE-KMS default and lifecycle (idempotent); return key ARN."""
    s3 = client(settings, "s3")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in settings.buckets():
        if bucket in existing:
            continue
        if settings.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": settings.region}
            )
    key_arn = ensure_archive_key(settings)
    ensure_phi_keys(settings)
    # Re-applied on every `up`: cheap, and it repairs a bucket whose default was changed by hand.
    # Encryption and lifecycle as declared in infra/storage_policy.py. Object lock is not applied
    # locally: compliance mode would make every test run's archive undeletable for seven years.
    s3.put_bucket_encryption(Bucket=settings.archive_bucket,
                             ServerSideEncryptionConfiguration=encryption_configuration(key_arn))
    s3.put_bucket_lifecycle_configuration(Bucket=settings.archive_bucket,
                                          LifecycleConfiguration=lifecycle_configuration())
    return key_arn

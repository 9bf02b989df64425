"""The deploy rehearsal: the long-lived stacks' templates deployed to a private local AWS API server, then probed.

`medistream infra rehearse` synthesizes dev, starts moto's server on 127.0.0.1 (a free port, its own
process, stopped after), seeds the CDK bootstrap version parameter, creates identity -> keys ->
credentials -> storage through its CloudFormation API in deploy order, and asks the service APIs (never
the stack status: the local server reports CREATE_COMPLETE for what it skipped) whether each property
holds. A probe's verdict is `holds`, `fails` (the server applied it and it is wrong: the rehearsal
fails), or `not applied` (the local server skips the property or does not enforce it: listed, not
passed). One change to the templates is made, for the server: CloudFormation tags are taken off the
KMS keys, because moto 5.2.5 reads them as KMS API tags and fails (KeyError 'TagKey', decision 0030).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

REHEARSED = ("identity", "keys", "credentials", "storage")
HOST = "127.0.0.1"
BOOTSTRAP_VERSION = "/cdk-bootstrap/hnb659fds/version"


@dataclass(frozen=True)
class Probe:
    """One property of the deployed stacks, and what the service API said."""

    name: str
    verdict: str  # holds | fails | not applied
    detail: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_server(log: Path) -> Iterator[str]:
    """moto's server on 127.0.0.1 for the block: its endpoint URL; the process is stopped by its PID after."""
    port = _free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],  # noqa: S603
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the local AWS API server did not start (see {log})") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _clients(url: str) -> Callable[[str], Any]:
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="rehearsal",
                            aws_secret_access_key="rehearsal")  # noqa: S106 - the local server's dummy credentials

    return client


def deploy(client: Callable[[str], Any], templates: Path, env: str) -> dict[str, str]:
    """Create the rehearsed stacks in order; each stack's final status."""
    client("ssm").put_parameter(Name=BOOTSTRAP_VERSION, Value="30", Type="String", Overwrite=True)
    cfn, status = client("cloudformation"), {}
    for stack in REHEARSED:
        name = f"medistream-{env}-{stack}"
        template = json.loads((templates / f"{name}.template.json").read_text())
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::KMS::Key":
                resource["Properties"].pop("Tags", None)
        cfn.create_stack(StackName=name, TemplateBody=json.dumps(template), Capabilities=["CAPABILITY_NAMED_IAM"])
        for _ in range(120):
            status[stack] = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
            if not status[stack].endswith("IN_PROGRESS"):
                break
            time.sleep(0.5)
    return status


def _api(call: Callable[[], Any]) -> tuple[bool, Any]:
    """(answered, value or error code) of one service call."""
    from botocore.exceptions import ClientError

    try:
        return True, call()
    except ClientError as err:
        return False, err.response["Error"]["Code"]


def _default_encryption(s3: Any, bucket: str) -> Any:
    return s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]


def _table(ddb: Any, name: str) -> Any:
    return ddb.describe_table(TableName=name)["Table"]


def probe(client: Callable[[str], Any], templates: Path, env: str) -> list[Probe]:
    """Ask the service APIs what the templates promise (the names come from the synthesized templates)."""
    from infra.aws.config import BUCKET_KEYS, names

    s3, kms, ddb, iam = client("s3"), client("kms"), client("dynamodb"), client("iam")
    account = client("sts").get_caller_identity()["Account"]
    n = names(env, account)
    probes: list[Probe] = []

    def add(name: str, ok: bool, detail: str, applied: bool = True) -> None:
        probes.append(Probe(name, "holds" if ok else ("fails" if applied else "not applied"), detail))

    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    ours = {a: k for a, k in aliases.items() if a.startswith(n.alias_prefix)}
    storage = json.loads((templates / f"medistream-{env}-keys.template.json").read_text())
    expected_keys = sum(1 for r in storage["Resources"].values() if r["Type"] == "AWS::KMS::Key")
    add("every CMK exists under its alias", len(ours) == expected_keys, f"{len(ours)} of {expected_keys} aliases")
    rotated = [kms.get_key_rotation_status(KeyId=k)["KeyRotationEnabled"] for k in ours.values()]
    add("every CMK rotates", all(rotated) and bool(rotated), f"{sum(rotated)} of {len(rotated)}")
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(f"{n.prefix}-")]
    identity = json.loads((templates / f"medistream-{env}-identity.template.json").read_text())
    expected_roles = sum(1 for r in identity["Resources"].values() if r["Type"] == "AWS::IAM::Role")
    add("every role exists", len(roles) == expected_roles, f"{len(roles)} of {expected_roles}")
    for role, key in BUCKET_KEYS.items():
        bucket = n.buckets[role]
        ok, enc = _api(partial(_default_encryption, s3, bucket))
        if key is None:
            add(f"{role}: SSE-S3", ok and enc.get("SSEAlgorithm") == "AES256", str(enc))
            continue
        target = f":key/{ours.get(n.alias(key))}"  # the bucket's key must be the one its alias names
        add(f"{role}: SSE-KMS with the {key} key", ok and str(enc.get("KMSMasterKeyID", "")).endswith(target),
            f"{enc.get('SSEAlgorithm') if ok else enc}")
    landing, archive = n.buckets["landing"], n.buckets["archive"]
    ok, versioning = _api(lambda: s3.get_bucket_versioning(Bucket=archive).get("Status"))
    add("archive versioned", versioning == "Enabled", f"status {versioning}", applied=False)
    ok, policy = _api(lambda: s3.get_bucket_policy(Bucket=landing)["Policy"])
    add("landing bucket policy (TLS only, SSE-KMS with its key)", ok, "present" if ok else str(policy), applied=ok)
    ok, _answer = _api(lambda: s3.put_object(Bucket=landing, Key="feeds/rehearsal/probe", Body=b"rehearsal",
                                             ServerSideEncryption="AES256"))
    add("an SSE-S3 upload to landing is refused", not ok, "refused" if not ok else "accepted", applied=not ok)
    ok, lock = _api(lambda: s3.get_object_lock_configuration(Bucket=archive)["ObjectLockConfiguration"])
    add("archive Object Lock, compliance, 7 years", ok and lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE",
        str(lock), applied=ok)
    ok, replication = _api(lambda: s3.get_bucket_replication(Bucket=archive)["ReplicationConfiguration"])
    replicated = ok and replication["Role"].endswith(f":role/{n.role('archive_replication')}") and any(
        r["Destination"]["Bucket"].endswith(f":::{n.buckets['archive_replica']}") for r in replication["Rules"])
    add("archive replicates to the replica bucket", replicated, str(replication)[:80], applied=ok)
    ok, block = _api(lambda: s3.get_public_access_block(Bucket=landing)["PublicAccessBlockConfiguration"])
    add("public access blocked", ok and all(block.values()), str(block), applied=ok)
    for spec in n.tables:
        ok, desc = _api(partial(_table, ddb, spec.name))
        add(f"table {spec.name}: deletion protection", ok and desc.get("DeletionProtectionEnabled") is True,
            "on" if ok and desc.get("DeletionProtectionEnabled") else str(desc)[:80])
    table = n.tables[0].name
    ok, sse = _api(lambda: ddb.describe_table(TableName=table)["Table"].get("SSEDescription"))
    add("tables under the ledgers CMK", bool(sse), str(sse), applied=bool(sse))
    ok, pitr = _api(lambda: ddb.describe_continuous_backups(TableName=table)["ContinuousBackupsDescription"]
                    ["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"])
    add("tables with point-in-time recovery", pitr == "ENABLED", str(pitr), applied=pitr == "ENABLED")
    secrets = [s["Name"] for s in client("secretsmanager").list_secrets()["SecretList"]]
    add("secrets exist under the credentials CMK", bool(secrets), f"{len(secrets)} secrets", applied=bool(secrets))
    plans = client("backup").list_backup_plans()["BackupPlansList"]
    add("backup plan and locked vault", bool(plans), f"{len(plans)} plans", applied=bool(plans))
    return probes


def rehearse(templates: Path, env: str, log: Path) -> tuple[dict[str, str], list[Probe]]:
    """Deploy the long-lived stacks of `templates` to a private local server and probe them."""
    with local_server(log) as url:
        client = _clients(url)
        status = deploy(client, templates, env)
        return status, probe(client, templates, env)

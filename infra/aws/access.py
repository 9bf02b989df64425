"""Least privilege as data: every permission of every role, in one table a reviewer reads top to bottom.

A row is (role, actions, resource kind, names). The stacks turn the rows into key-policy statements
(kind `key`: the key policy names the role, nothing broader) and IAM policies (the rest); nothing
else grants. No `*` action; a `*` resource only where the service has no resource-level permission
(EC2 Describe* calls), each acknowledged in app.py with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.aws.config import key_domains, partner_domains

ENCRYPT = ("kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey")
DECRYPT = ("kms:Decrypt", "kms:DescribeKey")
S3_READ = ("s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket")
S3_WRITE = ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
S3_DELETE = ("s3:DeleteObject",)
LEDGER = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
          "dynamodb:Query", "dynamodb:DescribeTable")
AUDIT = ("dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:DescribeTable")
GLUE = ("glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:CreateTable", "glue:UpdateTable")
SECRET_READ = ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")
MSK_CONNECT = ("kafka-cluster:Connect", "kafka-cluster:DescribeCluster")
MSK_TOPICS = ("kafka-cluster:DescribeTopic", "kafka-cluster:ReadData", "kafka-cluster:WriteData")
MSK_GROUPS = ("kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup")
MSK_TXN = ("kafka-cluster:DescribeTransactionalId", "kafka-cluster:AlterTransactionalId")
LOGS = ("logs:DescribeLogStreams", "logs:PutLogEvents")
VPC_DESCRIBE = ("ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions",
                "ec2:DescribeNetworkInterfaces")
VPC_ENI = ("ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface")


@dataclass(frozen=True)
class Grant:
    """One row: `role` may do `actions` on the resources of `kind` named `names`."""

    role: str
    actions: tuple[str, ...]
    kind: str  # key, bucket, table, glue, secret, msk-cluster, msk-topic, msk-group, msk-txn, log-group,
    # vpc-describe, vpc-eni
    names: tuple[str, ...] = ()


def grants() -> tuple[Grant, ...]:
    """Every grant of the Managed Flink applications' roles."""
    domains = tuple(key_domains())
    return (
        # ingest: reads landed files and reference data, protects every domain, writes lake, archive, audit.
        Grant("ingest", ENCRYPT + DECRYPT, "key", (*domains, "warehouse", "archive", "ledgers")),
        Grant("ingest", DECRYPT, "key", ("landing", "artifacts")),
        Grant("ingest", S3_READ, "bucket", ("landing", "reference", "artifacts")),
        Grant("ingest", S3_READ + S3_WRITE + S3_DELETE, "bucket", ("warehouse",)),
        Grant("ingest", S3_READ + S3_WRITE, "bucket", ("archive",)),
        Grant("ingest", AUDIT, "table", ("audit",)),
        Grant("ingest", GLUE, "glue"),
        Grant("ingest", SECRET_READ, "secret", ("phi/token-keys",)),
        Grant("ingest", MSK_CONNECT, "msk-cluster"),
        Grant("ingest", MSK_TOPICS, "msk-topic", ("raw.", "curated.", "medistream.dlq")),
        Grant("ingest", MSK_GROUPS, "msk-group", ("medistream-ingest",)),
        Grant("ingest", MSK_TXN, "msk-txn", ("medistream-ingest",)),
        # partner delivery: opens only the domains its partners' contracts reveal; keeps the delivery ledger.
        Grant("partner_delivery", DECRYPT, "key", (*partner_domains(), "artifacts")),
        Grant("partner_delivery", ENCRYPT + DECRYPT, "key", ("ledgers",)),
        Grant("partner_delivery", S3_READ, "bucket", ("artifacts",)),
        Grant("partner_delivery", LEDGER, "table", ("partners",)),
        Grant("partner_delivery", AUDIT, "table", ("audit",)),
        Grant("partner_delivery", SECRET_READ, "secret", ("phi/token-keys", "partners/")),
        Grant("partner_delivery", MSK_CONNECT, "msk-cluster"),
        Grant("partner_delivery", MSK_TOPICS, "msk-topic", ("curated.partner.", "medistream.dlq.partner")),
        Grant("partner_delivery", MSK_GROUPS, "msk-group", ("medistream-partner-delivery",)),
        # both: Managed Flink's own needs (its log group, network interfaces in the VPC).
        *(Grant(job, LOGS, "log-group") for job in ("ingest", "partner_delivery")),
        *(Grant(job, VPC_DESCRIBE, "vpc-describe") for job in ("ingest", "partner_delivery")),
        *(Grant(job, VPC_ENI, "vpc-eni") for job in ("ingest", "partner_delivery")),
    )


def key_users(key: str, level: tuple[str, ...]) -> list[str]:
    """The roles a key's policy names with exactly these actions."""
    return sorted({g.role for g in grants() if g.kind == "key" and key in g.names and g.actions == level})

"""Least privilege as data: every permission of every role, in one table a reviewer reads top to bottom.

A row is (role, actions, resource kind, names). The stacks turn the rows into key-policy statements
(kind `key`: the key policy names the role, nothing broader) and IAM policies (the rest); nothing
else grants. No `*` action; a `*` resource only where the service has no resource-level permission
(EC2 Describe* calls, ECR's GetAuthorizationToken), each acknowledged with its reason
(infra/aws/acknowledgements.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.aws.config import (
    ARCHIVE_REPLICA,
    ARCHIVE_REPLICATION_ROLE,
    BACKUP_ROLE,
    OPERATIONAL_ADMIN,
    OPERATIONAL_MIGRATE,
    OPERATIONAL_ROLES,
    TASK_EXECUTION,
    base_groups,
    feeds_with,
    key_domains,
    partner_domains,
    sftp_role,
    topics,
)

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
MSK_PRODUCE = (*MSK_CONNECT, "kafka-cluster:WriteDataIdempotently")  # idempotent / transactional producers
MSK_WRITE = ("kafka-cluster:DescribeTopic", "kafka-cluster:WriteData")
MSK_READ = ("kafka-cluster:DescribeTopic", "kafka-cluster:ReadData")
MSK_GROUPS = ("kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup")
MSK_TXN = ("kafka-cluster:DescribeTransactionalId", "kafka-cluster:AlterTransactionalId")
LOGS = ("logs:DescribeLogStreams", "logs:PutLogEvents")
VPC_DESCRIBE = ("ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions",
                "ec2:DescribeNetworkInterfaces")
VPC_ENI = ("ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface")
SFTP_OBJECTS = ("s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts")
ECR_AUTH = ("ecr:GetAuthorizationToken",)
ECR_PULL = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
SERVICE_LOGS = ("logs:CreateLogStream", "logs:PutLogEvents")
# S3 replication of the archive: read its configuration and each version with its lock (retention, legal hold), write
# replicas and their tags. No ReplicateDelete: delete markers are not replicated (the replica is the copy of record).
REPLICATION_SOURCE = ("s3:GetReplicationConfiguration", "s3:ListBucket", "s3:GetObjectVersionForReplication",
                      "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging", "s3:GetObjectRetention",
                      "s3:GetObjectLegalHold")
REPLICATION_DESTINATION = ("s3:ReplicateObject", "s3:ReplicateTags")


@dataclass(frozen=True)
class Grant:
    """One row: `role` may do `actions` on the resources of `kind` named `names`."""

    role: str
    actions: tuple[str, ...]
    kind: str  # key, bucket, table, glue, secret, msk-cluster, msk-topic, msk-group, msk-txn, log-group,
    # vpc-describe, vpc-eni, feed-prefix (a feed's landing prefix: objects, and listing it alone), ecr-auth,
    # ecr-repo, service-log-groups
    names: tuple[str, ...] = ()


def grants() -> tuple[Grant, ...]:
    """Every grant of every role: the Managed Flink applications, the ECS services, the SFTP users."""
    return (*flink_grants(), *service_grants(), *sftp_grants(), *backup_grants(), *replication_grants())


def flink_grants() -> tuple[Grant, ...]:
    """Every grant of the Managed Flink applications' roles (topics by exact name, from config.topics())."""
    domains = tuple(key_domains())
    g = base_groups()
    names = [t.name for t in topics(g)]
    raw = tuple(t for t in names if t.startswith("raw."))
    partner = tuple(t for t in names if t.startswith(g["curated"]["partner.topic.prefix"]))
    return (
        # ingest: reads landed files and reference data, protects every domain, writes lake, archive, audit.
        Grant("ingest", ENCRYPT + DECRYPT, "key", (*domains, "warehouse", "archive", "ledgers")),
        Grant("ingest", DECRYPT, "key", ("landing", "artifacts", "credentials")),
        Grant("ingest", S3_READ, "bucket", ("landing", "reference", "artifacts")),
        Grant("ingest", S3_READ + S3_WRITE + S3_DELETE, "bucket", ("warehouse",)),
        Grant("ingest", S3_READ + S3_WRITE, "bucket", ("archive",)),
        Grant("ingest", AUDIT, "table", ("audit",)),
        Grant("ingest", GLUE, "glue"),
        Grant("ingest", SECRET_READ, "secret", ("phi/token-keys",)),
        # the operational store (Aurora): the writer login's secret only (the reader's and the admin's are not its).
        Grant("ingest", SECRET_READ, "secret", ("operational/ops_writer",)),
        Grant("ingest", MSK_PRODUCE, "msk-cluster"),
        Grant("ingest", MSK_READ, "msk-topic", raw),
        Grant("ingest", MSK_WRITE, "msk-topic", (g["kafka"]["dlq.topic"], g["curated"]["snowflake.topic"], *partner)),
        Grant("ingest", MSK_GROUPS, "msk-group", ("medistream-ingest",)),
        Grant("ingest", MSK_TXN, "msk-txn", ("medistream-ingest",)),
        # partner delivery: opens only the domains its partners' contracts reveal; keeps the delivery ledger.
        Grant("partner_delivery", DECRYPT, "key", (*partner_domains(), "artifacts", "credentials")),
        Grant("partner_delivery", ENCRYPT + DECRYPT, "key", ("ledgers",)),
        Grant("partner_delivery", S3_READ, "bucket", ("artifacts",)),
        Grant("partner_delivery", LEDGER, "table", ("partners",)),
        Grant("partner_delivery", AUDIT, "table", ("audit",)),
        Grant("partner_delivery", SECRET_READ, "secret", ("phi/token-keys", "partners/")),
        Grant("partner_delivery", MSK_PRODUCE, "msk-cluster"),
        Grant("partner_delivery", MSK_READ, "msk-topic", partner),
        Grant("partner_delivery", MSK_WRITE, "msk-topic", (g["partners"]["dlq.topic"],)),
        Grant("partner_delivery", MSK_GROUPS, "msk-group", ("medistream-partner-delivery",)),
        # both: Managed Flink's own needs (its log group, network interfaces in the VPC).
        *(Grant(job, LOGS, "log-group") for job in ("ingest", "partner_delivery")),
        *(Grant(job, VPC_DESCRIBE, "vpc-describe") for job in ("ingest", "partner_delivery")),
        *(Grant(job, VPC_ENI, "vpc-eni") for job in ("ingest", "partner_delivery")),
    )


def service_grants() -> tuple[Grant, ...]:
    """The ECS services' task roles and their execution role: each reads only its own secrets and topics."""
    g = base_groups()
    rest = tuple(f"raw.{f}" for f in feeds_with("rest"))
    cursor = g["rest_pull"]["cursor.topic"]
    return (
        # the REST ingestion API: checks a feed's key digest, records receipts, writes raw.<rest feed>.
        Grant("ingest_api", DECRYPT, "key", ("credentials",)),
        Grant("ingest_api", ENCRYPT + DECRYPT, "key", ("ledgers",)),
        Grant("ingest_api", SECRET_READ, "secret", ("ingest-api/keys",)),
        Grant("ingest_api", LEDGER, "table", ("ingest_api",)),
        Grant("ingest_api", MSK_PRODUCE, "msk-cluster"),
        Grant("ingest_api", MSK_WRITE, "msk-topic", rest),
        # the REST puller: partner credentials, raw.<rest feed> and its cursors in one transaction per page.
        Grant("rest_pull", DECRYPT, "key", ("credentials",)),
        Grant("rest_pull", SECRET_READ, "secret", ("feeds/",)),
        Grant("rest_pull", MSK_PRODUCE, "msk-cluster"),
        Grant("rest_pull", MSK_WRITE, "msk-topic", rest),
        Grant("rest_pull", MSK_READ + MSK_WRITE, "msk-topic", (cursor,)),
        Grant("rest_pull", MSK_GROUPS, "msk-group", (g["rest_pull"]["transactional.id.prefix"],)),
        Grant("rest_pull", MSK_TXN, "msk-txn", (g["rest_pull"]["transactional.id.prefix"],)),
        # the SFTP puller: partner credentials, files into the landing bucket (feeds and quarantine), its ledger.
        Grant("sftp_pull", DECRYPT, "key", ("credentials",)),
        Grant("sftp_pull", ENCRYPT + DECRYPT, "key", ("landing", "ledgers")),
        Grant("sftp_pull", SECRET_READ, "secret", ("feeds/",)),
        Grant("sftp_pull", S3_READ + S3_WRITE, "bucket", ("landing",)),
        Grant("sftp_pull", LEDGER, "table", ("sftp_pull",)),
        # the Snowflake loader: its key pair, curated.snowflake under its consumer group (records stay protected).
        Grant("snowflake_load", DECRYPT, "key", ("credentials",)),
        Grant("snowflake_load", SECRET_READ, "secret", ("snowflake/private-key",)),
        Grant("snowflake_load", MSK_CONNECT, "msk-cluster"),
        Grant("snowflake_load", MSK_READ, "msk-topic", (g["curated"]["snowflake.topic"],)),
        Grant("snowflake_load", MSK_GROUPS, "msk-group", (g["snowflake"]["consumer.group.id"],)),
        # the operational store's migrations (a one-off task): the administrator's secret to run them, the logins'
        # secrets to set their passwords; nothing else (its reach to the store is the network's, 5432).
        Grant(OPERATIONAL_MIGRATE, DECRYPT, "key", ("credentials",)),
        Grant(OPERATIONAL_MIGRATE, SECRET_READ, "secret",
              tuple(f"operational/{login}" for login in (OPERATIONAL_ADMIN, *OPERATIONAL_ROLES))),
        # every task: its image from the environment's repository, its log stream.
        Grant(TASK_EXECUTION, ECR_AUTH, "ecr-auth"),
        Grant(TASK_EXECUTION, ECR_PULL, "ecr-repo"),
        Grant(TASK_EXECUTION, SERVICE_LOGS, "service-log-groups"),
    )


def sftp_grants() -> tuple[Grant, ...]:
    """One Transfer Family user per landing feed: its own landing prefix, nothing else (no delete, no other feed)."""
    return tuple(grant for feed in feeds_with("landing") for grant in (
        Grant(sftp_role(feed), ENCRYPT + DECRYPT, "key", ("landing",)),
        Grant(sftp_role(feed), SFTP_OBJECTS, "feed-prefix", (feed,))))


def backup_grants() -> tuple[Grant, ...]:
    """AWS Backup's role: it copies the tables (ledgers key) and the operational store's cluster (its own key);
    its IAM side is AWS's managed policy."""
    return (Grant(BACKUP_ROLE, ENCRYPT + DECRYPT, "key", ("ledgers", "operational")),)


def replication_grants() -> tuple[Grant, ...]:
    """S3's role replicating the archive to the replica region: it reads the archive (its key opens the versions)
    and writes the replica bucket (the replica key, in the replica stack's key policy, encrypts them)."""
    return (Grant(ARCHIVE_REPLICATION_ROLE, DECRYPT, "key", ("archive",)),
            Grant(ARCHIVE_REPLICATION_ROLE, ENCRYPT, "key", (ARCHIVE_REPLICA,)),
            Grant(ARCHIVE_REPLICATION_ROLE, REPLICATION_SOURCE, "bucket", ("archive",)),
            Grant(ARCHIVE_REPLICATION_ROLE, REPLICATION_DESTINATION, "bucket", (ARCHIVE_REPLICA,)))


def key_users(key: str, level: tuple[str, ...]) -> list[str]:
    """The roles a key's policy names with exactly these actions."""
    return sorted({g.role for g in grants() if g.kind == "key" and key in g.names and g.actions == level})

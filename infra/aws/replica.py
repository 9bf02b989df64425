"""The archive's second region: a replica bucket under Object Lock (compliance, seven years) with a key of its own.

A stack of its own, deployed into the replica region (`medistream-<env>-archive-replica`, its region the app's
`replica_region`), after the identity stack (its key policy names the replication role) and before the storage
stack (S3 refuses a replication rule whose destination bucket does not exist yet). The primary archive's
replication rule (storage stack, `replication_configuration`) sends every new object version, SSE-KMS objects
included, to this bucket re-encrypted with this region's key, in Glacier Deep Archive (a disaster-recovery copy:
restores take hours); each replica keeps its source's retention date, and the bucket's own default retention
covers anything written here otherwise. Delete markers are not replicated. Objects written before the rule
existed need an S3 Batch Replication job (README). Retained on delete, like the archive.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.aws.access import ENCRYPT, key_users
from infra.aws.acknowledgements import ACCESS_LOGS_SSE_S3, REPLICA_IS_THE_COPY, checkov_skip, for_packs
from infra.aws.config import ARCHIVE_REPLICA, Names
from infra.aws.keys import ADMIN_ACTIONS
from infra.aws.storage import deny_other_encryption, replica_key_alias
from infra.storage_policy import ARCHIVE


class ArchiveReplicaStack(Stack):
    """The replica region's key, access-log bucket and the archive's replica bucket."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        users = [iam.ArnPrincipal(f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/{names.role(u)}")
                 for u in key_users(ARCHIVE_REPLICA, ENCRYPT)]
        statements = [
            iam.PolicyStatement(sid="AccountAdministersNeverUses", principals=[iam.AccountRootPrincipal()],
                                actions=ADMIN_ACTIONS, resources=["*"]),
            iam.PolicyStatement(sid="ReplicationEncryptsReplicas", principals=users, actions=sorted(set(ENCRYPT)),
                                resources=["*"], conditions={"StringEquals": {
                                    "kms:ViaService": f"s3.{Aws.REGION}.amazonaws.com"}})]
        self.key = kms.Key(self, "replica-key", alias=replica_key_alias(names), enable_key_rotation=True,
                           rotation_period=Duration.days(365), removal_policy=RemovalPolicy.RETAIN,
                           pending_window=Duration.days(30), policy=iam.PolicyDocument(statements=statements),
                           description=f"medistream {names.env}: the archive's replica")
        self.access_logs = s3.Bucket(
            self, "replica-access-logs", bucket_name=f"{names.buckets['access_logs']}-replica",
            encryption=s3.BucketEncryption.S3_MANAGED, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            versioned=True, enforce_ssl=True, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(id="access-logs-expire", expiration=Duration.days(ARCHIVE.retention_days),
                                              noncurrent_version_expiration=Duration.days(30))])
        self.bucket = s3.Bucket(
            self, "replica-bucket", bucket_name=names.buckets[ARCHIVE_REPLICA], encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key, bucket_key_enabled=True, enforce_ssl=True, versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="archive_replica/", object_lock_enabled=True,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(Duration.days(ARCHIVE.retention_days)),
            lifecycle_rules=[s3.LifecycleRule(
                id="replica-expire", expiration=Duration.days(ARCHIVE.retention_days + 1),
                noncurrent_version_expiration=Duration.days(ARCHIVE.noncurrent_expire_days),
                abort_incomplete_multipart_upload_after=Duration.days(7))])
        deny_other_encryption(self.bucket, self.key)
        for bucket in (self.bucket, self.access_logs):
            for_packs(bucket, "S3BucketReplicationEnabled", REPLICA_IS_THE_COPY)
        for_packs(self.access_logs, "S3DefaultEncryptionKMS", ACCESS_LOGS_SSE_S3)
        checkov_skip(self.access_logs.node.default_child, "CKV_AWS_18",  # type: ignore[arg-type]
                     "the replica region's access-log bucket itself: logging it into itself would log its own "
                     "log deliveries")

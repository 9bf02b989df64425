"""The long-lived data stores: buckets, the Glue database of the Iceberg tables, the DynamoDB ledgers, the image
repository of the services.

Every bucket: public access blocked, versioned, TLS only, SSE-KMS with its own key (config.BUCKET_KEYS)
and a policy refusing an upload that asks for another encryption or another key, server access logs
to the access-log bucket. The archive: Object Lock in compliance mode for seven years and hot for 30
days, then Glacier Instant Retrieval (infra/storage_policy.py, the policy the local stack applies too); the
audit bucket likewise, and it admits this environment's CloudTrail trail (by ARN) under cloudtrail/.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, CfnRule, CfnRuleAssertion, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.aws.acknowledgements import ACCESS_LOGS_SSE_S3, NOT_REPLICATED, checkov_skip, for_packs
from infra.aws.backup import add_backup
from infra.aws.config import (
    ARCHIVE_REPLICA,
    ARCHIVE_REPLICATION_ROLE,
    BUCKET_KEYS,
    NLB_LOG_PREFIX,
    Names,
    feeds_with,
)
from infra.aws.grants import Resolver, ecr_repository, landing_prefix, role_policy
from infra.storage_policy import ARCHIVE

# Buckets under Object Lock in compliance mode for the archive's retention: the archive (raw records) and
# the audit bucket (CloudTrail's log files: their digest files prove them unchanged, the lock keeps them).
LOCKED = ("archive", "audit")
CLOUDTRAIL_PREFIX = "cloudtrail"


REPLICA_STORAGE_CLASS = "DEEP_ARCHIVE"


def replica_key_alias(names: Names) -> str:
    """The replica key's alias (in the replica region): what the primary's replication rule names."""
    return names.alias(ARCHIVE_REPLICA.replace("_", "-"))


def replication_rule(stack: Stack, names: Names, replica_region: str) -> s3.CfnBucket.ReplicationConfigurationProperty:
    """The primary archive's replication configuration: every version to the replica bucket, re-encrypted with the
    replica region's key (named by its alias ARN: the key's id is made in that region), by the replication role."""
    role = f"arn:{stack.partition}:iam::{stack.account}:role/{names.role(ARCHIVE_REPLICATION_ROLE)}"
    key = f"arn:{stack.partition}:kms:{replica_region}:{stack.account}:{replica_key_alias(names)}"
    return s3.CfnBucket.ReplicationConfigurationProperty(role=role, rules=[s3.CfnBucket.ReplicationRuleProperty(
        id=f"archive-to-{replica_region}", status="Enabled", priority=1,
        filter=s3.CfnBucket.ReplicationRuleFilterProperty(prefix=""),
        delete_marker_replication=s3.CfnBucket.DeleteMarkerReplicationProperty(status="Disabled"),
        source_selection_criteria=s3.CfnBucket.SourceSelectionCriteriaProperty(
            sse_kms_encrypted_objects=s3.CfnBucket.SseKmsEncryptedObjectsProperty(status="Enabled")),
        destination=s3.CfnBucket.ReplicationDestinationProperty(
            bucket=f"arn:{stack.partition}:s3:::{names.buckets[ARCHIVE_REPLICA]}",
            storage_class=REPLICA_STORAGE_CLASS,
            encryption_configuration=s3.CfnBucket.EncryptionConfigurationProperty(replica_kms_key_id=key),
            metrics=s3.CfnBucket.MetricsProperty(status="Enabled")))])


def feed_metrics_id(feed: str) -> str:
    """The landing bucket's request-metrics filter of one feed's prefix (S3 ids: at most 64 characters)."""
    return f"feed-{feed}"[:64]


def _archive_rules() -> list[s3.LifecycleRule]:
    """The archive's lifecycle, from ARCHIVE: hot, cold, expired after retention."""
    return [s3.LifecycleRule(id="archive-hot-cold-expire", transitions=[s3.Transition(
        storage_class=s3.StorageClass(ARCHIVE.cold_storage_class), transition_after=Duration.days(ARCHIVE.hot_days))],
        expiration=Duration.days(ARCHIVE.retention_days + 1),
        noncurrent_version_expiration=Duration.days(ARCHIVE.noncurrent_expire_days),
        abort_incomplete_multipart_upload_after=Duration.days(7))]


class StorageStack(Stack):
    """Buckets, the Glue database and the DynamoDB tables of one environment."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, keys: dict[str, kms.IKey],
                 replica_region: str, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.access_logs = s3.Bucket(
            self, "access_logs-bucket", bucket_name=names.buckets["access_logs"],
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, versioned=True, enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(id="access-logs-expire", expiration=Duration.days(ARCHIVE.retention_days),
                                              noncurrent_version_expiration=Duration.days(30))])
        self.buckets: dict[str, s3.Bucket] = {"access_logs": self.access_logs}
        self._nlb_log_delivery(names)
        for role, key_name in BUCKET_KEYS.items():
            if key_name is None:
                continue
            locked = role in LOCKED  # the archive and the audit trail: write once, kept seven years
            bucket = s3.Bucket(
                self, f"{role}-bucket", bucket_name=names.buckets[role], encryption=s3.BucketEncryption.KMS,
                encryption_key=keys[key_name], bucket_key_enabled=True, enforce_ssl=True, versioned=True,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                server_access_logs_bucket=self.access_logs, server_access_logs_prefix=f"{role}/",
                object_lock_enabled=locked or None,
                object_lock_default_retention=(s3.ObjectLockRetention.compliance(Duration.days(ARCHIVE.retention_days))
                                               if locked else None),
                lifecycle_rules=_archive_rules() if locked else None,
                # Request metrics per landing feed's prefix: the file feeds' FeedSilent alarms read PutRequests.
                metrics=[s3.BucketMetrics(id=feed_metrics_id(feed), prefix=f"{landing_prefix()}{feed}/")
                         for feed in feeds_with("landing")] if role == "landing" else None)
            deny_other_encryption(bucket, keys[key_name])
            if role == "audit":
                self._cloudtrail_delivery(bucket, names)
            self.buckets[role] = bucket
        self.glue_database = glue.CfnDatabase(
            self, "lake", catalog_id=self.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=names.glue_database, description=f"medistream {names.env}: the Iceberg tables",
                location_uri=f"s3://{names.buckets['warehouse']}/"))
        self.tables = {table.group: dynamodb.Table(
            self, f"{table.group}-table", table_name=table.name,
            partition_key=dynamodb.Attribute(name=table.hash_key[0], type=dynamodb.AttributeType(
                {"S": "STRING", "N": "NUMBER"}[table.hash_key[1]])),
            sort_key=dynamodb.Attribute(name=table.range_key[0], type=dynamodb.AttributeType(
                {"S": "STRING", "N": "NUMBER"}[table.range_key[1]])),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST, point_in_time_recovery_specification=dynamodb.
            PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED, encryption_key=keys["ledgers"],
            deletion_protection=True, removal_policy=RemovalPolicy.RETAIN) for table in names.tables}
        # The services' image (the repository's Dockerfile): immutable tags, scanned on push, under the artifacts
        # key, retained. Here, not in the doors stack, so that the image is pushed before the services need it.
        self.repository = ecr.Repository(
            self, "services-repository", repository_name=ecr_repository(names), image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE, encryption=ecr.RepositoryEncryption.KMS,
            encryption_key=keys["artifacts"], removal_policy=RemovalPolicy.RETAIN)
        CfnOutput(self, "ServicesRepository", value=self.repository.repository_uri,
                  description="push the services' image here (docker tag/push <uri>:<ServiceImageTag>)")
        CfnOutput(self, "ArtifactBucket", value=self.buckets["artifacts"].bucket_name,
                  description="MEDISTREAM_ARTIFACT_BUCKET for medistream jobs (zips go under artifacts/)")
        # The archive replicates to the replica region (infra/aws/replica.py), by S3's role in the identity stack with
        # this stack's policy from the access rows; the other buckets say why they need no second region.
        self.replication_policy = role_policy(Resolver(self, names), ARCHIVE_REPLICATION_ROLE, iam.Role.from_role_name(
            self, "replication-role", names.role(ARCHIVE_REPLICATION_ROLE), mutable=False))
        archive = self.buckets["archive"].node.default_child
        archive.replication_configuration = replication_rule(self, names, replica_region)  # type: ignore[union-attr]
        archive.node.add_dependency(self.replication_policy)  # type: ignore[union-attr]
        CfnRule(self, "ReplicaInAnotherRegion", assertions=[CfnRuleAssertion(
            assert_=Fn.condition_not(Fn.condition_equals(Aws.REGION, replica_region)),
            assert_description=f"the archive's replica region ({replica_region}) must not be this stack's region: "
                               "same-region replication is no disaster recovery")])
        for role, bucket in self.buckets.items():
            if role != "archive":
                for_packs(bucket, "S3BucketReplicationEnabled", NOT_REPLICATED[role])
        for_packs(self.access_logs, "S3DefaultEncryptionKMS", ACCESS_LOGS_SSE_S3)
        checkov_skip(self.access_logs.node.default_child, "CKV_AWS_18",  # type: ignore[arg-type]
                     "the access-log bucket itself: logging it into itself would log its own log deliveries")
        self.backup_plan = add_backup(self, names, list(self.tables.values()), keys["ledgers"])

    def _cloudtrail_delivery(self, bucket: s3.Bucket, names: Names) -> None:
        """Admit this environment's trail (only it, by its ARN) to check the bucket and write under cloudtrail/."""
        trail = {"StringEquals": {"aws:SourceArn": f"arn:{self.partition}:cloudtrail:{self.region}:{self.account}:"
                                                   f"trail/{names.trail}"}}
        service = iam.ServicePrincipal("cloudtrail.amazonaws.com")
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudTrailChecksTheBucket", principals=[service], actions=["s3:GetBucketAcl"],
            resources=[bucket.bucket_arn], conditions=trail))
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudTrailWritesItsLogFiles", principals=[service], actions=["s3:PutObject"],
            resources=[bucket.arn_for_objects(f"{CLOUDTRAIL_PREFIX}/AWSLogs/{self.account}/*")],
            conditions={"StringEquals": {**trail["StringEquals"], "s3:x-amz-acl": "bucket-owner-full-control"}}))

    def _nlb_log_delivery(self, names: Names) -> None:
        """Admit the log delivery service, for this account's load balancers, to write under nlb/ (the ingest API's
        network load balancer, infra/aws/api.py) of the access-log bucket."""
        service = iam.ServicePrincipal("delivery.logs.amazonaws.com")
        ours = {"StringEquals": {"aws:SourceAccount": self.account},
                "ArnLike": {"aws:SourceArn": f"arn:{self.partition}:logs:{self.region}:{self.account}:*"}}
        self.access_logs.add_to_resource_policy(iam.PolicyStatement(
            sid="NlbAccessLogsWrite", principals=[service], actions=["s3:PutObject"],
            resources=[self.access_logs.arn_for_objects(f"{NLB_LOG_PREFIX}/AWSLogs/{self.account}/*")],
            conditions={**ours, "StringEquals": {**ours["StringEquals"], "s3:x-amz-acl": "bucket-owner-full-control"}}))
        self.access_logs.add_to_resource_policy(iam.PolicyStatement(
            sid="NlbAccessLogsCheckTheBucket", principals=[service], actions=["s3:GetBucketAcl"],
            resources=[self.access_logs.bucket_arn], conditions=ours))


def deny_other_encryption(bucket: s3.Bucket, key: kms.IKey) -> None:
    """Refuse a PutObject that asks for another encryption than SSE-KMS or another key than the bucket's."""
    objects = bucket.arn_for_objects("*")
    bucket.add_to_resource_policy(iam.PolicyStatement(
        sid="DenyOtherEncryption", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
        actions=["s3:PutObject"], resources=[objects],
        conditions={"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}}))
    bucket.add_to_resource_policy(iam.PolicyStatement(
        sid="DenyOtherKey", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
        actions=["s3:PutObject"], resources=[objects],
        conditions={"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key.key_arn}}))

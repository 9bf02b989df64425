"""The audit stack: a CloudTrail trail into the locked audit bucket, and alerts on changes to the pipeline's guards.

The trail: every region, global service events, log file validation (signed hourly digests), encrypted
with the audit key, delivered under `cloudtrail/` of the audit bucket (Object Lock, compliance mode,
seven years: infra/aws/storage.py) and to a log group encrypted with the logs key. S3 data events on
the PHI buckets (landing, warehouse, archive): every read and write of an object is recorded.

Changes to what guards the data raise a page, twice over: an EventBridge rule per change class (KMS
key policy and state, IAM roles and policies, bucket policy and settings) on this environment's
resources, and a metric filter + CloudWatch alarm per class on the trail's log group (the alarm also
fires when the EventBridge path is what was tampered with). Both notify the `security` topic.
IAM is a global service: its events reach EventBridge in us-east-1 only, so the IAM rule fires where
the stack is deployed in us-east-1; the metric filter sees them in every region (multi-region trail).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudtrail as cloudtrail
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.aws.config import Names
from infra.aws.network import log_group
from infra.aws.storage import CLOUDTRAIL_PREFIX

# The buckets whose objects hold PHI (raw landed files, the lake, the archive): S3 data events on each.
PHI_BUCKETS = ("landing", "warehouse", "archive")
METRIC_NAMESPACE = "medistream/audit"


@dataclass(frozen=True)
class ChangeClass:
    """One kind of change to a guard: the service that records it and the calls that make it."""

    name: str
    source: str
    calls: tuple[str, ...]


CHANGES = (
    # Not CreateGrant/RevokeGrant: AWS services (MSK volumes, ECR, Backup jobs) create grants on our keys in
    # normal operation, and a page for each would drown the ones that matter.
    ChangeClass("KeyPolicyChanged", "kms.amazonaws.com",
                ("PutKeyPolicy", "DisableKey", "ScheduleKeyDeletion", "DisableKeyRotation", "UpdateAlias",
                 "DeleteAlias")),
    ChangeClass("IamChanged", "iam.amazonaws.com",
                ("PutRolePolicy", "DeleteRolePolicy", "AttachRolePolicy", "DetachRolePolicy", "UpdateAssumeRolePolicy",
                 "CreatePolicyVersion", "SetDefaultPolicyVersion", "DeletePolicy", "PutRolePermissionsBoundary",
                 "DeleteRolePermissionsBoundary", "CreateRole", "DeleteRole")),
    ChangeClass("BucketPolicyChanged", "s3.amazonaws.com",
                ("PutBucketPolicy", "DeleteBucketPolicy", "PutBucketAcl", "PutBucketPublicAccessBlock",
                 "DeleteBucketPublicAccessBlock", "PutBucketEncryption", "DeleteBucketEncryption",
                 "PutBucketVersioning", "PutBucketObjectLockConfiguration", "PutBucketLogging",
                 "PutBucketOwnershipControls")),
)


def metric_filter_pattern(change: ChangeClass) -> str:
    """The CloudWatch Logs filter pattern matching the class's calls in CloudTrail records."""
    calls = " || ".join(f'($.eventName = "{call}")' for call in change.calls)
    return f'{{ ($.eventSource = "{change.source}") && ({calls}) }}'


class AuditStack(Stack):
    """The trail, its log group and role, and the alerts on key, IAM and bucket-policy changes."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, audit_key: kms.IKey,
                 logs_key: kms.IKey, key_arns: list[str], **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        group = log_group(self, "trail-log-group", f"/medistream/{names.env}/cloudtrail", logs_key)
        role = iam.Role(self, "trail-logs-role", role_name=f"{names.prefix}-cloudtrail-logs",
                        assumed_by=iam.ServicePrincipal("cloudtrail.amazonaws.com", conditions={
                            "StringEquals": {"aws:SourceAccount": self.account}}))
        policy = iam.ManagedPolicy(self, "trail-logs-policy", managed_policy_name=f"{names.prefix}-cloudtrail-logs",
                                   roles=[role], statements=[iam.PolicyStatement(
                                       actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                       resources=[group.log_group_arn])])
        self.trail = cloudtrail.CfnTrail(
            self, "trail", trail_name=names.trail, is_logging=True, s3_bucket_name=names.buckets["audit"],
            s3_key_prefix=CLOUDTRAIL_PREFIX, kms_key_id=audit_key.key_arn, enable_log_file_validation=True,
            is_multi_region_trail=True, include_global_service_events=True,
            cloud_watch_logs_log_group_arn=group.log_group_arn, cloud_watch_logs_role_arn=role.role_arn,
            event_selectors=[cloudtrail.CfnTrail.EventSelectorProperty(
                read_write_type="All", include_management_events=True,
                data_resources=[cloudtrail.CfnTrail.DataResourceProperty(
                    type="AWS::S3::Object", values=[f"arn:{self.partition}:s3:::{names.buckets[b]}/"
                                                    for b in PHI_BUCKETS])])])
        self.trail.node.add_dependency(policy)
        self.topic = sns.Topic(self, "security-topic", topic_name=f"{names.prefix}-security", master_key=logs_key,
                               enforce_ssl=True)
        self.rules = self._rules(names, key_arns)
        self.alarms = self._alarms(names, group)

    def _rules(self, names: Names, key_arns: list[str]) -> dict[str, events.Rule]:
        """One EventBridge rule per change class, on this environment's keys, roles and policies, buckets."""
        on_ours: dict[str, dict[str, object]] = {
            "kms.amazonaws.com": {"resources": {"ARN": key_arns}},
            "iam.amazonaws.com": {"$or": [
                {"requestParameters": {"roleName": [{"prefix": names.prefix}]}},
                {"requestParameters": {"policyArn": [{"prefix": f"arn:{self.partition}:iam::{self.account}:policy/"
                                                                f"{names.prefix}"}]}}]},
            "s3.amazonaws.com": {"requestParameters": {"bucketName": sorted(names.buckets.values())}},
        }
        rules = {}
        for change in CHANGES:
            rule = events.Rule(self, f"{change.name}-rule", rule_name=f"{names.prefix}-{change.name}",
                               description=f"{change.name}: {', '.join(change.calls)} on medistream {names.env}",
                               event_pattern=events.EventPattern(
                                   source=[f"aws.{change.source.split('.')[0]}"],
                                   detail_type=["AWS API Call via CloudTrail"],
                                   detail={"eventSource": [change.source], "eventName": list(change.calls),
                                           **on_ours[change.source]}))
            rule.add_target(targets.SnsTopic(self.topic))
            rules[change.name] = rule
        return rules

    def _alarms(self, names: Names, group: logs.ILogGroup) -> dict[str, cloudwatch.Alarm]:
        """A metric filter on the trail's log group and an alarm on any match, per change class."""
        alarms = {}
        for change in CHANGES:
            metric = logs.MetricFilter(
                self, f"{change.name}-filter", log_group=group, metric_namespace=METRIC_NAMESPACE,
                metric_name=f"{change.name}-{names.env}", metric_value="1",
                filter_pattern=logs.FilterPattern.literal(metric_filter_pattern(change))).metric(
                statistic="Sum", period=Duration.minutes(5))
            alarm = cloudwatch.Alarm(
                self, f"{change.name}-alarm", alarm_name=f"{names.prefix}-{change.name}", metric=metric,
                alarm_description=f"page: {change.name} ({change.source}) recorded by the trail",
                threshold=1, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
            alarm.add_alarm_action(actions.SnsAction(self.topic))
            alarms[change.name] = alarm
        return alarms

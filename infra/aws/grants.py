"""Access rows (infra/aws/access.py) as IAM: one customer-managed policy per role, in the stack that uses the role.

Resources are named by ARN built from their names (buckets, tables, topics, secrets), never by another
stack's export, so a replaceable stack (applications, doors) never pins a long-lived one. Every ARN
with a wildcard is acknowledged for AwsSolutions-IAM5 with the reason of its kind
(acknowledgements.IAM5_REASONS): a new kind of wildcard fails the synth until it is explained.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

from infra.aws.access import Grant, grants
from infra.aws.acknowledgements import IAM5_REASONS, acknowledge, render
from infra.aws.config import Names, base_groups

_COLON = ArnFormat.COLON_RESOURCE_NAME
SERVICES_LOG_PREFIX = "services"  # /medistream/<env>/services/<service>


def landing_prefix() -> str:
    """The landing path's key prefix (`feeds/`): one folder per feed under it."""
    return base_groups()["landing"]["path"].removeprefix("s3://").split("/", 1)[1]


def ecr_repository(names: Names) -> str:
    """The ECR repository of the services' image."""
    return f"{names.prefix}/services"


class Resolver:
    """Turns access rows into ARNs in one stack."""

    def __init__(self, stack: Stack, names: Names, log_groups: Mapping[str, str] | None = None) -> None:
        self.stack, self.names, self.log_groups = stack, names, dict(log_groups or {})

    def bucket_arn(self, role: str) -> str:
        """A bucket's ARN from its name (S3 ARNs carry no region or account)."""
        return f"arn:{self.stack.partition}:s3:::{self.names.buckets[role]}"

    def statements(self, grant: Grant, role: str) -> list[iam.PolicyStatement]:
        """The IAM statements of one row (one, except a feed's landing prefix: its objects, and listing it)."""
        if grant.kind == "feed-prefix":
            bucket = self.bucket_arn("landing")
            prefixes = [f"{landing_prefix()}{feed}/" for feed in grant.names]
            return [iam.PolicyStatement(actions=sorted(grant.actions), resources=[f"{bucket}/{p}*" for p in prefixes]),
                    iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket], conditions={
                        "StringLike": {"s3:prefix": [f"{p}*" for p in prefixes] + [p for p in prefixes]}})]
        return [iam.PolicyStatement(actions=sorted(grant.actions), resources=self.resources(grant, role))]

    def resources(self, grant: Grant, role: str) -> list[str]:
        """The ARNs one grant row names."""
        n, stack = self.names, self.stack
        if grant.kind == "bucket":
            arns = [self.bucket_arn(b) for b in grant.names]
            return [arn for bucket in arns for arn in (bucket, f"{bucket}/*")]
        if grant.kind == "table":
            tables = {t.group: t.name for t in n.tables}
            return [stack.format_arn(service="dynamodb", resource="table", resource_name=tables[t])
                    for t in grant.names]
        if grant.kind == "glue":
            return [stack.format_arn(service="glue", resource="catalog"),
                    stack.format_arn(service="glue", resource="database", resource_name=n.glue_database),
                    stack.format_arn(service="glue", resource="table", resource_name=f"{n.glue_database}/*")]
        if grant.kind == "secret":
            return [stack.format_arn(service="secretsmanager", resource="secret", resource_name=f"{n.prefix}/{s}*",
                                     arn_format=_COLON) for s in grant.names]
        if grant.kind.startswith("msk-"):
            kind = {"msk-cluster": "cluster", "msk-topic": "topic", "msk-group": "group",
                    "msk-txn": "transactional-id"}[grant.kind]
            # Topics by exact name; consumer groups and transactional ids by prefix (Flink and the pullers
            # append subtask, checkpoint or feed suffixes to them).
            tails = [name if grant.kind == "msk-topic" else f"{name}*" for name in grant.names] or [""]
            return [stack.format_arn(service="kafka", resource=kind, resource_name=f"{n.msk_cluster}/*"
                                     + (f"/{tail}" if tail else "")) for tail in tails]
        if grant.kind == "log-group":
            return [self.log_groups[role]]
        if grant.kind == "service-log-groups":
            return [stack.format_arn(service="logs", resource="log-group", arn_format=_COLON,
                                     resource_name=f"/medistream/{n.env}/{SERVICES_LOG_PREFIX}/*:log-stream:*")]
        if grant.kind == "ecr-repo":
            return [stack.format_arn(service="ecr", resource="repository", resource_name=ecr_repository(n))]
        if grant.kind in ("vpc-describe", "ecr-auth"):  # no resource-level permission
            return ["*"]
        if grant.kind == "vpc-eni":  # the interfaces Managed Flink makes, in this account and region's subnets
            return [stack.format_arn(service="ec2", resource=kind, resource_name="*")
                    for kind in ("network-interface", "subnet", "security-group")]
        raise ValueError(f"access row {grant}: unknown kind {grant.kind!r}")


def role_policy(resolver: Resolver, role_name: str, role: iam.IRole) -> iam.ManagedPolicy:
    """The customer-managed policy of one role: every non-key row of it, wildcards acknowledged by kind."""
    stack, names = resolver.stack, resolver.names
    rows = [g for g in grants() if g.role == role_name and g.kind != "key"]
    statements = [(g, s) for g in rows for s in resolver.statements(g, role_name)]
    policy = iam.ManagedPolicy(stack, f"{role_name}-grants", managed_policy_name=f"{names.role(role_name)}-grants",
                               roles=[role], statements=[s for _g, s in statements])
    wildcards = {render(stack, arn): g.kind for g, s in statements for arn in s.resources if "*" in render(stack, arn)}
    for arn, kind in sorted(wildcards.items()):
        acknowledge(policy, f"AwsSolutions-IAM5[Resource::{arn}]", IAM5_REASONS[kind])
    return policy

"""Every cdk-nag finding we accept, each naming its rule, its resource and the reason.

cdk-nag 3 takes acknowledgements through CDK's own `Validations.of(construct).acknowledge(...)`, one
per finding (`AwsSolutions-IAM5[Resource::<arn>]` for each wildcard ARN). The wildcard ARNs are
rendered from the same access rows (infra/aws/access.py) that made them, so a new wildcard fails the
synth until a row of REASONS explains it.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, CfnResource, Stack, Validations
from constructs import IConstruct

PACKS = ("HIPAA.Security", "NIST.800.53.R5")
REPLICATION = ("one region in this slice: cross-region replication for disaster recovery needs the second "
               "region's keys and buckets (issue 22, later slice); versioning and, for the archive, Object Lock "
               "guard against loss meanwhile")
# Each bucket of the storage stack but the archive (which replicates to the replica region, infra/aws/replica.py): why
# it has no second region.
NOT_REPLICATED = {
    "landing": "files stay here only until the ingest job has read them: every record then lives in the archive, which "
               "is replicated to the replica region; a file lost with the region is re-sent by its sender",
    "warehouse": "the Iceberg tables are derived: they are rebuilt from the archive (replicated) through the backfill "
                 "path (decision 0024)",
    "audit": "CloudTrail's log files, under Object Lock (compliance, seven years) in this region; the trail is "
             "multi-region, and a copy in another account belongs to the organization's log-archive baseline, not "
             "this app",
    "reference": "reference data comes from the repository (schemas/) with each deploy: rebuilt from git",
    "artifacts": "the Managed Flink zips are rebuilt from a commit by `medistream package` (reproducible, signed by "
                 "the release pipeline)",
    "access_logs": "S3 request metadata of this region's buckets, no record content; kept with them",
}
REPLICA_IS_THE_COPY = ("this bucket is in the replica region: the archive's replica (or that region's access-log "
                       "bucket), the disaster-recovery copy itself; replicating it again would only copy a copy")
BACKUP_MANAGED_POLICIES = ("AWS Backup's own service-role policy for backups: AWS keeps it in step with "
                           "what each service's backup calls need; the role is assumable only by AWS "
                           "Backup for this account and opens only the ledgers key (its key policy)")
RDS_MONITORING_POLICY = ("AWS's own service-role policy for RDS enhanced monitoring: it may only create and write "
                         "the RDSOSMetrics log group's streams; the role is assumable only by RDS monitoring for "
                         "this account")
ACCESS_LOGS_SSE_S3 = ("S3 server access logging delivers only to a bucket encrypted with SSE-S3 (SSE-KMS is not "
                      "supported for the log target); the logs hold request metadata, no object content")
SFTP_SENDERS = ("the SFTP endpoint's only ingress is port 22 from the SftpSenderCidr parameter, whose allowed pattern "
                "refuses 0.0.0.0/0 and anything wider than a /8 at deploy (the senders' VPN or Direct Connect range); "
                "the rule cannot read a parameter, so it cannot tell")
SFTP_SENDER_RULES = ("AwsSolutions-EC23", "HIPAA.Security-EC2RestrictedCommonPorts", "HIPAA.Security-EC2RestrictedSSH",
                     "NIST.800.53.R5-EC2RestrictedCommonPorts", "NIST.800.53.R5-EC2RestrictedSSH")
# The ingest API's front door (infra/aws/api.py): findings by construct (api, method, stage, packs): rule and why.
_EXECUTION_LOGS = ("access logs are on (one JSON line per request, no body); execution logs need the account-wide "
                   "API Gateway CloudWatch role (one per account and region, shared by dev and prod: the account "
                   "baseline's, not this app's) and at INFO they can carry request bodies, which hold PHI")
_CACHE = "POSTs of records are never cached; a response cache would only hold PHI-bearing answers for nothing"
_CLIENT_CERT = ("the backend is an internal NLB reached only through the VPC link, over TLS checked against the "
                "backend name's ACM certificate; a network load balancer's TLS listener does not verify client "
                "certificates, so one presented by API Gateway would be checked by nothing")
API_REASONS: dict[str, list[tuple[str, str]]] = {
    "api": [("AwsSolutions-APIG2", "each record is validated by the service against its feed contract's schema, "
                                   "with a per-record answer; a model here would duplicate schemas/ and drift")],
    "method": [("AwsSolutions-APIG4", "every request carries the feed's API key, checked by the service against the "
                                   "digests in Secrets Manager (a key for feed A never opens feed B); senders have no "
                                   "AWS identities for IAM or Cognito"),
            ("AwsSolutions-COG4", "as APIG4: per-feed API keys checked by the service, no Cognito user pool")],
    "stage": [("AwsSolutions-APIG6", _EXECUTION_LOGS)],
    "packs": [("APIGWExecutionLoggingEnabled", _EXECUTION_LOGS), ("APIGWCacheEnabledAndEncrypted", _CACHE),
              ("APIGWSSLEnabled", _CLIENT_CERT)],
}
NAT_ROUTE = ("the subnet holds only its zone's NAT gateway (nothing else is placed there, no public address is "
             "assigned); a NAT gateway's subnet needs a default route to the internet gateway, and no connection "
             "from the internet can be opened inward through it")
DEFAULT_PORT = ("the operational store listens on PostgreSQL's port 5432: it is reachable only from the Managed Flink "
                "applications' security group in the isolated subnets, with TLS and a password or IAM token; another "
                "port would hide nothing from a client already inside that group (decision 0036)")
AURORA_INSTANCE_BACKUP = ("an Aurora instance holds no storage of its own: AWS Backup backs up Aurora by cluster (a "
                          "cluster snapshot), and this instance's cluster is in the locked vault's plan (the stack's "
                          "backup selection names the cluster, 35 days of point-in-time recovery besides)")
# The operational logins Secrets Manager does not rotate (the others: hosted rotation, infra/aws/operational.py).
ROTATION_OPERATIONAL = {
    "ops_writer": "the ingest job reads this password when its job graph is built and keeps it there (decision 0035): "
                  "a rotation it did not see would stop it at its next reconnect, and every restart from a checkpoint "
                  "reuses the old graph. Rotated with the job: a new password put and set (ALTER ROLE), then the "
                  "application upgraded from a snapshot; the path without a stored password is IAM database "
                  "authentication, on in this cluster (decision 0036)",
}
# Wildcard ARNs, by the kind of access row that makes them.
IAM5_REASONS = {
    "bucket": "objects of one named bucket: S3 grants on objects by key pattern, and the job writes keys it derives "
              "(feed, day, file)",
    "glue": "the Iceberg tables of this environment's one Glue database; the job creates them by record type",
    "secret": "Secrets Manager appends six random characters to every secret's ARN; names under this environment's "
              "prefix only",
    "msk-cluster": "an MSK ARN carries the cluster's UUID, made when the cluster is created (streaming stack); "
                   "naming clusters by this environment's name keeps the grants free of that stack's export",
    "msk-topic": "one topic by its exact name on this environment's cluster; the wildcard is the cluster's UUID, "
                 "made when the streaming stack creates the cluster",
    "msk-group": "this job's consumer group on this environment's cluster (the cluster UUID is not known at synth)",
    "msk-txn": "this job's transactional ids (Flink appends subtask and checkpoint ids) on this environment's cluster",
    "vpc-describe": "EC2 Describe* calls Managed Flink makes to attach to the VPC take no resource-level permission",
    "vpc-eni": "the network interfaces Managed Flink creates in this account and region (their ids are made at "
               "start); subnets and security groups they attach to",
    "feed-prefix": "objects under one feed's own landing prefix (feeds/<feed>/): the sender names its files",
    "ecr-auth": "ecr:GetAuthorizationToken takes no resource-level permission (it returns a registry token)",
    "service-log-groups": "the log streams the ECS tasks create (named by task id at start) in this environment's "
                          "service log groups",
}


def checkov_skip(resource: CfnResource, check: str, comment: str) -> None:
    """A checkov check skipped on one resource, justified in the template metadata (checkov reads it there)."""
    metadata = resource.get_metadata("checkov") or {"skip": []}
    metadata["skip"].append({"id": check, "comment": comment})
    resource.add_metadata("checkov", metadata)


def render(stack: Stack, value: str) -> str:
    """A token-bearing string as cdk-nag prints it: pseudo parameters as <AWS::Name>."""
    resolved: Any = stack.resolve(value)
    if isinstance(resolved, str):
        return resolved
    if "Fn::Join" not in resolved:  # an attribute of a resource (Fn::GetAtt): no wildcard of ours
        return str(resolved)
    parts = resolved["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in parts)


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """One acknowledged finding on one construct."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def for_packs(scope: IConstruct, rule: str, reason: str) -> None:
    """The same rule of the HIPAA and NIST packs (they share their rule names)."""
    for pack in PACKS:
        acknowledge(scope, f"{pack}-{rule}", reason)

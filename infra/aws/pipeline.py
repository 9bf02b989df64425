"""The release pipeline (issue 23, decision 0031): CodePipeline + CodeBuild, one least-privilege role per stage.

    Source (CodeStar connection) -> Gates (`medistream release --no-sign`: every gate with the tests' fast tier,
    package, SBOMs, provenance; beside it, in parallel, the tests' long tier, decision 0045) -> Sign (KMS Sign
    with the release signing key, then `medistream verify`) -> Publish (the signed set to the releases bucket)
    -> [prod: manual approval] -> Deploy (`medistream jobs upgrade`, which verifies the signature first, uploads
    the zip and updates each Managed Flink application from a snapshot)

Who may do what (each role assumable by its one service, for this account only; every grant in this file):

- source: use the one repository connection; write the pipeline's artifacts.
- gates (CodeBuild): read the source, write its output and its own log group. It cannot sign (the
  signing key names it nowhere), write releases or touch Managed Flink.
- long-tier (CodeBuild): read the source, its own log group; no output (the Gates stage passes only when it
  does too).
- sign (CodeBuild): kms:Sign with the signing key (its key policy, ECDSA_SHA_256 only); read and
  write pipeline artifacts, its log group. It cannot write releases or touch Managed Flink.
- publish: put objects under releases/ of the releases bucket, nothing else.
- deploy (CodeBuild): read the signing key's public key; put and read zips under artifacts/ of the
  releases bucket; describe, update, snapshot, stop and start this environment's two applications;
  append to the audit table. It cannot sign, create or delete applications, or pass roles.
- pipeline: start the four projects, assume the source and publish roles, its artifact bucket.

KMS use is granted in key policies only (the convention of infra/aws/keys.py): the release key (the
buckets, logs and builds of this stack) names the stage roles and, for decrypt, the Managed Flink
applications' roles (they read their zip from the releases bucket); the signing key
(ECC_NIST_P256, SIGN_VERIFY) lets only the sign role sign. The releases bucket refuses writes from
any principal but the publish and deploy roles.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, CfnParameter, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.aws.acknowledgements import ACCESS_LOGS_SSE_S3, REPLICATION, acknowledge, checkov_skip, for_packs
from infra.aws.config import FLINK_JOBS, Names

# Who assumes each role: a service, or (the source and publish actions' roles) the pipeline's own role.
STAGE_ROLES = {"pipeline": "codepipeline.amazonaws.com", "source": "pipeline", "publish": "pipeline",
               "gates": "codebuild.amazonaws.com", "long-tier": "codebuild.amazonaws.com",
               "sign": "codebuild.amazonaws.com", "deploy": "codebuild.amazonaws.com"}
PROJECTS = ("gates", "long-tier", "sign", "deploy")
MSF_ACTIONS = ["kinesisanalytics:DescribeApplication", "kinesisanalytics:UpdateApplication",
               "kinesisanalytics:StartApplication", "kinesisanalytics:StopApplication",
               "kinesisanalytics:CreateApplicationSnapshot", "kinesisanalytics:DescribeApplicationSnapshot",
               "kinesisanalytics:ListApplicationSnapshots"]
KEY_ADMIN = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*", "kms:Revoke*",
             "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
             "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion"]
USE = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*", "kms:DescribeKey"]
SETUP = "./medistream setup"
# What `medistream verify` and a refused deploy print (tools/attest.py, tools/job_backend_msf.py, tools/deploy.py).
REFUSAL_TERMS = ("REFUSED", "refused, nothing")
KEY_CHANGES = ["PutKeyPolicy", "CreateGrant", "RevokeGrant", "RetireGrant", "DisableKey", "EnableKey",
               "ScheduleKeyDeletion", "CancelKeyDeletion", "CreateAlias", "UpdateAlias", "DeleteAlias"]
BUCKET_WRITES = ["PutObject", "CopyObject", "CompleteMultipartUpload", "DeleteObject", "DeleteObjects",
                 "PutBucketPolicy", "DeleteBucketPolicy", "PutBucketVersioning", "PutObjectAcl"]
ASYMMETRIC_ROTATION = ("KMS rotates symmetric keys only; an ECC_NIST_P256 signing key is replaced by a new key and "
                       "alias (verification of older releases keeps the old public key), see decision 0031")
# Wildcard ARNs in the stage policies, by how they end, and why each is needed.
WILDCARD_REASONS = {
    ":log-stream:*": "CodeBuild names each build's log stream by build id at start: streams of this project's own "
                     "log group only",
    "/artifacts/*": "the zips `medistream jobs` uploads under artifacts/ of the releases bucket, named by version",
    "/releases/*": "the signed set of each pipeline execution, under releases/<execution id>/",
    ".Arn>/*": "the pipeline names each artifact object by execution at run time, in its own artifact bucket",
}
PIPELINE_SOURCE = ("the project's source type is CODEPIPELINE: it receives the source artifact from the pipeline, "
                   "whose source action uses a CodeStar connection (an OAuth app); the project holds no repository "
                   "URL or credential")


def _build_spec(commands: list[str], artifacts: list[str] | None = None) -> codebuild.BuildSpec:
    spec: dict[str, Any] = {"version": "0.2", "phases": {"install": {"commands": [SETUP]},
                                                        "build": {"commands": commands}}}
    if artifacts:
        spec["artifacts"] = {"files": artifacts}
    return codebuild.BuildSpec.from_object(spec)


class PipelineStack(Stack):
    """The release pipeline of one environment: its keys, buckets, projects, roles and the pipeline."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        env, prefix = names.env, names.prefix
        connection = CfnParameter(self, "RepositoryConnectionArn", type="String",
                                  allowed_pattern=r"arn:aws[a-z-]*:(codestar-connections|codeconnections):.+",
                                  description="The CodeStar/CodeConnections connection to the repository")
        repository = CfnParameter(self, "Repository", type="String", allowed_pattern=r"[\w.-]+/[\w.-]+",
                                  description="owner/name of the repository")
        branch = CfnParameter(self, "Branch", type="String", default="main")
        self.roles: dict[str, iam.Role] = {}
        for stage, service in STAGE_ROLES.items():
            principal: iam.IPrincipal = self.roles["pipeline"] if service == "pipeline" else iam.ServicePrincipal(
                service, conditions={"StringEquals": {"aws:SourceAccount": self.account}})
            self.roles[stage] = iam.Role(self, f"{stage}-role", role_name=f"{prefix}-release-{stage}",
                                         description=f"release pipeline: {stage}", assumed_by=principal)
        # Every grant is written below: the constructs' own automatic grants (which would put KMS use and
        # broad log rights in IAM policies) are dropped.
        fixed = {stage: role.without_policy_updates() for stage, role in self.roles.items()}
        application_roles: list[iam.IPrincipal] = [
            iam.ArnPrincipal(f"arn:{self.partition}:iam::{self.account}:role/{names.role(job)}")
            for job in FLINK_JOBS]
        self.release_key = self._release_key(names, application_roles)
        self.signing_key = kms.Key(
            self, "signing-key", alias=names.alias("release-signing"), key_spec=kms.KeySpec.ECC_NIST_P256,
            key_usage=kms.KeyUsage.SIGN_VERIFY, description=f"medistream {env}: release signing (ECDSA P-256)",
            removal_policy=RemovalPolicy.RETAIN, pending_window=Duration.days(30),
            policy=iam.PolicyDocument(statements=[
                iam.PolicyStatement(sid="AccountAdministersNeverSigns", principals=[iam.AccountRootPrincipal()],
                                    actions=KEY_ADMIN, resources=["*"]),
                iam.PolicyStatement(sid="OnlyTheSignStageSigns", principals=[self.roles["sign"]],
                                    actions=["kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"], resources=["*"],
                                    conditions={"StringEquals": {"kms:SigningAlgorithm": "ECDSA_SHA_256"}}),
                iam.PolicyStatement(sid="StagesReadThePublicKey", principals=[self.roles["sign"], self.roles["deploy"]],
                                    actions=["kms:GetPublicKey", "kms:DescribeKey"], resources=["*"])]))
        for rule in ("AwsSolutions-KMS5", "HIPAA.Security-KMSBackingKeyRotationEnabled",
                     "NIST.800.53.R5-KMSBackingKeyRotationEnabled"):
            acknowledge(self.signing_key, rule, ASYMMETRIC_ROTATION)
        self.access_logs = s3.Bucket(
            self, "release-access-logs", bucket_name=f"{prefix}-release-access-logs-{self.account}",
            encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True, versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, removal_policy=RemovalPolicy.RETAIN,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED)
        for_packs(self.access_logs, "S3DefaultEncryptionKMS", ACCESS_LOGS_SSE_S3)
        acknowledge(self.access_logs, "AwsSolutions-S1", "the access-log bucket itself: logging it into itself "
                                                         "would log its own log deliveries")
        for_packs(self.access_logs, "S3BucketLoggingEnabled", "the access-log bucket itself (AwsSolutions-S1)")
        for_packs(self.access_logs, "S3BucketReplicationEnabled", REPLICATION)
        checkov_skip(self.access_logs.node.default_child, "CKV_AWS_18",  # type: ignore[arg-type]
                     "the access-log bucket itself: logging it into itself would log its own log deliveries")
        self.releases = self._bucket("releases", f"{prefix}-releases-{self.account}")
        self.artifacts = self._bucket("pipeline-artifacts", f"{prefix}-pipeline-artifacts-{self.account}")
        writers = [self.roles["publish"].role_arn, self.roles["deploy"].role_arn]
        self.releases.add_to_resource_policy(iam.PolicyStatement(
            sid="OnlyThePipelineWritesReleases", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl"],
            resources=[self.releases.arn_for_objects("*")],
            conditions={"ArnNotEquals": {"aws:PrincipalArn": writers}}))
        self.releases.add_to_resource_policy(iam.PolicyStatement(
            sid="ApplicationsReadTheirZip", principals=application_roles, actions=["s3:GetObject",
                                                                                    "s3:GetObjectVersion"],
            resources=[self.releases.arn_for_objects("artifacts/*")]))
        self.projects = {stage: self._project(names, stage, fixed[stage]) for stage in PROJECTS}
        self._grants(names, connection.value_as_string)
        self.pipeline = self._pipeline(names, fixed, connection.value_as_string, repository.value_as_string,
                                       branch.value_as_string)
        self.topic, self.rules, self.alarm = self._tamper_response(names)
        CfnOutput(self, "ReleasesBucket", value=self.releases.bucket_name,
                  description="MEDISTREAM_ARTIFACT_BUCKET of the deploy stage: signed zips under artifacts/")
        CfnOutput(self, "SigningKeyArn", value=self.signing_key.key_arn,
                  description="MEDISTREAM_SIGNING_KEY: the key `medistream verify --environment " + env + "` trusts")

    def _tamper_response(self, names: Names) -> tuple[sns.Topic, dict[str, events.Rule], cloudwatch.Alarm]:
        """The release's security topic, and what goes to it (docs/release-incident-runbook.md says what to do).

        - `signing-key-changed`: any change to the signing or release key (policy, grants, state, deletion,
          aliases), from CloudTrail's management events.
        - `releases-written-outside-pipeline`: a write to the releases bucket or its policy by anyone but the
          publish and deploy roles (the bucket policy refuses such an object write; the attempt still shows).
          Object writes are CloudTrail data events: they reach EventBridge only while a trail logs data events
          for this bucket (the audit stack's trail logs the PHI buckets'); bucket-policy changes always do.
        - `unverified-artifact` alarm: a deploy or sign stage refused a zip (`REFUSED`, `refused, nothing ...`
          in its build log): someone tried to ship an unsigned, re-signed or altered artifact.
        """
        topic = sns.Topic(self, "release-security-topic", topic_name=f"{names.prefix}-release-security",
                          master_key=self.release_key, enforce_ssl=True)
        on_keys = events.EventPattern(
            source=["aws.kms"], detail_type=["AWS API Call via CloudTrail"],
            detail={"eventSource": ["kms.amazonaws.com"], "eventName": KEY_CHANGES,
                    "resources": {"ARN": [self.signing_key.key_arn, self.release_key.key_arn]}})
        outsiders = [self.roles["publish"].role_arn, self.roles["deploy"].role_arn]
        on_releases = events.EventPattern(
            source=["aws.s3"], detail_type=["AWS API Call via CloudTrail"],
            detail={"eventSource": ["s3.amazonaws.com"], "eventName": BUCKET_WRITES,
                    "requestParameters": {"bucketName": [self.releases.bucket_name]},
                    "userIdentity": {"sessionContext": {"sessionIssuer": {"arn": [{"anything-but": outsiders}]}}}})
        rules = {}
        for name, pattern, what in (("signing-key-changed", on_keys, "a change to the release keys"),
                                    ("releases-written-outside-pipeline", on_releases,
                                     "a write to the releases bucket outside the pipeline's roles")):
            rule = events.Rule(self, f"{name}-rule", rule_name=f"{names.prefix}-{name}",
                               description=f"medistream {names.env}: {what}", event_pattern=pattern)
            rule.add_target(targets.SnsTopic(topic))
            rules[name] = rule
        for stage in ("sign", "deploy"):  # both stages count into one metric
            logs.MetricFilter(self, f"{stage}-refusals", log_group=self.log_groups[stage],
                              metric_namespace="medistream/release", metric_name="UnverifiedArtifactRefused",
                              metric_value="1", filter_pattern=logs.FilterPattern.any_term(*REFUSAL_TERMS))
        metric = cloudwatch.Metric(namespace="medistream/release", metric_name="UnverifiedArtifactRefused",
                                   statistic="Sum", period=Duration.minutes(5))
        alarm = cloudwatch.Alarm(
            self, "unverified-artifact-alarm", alarm_name=f"{names.prefix}-unverified-artifact", metric=metric,
            threshold=1, evaluation_periods=1, comparison_operator=cloudwatch.ComparisonOperator.
            GREATER_THAN_OR_EQUAL_TO_THRESHOLD, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="a pipeline stage refused an unsigned, re-signed or altered zip: "
                              "docs/release-incident-runbook.md")
        alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
        return topic, rules, alarm

    def _release_key(self, names: Names, application_roles: list[iam.IPrincipal]) -> kms.Key:
        """The stack's symmetric key: buckets, build logs and artifacts; its policy names every user."""
        stage_users = [self.roles[s] for s in STAGE_ROLES]
        logs_principal = iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")
        return kms.Key(
            self, "release-key", alias=names.alias("release"), enable_key_rotation=True,
            rotation_period=Duration.days(365), description=f"medistream {names.env}: release pipeline",
            removal_policy=RemovalPolicy.RETAIN, pending_window=Duration.days(30),
            policy=iam.PolicyDocument(statements=[
                iam.PolicyStatement(sid="AccountAdministersNeverUses", principals=[iam.AccountRootPrincipal()],
                                    actions=KEY_ADMIN, resources=["*"]),
                iam.PolicyStatement(sid="StagesEncryptAndDecrypt", principals=stage_users, actions=USE,
                                    resources=["*"]),
                iam.PolicyStatement(sid="ApplicationsDecryptTheirZip", principals=application_roles,
                                    actions=["kms:Decrypt", "kms:DescribeKey"], resources=["*"]),
                iam.PolicyStatement(
                    sid="AlarmsAndRulesToTheEncryptedTopic",
                    principals=[iam.ServicePrincipal("events.amazonaws.com"),
                                iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
                    conditions={"StringEquals": {"aws:SourceAccount": self.account}}),
                iam.PolicyStatement(
                    sid="BuildLogsOfThisPipeline", principals=[logs_principal],
                    actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                    resources=["*"], conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                        f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:"
                        f"/medistream/{names.env}/release/*"}})]))

    def _bucket(self, name: str, bucket_name: str) -> s3.Bucket:
        bucket = s3.Bucket(
            self, name, bucket_name=bucket_name, encryption=s3.BucketEncryption.KMS, encryption_key=self.release_key,
            bucket_key_enabled=True, enforce_ssl=True, versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            removal_policy=RemovalPolicy.RETAIN, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs, server_access_logs_prefix=f"{name}/")
        for_packs(bucket, "S3BucketReplicationEnabled", REPLICATION)
        return bucket

    def _project(self, names: Names, stage: str, role: iam.IRole) -> codebuild.PipelineProject:
        env = names.env
        commands = {
            "gates": [f"./medistream release --environment {env} --no-sign --builder \"$CODEBUILD_BUILD_ARN\" "
                      "--out dist"],
            "long-tier": ["./medistream test -m long"],  # the tests the release's fast tier leaves out
            "sign": ["ZIP=$(ls dist/medistream-*.zip)", f"./medistream sign --environment {env} \"$ZIP\"",
                     f"./medistream verify --environment {env} \"$ZIP\""],
            "deploy": [f"for job in {' '.join(FLINK_JOBS)}; do ./medistream jobs --target managed-flink --actor "
                       "codepipeline --role operator --reason \"release $CODEBUILD_RESOLVED_SOURCE_VERSION\" "
                       "upgrade \"$job\" --zip \"$(ls dist/medistream-*.zip)\"; done"],
        }[stage]
        outputs = ["dist/medistream-*"] if stage in ("gates", "sign") else None
        log_group = logs.LogGroup(self, f"{stage}-logs", log_group_name=f"/medistream/{env}/release/{stage}",
                                  encryption_key=self.release_key, retention=logs.RetentionDays.ONE_YEAR,
                                  removal_policy=RemovalPolicy.RETAIN)
        variables = {"MEDISTREAM_ENVIRONMENT": env, "MEDISTREAM_ARTIFACT_BUCKET": self.releases.bucket_name,
                     "MEDISTREAM_SIGNING_KEY": names.alias("release-signing")}
        project = codebuild.PipelineProject(
            self, f"{stage}-project", project_name=f"{names.prefix}-release-{stage}", role=role,
            encryption_key=self.release_key, timeout=Duration.minutes(60 if stage in ("gates", "long-tier") else 30),
            environment=codebuild.BuildEnvironment(build_image=codebuild.LinuxBuildImage.STANDARD_7_0,
                                                   compute_type=codebuild.ComputeType.MEDIUM, privileged=False),
            environment_variables={k: codebuild.BuildEnvironmentVariable(value=v) for k, v in variables.items()},
            build_spec=_build_spec(commands, outputs),
            logging=codebuild.LoggingOptions(cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=log_group)))
        self.log_groups = {**getattr(self, "log_groups", {}), stage: log_group}
        return project

    def _policy(self, stage: str, statements: list[iam.PolicyStatement]) -> None:
        """The stage role's one managed policy; each wildcard object or log-stream ARN acknowledged with its reason."""
        policy = iam.ManagedPolicy(self, f"{stage}-policy", managed_policy_name=f"{self.stack_name}-{stage}",
                                   statements=statements, roles=[self.roles[stage]])
        wildcards = sorted({r for st in statements for r in st.resources if "*" in r})
        for resource in wildcards:
            rendered = self._rendered(resource)
            reason = WILDCARD_REASONS[next(kind for kind in WILDCARD_REASONS if rendered.endswith(kind))]
            acknowledge(policy, f"AwsSolutions-IAM5[Resource::{rendered}]", reason)

    def _rendered(self, value: str) -> str:
        """A resource ARN as cdk-nag prints it: <LogicalId.Arn> for a resource's attribute."""
        resolved: Any = self.resolve(value)
        if isinstance(resolved, str):
            return resolved
        parts = resolved["Fn::Join"][1] if "Fn::Join" in resolved else [resolved]
        return "".join(p if isinstance(p, str) else f"<{p['Fn::GetAtt'][0]}.{p['Fn::GetAtt'][1]}>" if "Fn::GetAtt" in p
                       else f"<{p['Ref']}>" for p in parts)

    def _grants(self, names: Names, connection: str) -> None:
        """Every stage's IAM policy (KMS use is in the key policies)."""
        artifacts_read = iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"],
                                             resources=[self.artifacts.arn_for_objects("*")])
        artifacts_write = iam.PolicyStatement(actions=["s3:PutObject"], resources=[self.artifacts.arn_for_objects("*")])
        for stage in PROJECTS:
            group = self.log_groups[stage].log_group_arn
            statements = [artifacts_read, iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"], resources=[f"{group}:log-stream:*"])]
            if stage in ("gates", "sign"):
                statements.append(artifacts_write)
            if stage == "deploy":
                applications = [f"arn:{self.partition}:kinesisanalytics:{self.region}:{self.account}:application/"
                                f"{names.application(job)}" for job in FLINK_JOBS]
                audit = next(t.name for t in names.tables if t.group == "audit")
                statements += [
                    iam.PolicyStatement(sid="UpdateThisEnvironmentsApplications", actions=MSF_ACTIONS,
                                        resources=applications),
                    iam.PolicyStatement(sid="ZipsUnderArtifacts", actions=["s3:PutObject", "s3:GetObject",
                                                                           "s3:GetObjectVersion"],
                                        resources=[self.releases.arn_for_objects("artifacts/*")]),
                    iam.PolicyStatement(sid="TheReleasesBucketExists", actions=["s3:ListBucket"],
                                        resources=[self.releases.bucket_arn]),
                    iam.PolicyStatement(sid="AppendToTheAuditChain", actions=["dynamodb:PutItem", "dynamodb:Query"],
                                        resources=[f"arn:{self.partition}:dynamodb:{self.region}:{self.account}:"
                                                   f"table/{audit}"])]
            self._policy(stage, statements)
            acknowledge(self.projects[stage], "HIPAA.Security-CodeBuildProjectSourceRepoUrl", PIPELINE_SOURCE)
        self._policy("source", [artifacts_write, iam.PolicyStatement(
            actions=["codestar-connections:UseConnection", "codeconnections:UseConnection"], resources=[connection])])
        self._policy("publish", [artifacts_read, iam.PolicyStatement(
            actions=["s3:PutObject"], resources=[self.releases.arn_for_objects("releases/*")])])
        self._policy("pipeline", [
            artifacts_read, artifacts_write,
            iam.PolicyStatement(actions=["codebuild:StartBuild", "codebuild:BatchGetBuilds", "codebuild:StopBuild"],
                                resources=[p.project_arn for p in self.projects.values()]),
            iam.PolicyStatement(actions=["sts:AssumeRole"],
                                resources=[self.roles["source"].role_arn, self.roles["publish"].role_arn])])

    def _pipeline(self, names: Names, roles: dict[str, iam.IRole], connection: str, repository: str,
                  branch: str) -> codepipeline.Pipeline:
        source, gated, signed = (codepipeline.Artifact("source"), codepipeline.Artifact("gated"),
                                 codepipeline.Artifact("signed"))
        stages: list[codepipeline.StageProps] = [
            codepipeline.StageProps(stage_name="Source", actions=[actions.CodeStarConnectionsSourceAction(
                action_name="Source", connection_arn=connection, owner=_owner(repository), repo=_repo(repository),
                branch=branch, output=source, role=roles["source"])]),
            codepipeline.StageProps(stage_name="Gates", actions=[  # in parallel: the stage waits for both
                actions.CodeBuildAction(action_name="Gates", project=self.projects["gates"], input=source,
                                        outputs=[gated]),
                actions.CodeBuildAction(action_name="LongTier", project=self.projects["long-tier"], input=source)]),
            codepipeline.StageProps(stage_name="Sign", actions=[actions.CodeBuildAction(
                action_name="Sign", project=self.projects["sign"], input=source, extra_inputs=[gated],
                outputs=[signed])]),
            codepipeline.StageProps(stage_name="Publish", actions=[actions.S3DeployAction(
                action_name="Publish", bucket=self.releases, input=signed, extract=True,
                object_key="releases/#{codepipeline.PipelineExecutionId}", role=roles["publish"])]),
        ]
        if names.env == "prod":
            stages.append(codepipeline.StageProps(stage_name="Approve", actions=[actions.ManualApprovalAction(
                action_name="ApproveProdRelease",
                additional_information="The signed zip, SBOMs and provenance are under releases/ of the "
                                       "releases bucket: check the provenance's gates before approving")]))
        stages.append(codepipeline.StageProps(stage_name="Deploy", actions=[actions.CodeBuildAction(
            action_name="Deploy", project=self.projects["deploy"], input=source, extra_inputs=[signed])]))
        pipeline = codepipeline.Pipeline(
            self, "pipeline", pipeline_name=f"{names.prefix}-release", pipeline_type=codepipeline.PipelineType.V2,
            artifact_bucket=self.artifacts, role=roles["pipeline"], restart_execution_on_update=False,
            cross_account_keys=False, use_pipeline_role_for_actions=True, stages=stages)
        # The role's ARN (GetAtt) orders them already; CDK's extra DependsOn is cfn-lint's W3005.
        pipeline.node.default_child.add_deletion_override("DependsOn")  # type: ignore[union-attr]
        return pipeline


def _owner(repository: str) -> str:
    """The owner of an owner/name parameter, at deploy time."""
    return Fn.select(0, Fn.split("/", repository))


def _repo(repository: str) -> str:
    """The name of an owner/name parameter, at deploy time."""
    return Fn.select(1, Fn.split("/", repository))

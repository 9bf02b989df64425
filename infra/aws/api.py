"""The REST ingestion API's front door: API Gateway (regional, WAF) -> VPC link -> internal NLB -> the Fargate tasks.

No public subnet: API Gateway reaches the tasks through a VPC link to a network load balancer in the
private subnets, over TLS (a TLS listener with an ACM certificate for the backend name the integration
calls, which API Gateway checks; access logs to the access-log bucket). Only the API's one route is
published (POST /v1/feeds/{feed}/records; /healthz and /openapi.json stay inside). The WAF web ACL:
AWS's common, known-bad-inputs and IP-reputation rule groups, and a per-IP rate limit of the API's own
default rate (conf/ ingest_api.rate) over WAF's five-minute window; the common set's 8 KB body-size rule
only counts, since a batch of 4-12 KB records is larger by design (the API caps batches itself:
ingest_api.max.batch). WAF logs go to an encrypted log group with the credential headers redacted.
Access logs: one JSON line per request, no body; X-Ray tracing on. The API key check per feed is the
service's (connectors/ingest_api/keys.py).
"""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnParameter, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_wafv2 as wafv2

from infra.aws.acknowledgements import API_REASONS, acknowledge, checkov_skip, for_packs
from infra.aws.config import NLB_LOG_PREFIX, Names, base_groups
from infra.aws.network import INGEST_API_PORT, log_group

ROUTE = ("v1", "feeds", "{feed}", "records")  # connectors/ingest_api/app.py's one write route
MANAGED_RULE_GROUPS = ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                       "AWSManagedRulesAmazonIpReputationList")
WAF_WINDOW_S = 300
REDACTED_HEADERS = ("authorization", "x-api-key")  # where the API reads a feed's key
TLS_PORT = 443
TLS_POLICY = elbv2.SslPolicy.RECOMMENDED_TLS  # TLS 1.3 and 1.2 only
CERTIFICATE_ARN = r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$"
HOST_NAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"


def rate_limit() -> int:
    """Requests per IP per WAF window: the API's default per-feed rate, sustained for the whole window."""
    return int(float(base_groups()["ingest_api"]["rate"]) * WAF_WINDOW_S)


class IngestApiFront:
    """The NLB, VPC link, REST API, stage and web ACL in front of the ingest API service."""

    def __init__(self, stack: Stack, names: Names, vpc: ec2.IVpc, service: ecs.FargateService,
                 logs_key: kms.IKey) -> None:
        self.nlb = elbv2.NetworkLoadBalancer(
            stack, "ingest-api-nlb", load_balancer_name=f"{names.prefix}-ingest-api", vpc=vpc, internet_facing=False,
            vpc_subnets=ec2.SubnetSelection(subnets=vpc.isolated_subnets), cross_zone_enabled=True,
            deletion_protection=True)
        # TLS from API Gateway's VPC link to the load balancer: a TLS listener with the deploy's ACM certificate for
        # the backend name the integration calls (API Gateway checks the certificate against that name). TLS ends at
        # the load balancer; the hop to the task stays inside the private subnets, on the services' group.
        certificate = CfnParameter(stack, "IngestApiCertificateArn", type="String", allowed_pattern=CERTIFICATE_ARN,
                                   description="ACM certificate (this region) for IngestApiBackendName, on the NLB's "
                                               "TLS listener")
        self.backend_name = CfnParameter(stack, "IngestApiBackendName", type="String", allowed_pattern=HOST_NAME,
                                         description="the host name on that certificate: API Gateway calls "
                                                     "https://<it>/ through the VPC link")
        listener = self.nlb.add_listener(
            "ingest-api-listener", port=TLS_PORT, protocol=elbv2.Protocol.TLS, ssl_policy=TLS_POLICY,
            certificates=[elbv2.ListenerCertificate.from_arn(certificate.value_as_string)])
        listener.add_targets("ingest-api-targets", port=INGEST_API_PORT, protocol=elbv2.Protocol.TCP,
                             targets=[service], health_check=elbv2.HealthCheck(
                                 protocol=elbv2.Protocol.HTTP, path="/healthz", port=str(INGEST_API_PORT)))
        # Access logs (a network load balancer writes them for TLS listeners) to the access-log bucket, whose policy
        # admits the log delivery service under nlb/ (storage stack).
        for key, value in (("access_logs.s3.enabled", "true"), ("access_logs.s3.bucket", names.buckets["access_logs"]),
                           ("access_logs.s3.prefix", NLB_LOG_PREFIX)):
            self.nlb.set_attribute(key, value)
        # The CDK makes the service wait for the listener by DependsOn as well as by its Ref (cfn-lint W3005).
        service.node.default_child.add_metadata(  # type: ignore[union-attr]
            "cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        link = apigateway.VpcLink(stack, "ingest-api-link", vpc_link_name=f"{names.prefix}-ingest-api",
                                  targets=[self.nlb])
        access = log_group(stack, "api-access-log-group", f"/medistream/{names.env}/api-access", logs_key)
        self.api = apigateway.RestApi(
            stack, "ingest-api", rest_api_name=f"{names.prefix}-ingest-api", cloud_watch_role=False,
            endpoint_types=[apigateway.EndpointType.REGIONAL], disable_execute_api_endpoint=False,
            deploy_options=apigateway.StageOptions(
                stage_name="v1", tracing_enabled=True, access_log_destination=apigateway.LogGroupLogDestination(access),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True, resource_path=True,
                    response_length=True, status=True, user=False)))
        resource = self.api.root
        for part in ROUTE:
            resource = resource.add_resource(part)
        integration = apigateway.Integration(
            type=apigateway.IntegrationType.HTTP_PROXY, integration_http_method="POST",
            uri=f"https://{self.backend_name.value_as_string}/{'/'.join(ROUTE)}",
            options=apigateway.IntegrationOptions(
                connection_type=apigateway.ConnectionType.VPC_LINK, vpc_link=link,
                request_parameters={"integration.request.path.feed": "method.request.path.feed"}))
        self.method = resource.add_method("POST", integration, request_parameters={"method.request.path.feed": True})
        for rule, reason in API_REASONS["api"]:
            acknowledge(self.api, rule, reason)
        for rule, reason in API_REASONS["method"]:
            acknowledge(self.method, rule, reason)
        checkov_skip(self.method.node.default_child, "CKV_AWS_59", API_REASONS["method"][0][1])  # type: ignore[arg-type]
        checkov_skip(self.api.deployment_stage.node.default_child, "CKV_AWS_120",  # type: ignore[arg-type]
                     dict(API_REASONS["packs"])["APIGWCacheEnabledAndEncrypted"])
        for rule, reason in API_REASONS["stage"]:
            acknowledge(self.api.deployment_stage, rule, reason)
        for rule, reason in API_REASONS["packs"]:
            for_packs(self.api.deployment_stage, rule, reason)
        self.web_acl = self._web_acl(stack, names, logs_key)

    def _web_acl(self, stack: Stack, names: Names, logs_key: kms.IKey) -> wafv2.CfnWebACL:
        """The regional web ACL on the API's stage, and its logging."""
        rules = [wafv2.CfnWebACL.RuleProperty(
            name=group, priority=i, override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(managed_rule_group_statement=wafv2.CfnWebACL.
                ManagedRuleGroupStatementProperty(
                    vendor_name="AWS", name=group,
                    rule_action_overrides=[wafv2.CfnWebACL.RuleActionOverrideProperty(
                        name="SizeRestrictions_BODY", action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}))]
                    if group == "AWSManagedRulesCommonRuleSet" else None)),
            visibility_config=self._visibility(group)) for i, group in enumerate(MANAGED_RULE_GROUPS)]
        rules.append(wafv2.CfnWebACL.RuleProperty(
            name="RatePerIp", priority=len(rules), action=wafv2.CfnWebACL.RuleActionProperty(block={}),
            statement=wafv2.CfnWebACL.StatementProperty(rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                limit=rate_limit(), aggregate_key_type="IP", evaluation_window_sec=WAF_WINDOW_S)),
            visibility_config=self._visibility("RatePerIp")))
        acl = wafv2.CfnWebACL(stack, "ingest-api-waf", name=f"{names.prefix}-ingest-api", scope="REGIONAL",
                              default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}), rules=rules,
                              visibility_config=self._visibility(f"{names.prefix}-ingest-api"))
        wafv2.CfnWebACLAssociation(stack, "ingest-api-waf-association", web_acl_arn=acl.attr_arn,
                                   resource_arn=self.api.deployment_stage.stage_arn)
        waf_logs = log_group(stack, "waf-log-group", waf_log_group(names), logs_key)
        wafv2.CfnLoggingConfiguration(
            stack, "ingest-api-waf-logging", resource_arn=acl.attr_arn,
            log_destination_configs=[stack.format_arn(service="logs", resource="log-group",
                                                      resource_name=waf_logs.log_group_name,
                                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)],
            redacted_fields=[wafv2.CfnLoggingConfiguration.FieldToMatchProperty(
                single_header={"Name": header}) for header in REDACTED_HEADERS])
        return acl

    @staticmethod
    def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
        return wafv2.CfnWebACL.VisibilityConfigProperty(cloud_watch_metrics_enabled=True, metric_name=name,
                                                        sampled_requests_enabled=True)


def waf_log_group(names: Names) -> str:
    """WAF logs only to log groups named aws-waf-logs-* (the logs key admits this one by name)."""
    return f"aws-waf-logs-{names.prefix}"

"""The egress firewall: what leaves the VPC for the internet goes through AWS Network Firewall, to named hosts only.

The partner-facing parts (partner delivery, the REST and SFTP pullers, the Snowflake loader) sit in the egress
subnets. Their default route goes to their zone's firewall endpoint (one firewall per zone, each in a small
subnet of its own), the firewall subnet's default route to the zone's NAT gateway, and the NAT subnet's route
back to the egress subnet through the same endpoint, so the firewall sees both directions with the workloads'
own addresses. The policy is strict-order, drop-by-default on established flows:

- HTTPS and HTTP only to the host names of `config.egress_domains` (TLS SNI and HTTP Host), which the code's own
  config names: the partner contracts' endpoint and token URLs, the pulled REST feeds' URLs, the Snowflake
  account's URL. A host that is not there is dropped after the handshake, and the alert log names it.
- SSH (port 22) only to the addresses of the partner-sftp prefix list (SSH carries no name to check); operators fill
  it from `config.sftp_hosts`.

Traffic to AWS stays off this path: the S3 and DynamoDB gateway endpoints' routes are more specific than the
default route, and every other service is an interface endpoint inside the VPC. Alert and flow logs go to log
groups under the logs key. The policy and rule groups hold only public host names and a prefix list's reference,
so they keep Network Firewall's AWS-owned encryption (no CMK: nothing in them is data).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_networkfirewall as nf

# Small subnets of their own for the firewall endpoints (Network Firewall's minimum, /28), outside the ranges the VPC
# construct allocates (10.40.0.0-10.40.60.255).
FIREWALL_CIDRS = ("10.40.62.0/28", "10.40.62.16/28", "10.40.62.32/28")
DOMAIN_CAPACITY = 200  # a rule group's capacity is fixed at creation: room for the allow-list to grow
SFTP_CAPACITY = 10
SFTP_SID = 2200001


def sftp_rule(sid: int = SFTP_SID) -> str:
    """The Suricata rule that lets SSH through to the partner-sftp prefix list's addresses only."""
    return (f'pass tcp $EGRESS_NET any -> @PARTNER_SFTP 22 (flow:to_server; msg:"partner SFTP server"; '
            f"sid:{sid}; rev:1;)")


class EgressFirewall:
    """Per-zone firewalls on the egress subnets' path to the NAT gateways, with the domain allow-list policy."""

    def __init__(self, stack: Stack, prefix: str, env: str, vpc: ec2.Vpc, egress_subnets: Sequence[ec2.ISubnet],
                 nat_subnets: Sequence[ec2.ISubnet], domains: Sequence[str], sftp_list_arn: str,
                 log_groups: tuple[logs.LogGroup, logs.LogGroup]) -> None:
        egress_cidrs = [s.ipv4_cidr_block for s in egress_subnets]
        self.domains = nf.CfnRuleGroup(
            stack, "egress-domains", rule_group_name=f"{prefix}-egress-domains", type="STATEFUL",
            capacity=DOMAIN_CAPACITY, description="HTTPS/HTTP out to the host names the config names, nothing else",
            rule_group=nf.CfnRuleGroup.RuleGroupProperty(
                rules_source=nf.CfnRuleGroup.RulesSourceProperty(
                    rules_source_list=nf.CfnRuleGroup.RulesSourceListProperty(
                        generated_rules_type="ALLOWLIST", target_types=["TLS_SNI", "HTTP_HOST"],
                        targets=list(domains))),
                rule_variables=nf.CfnRuleGroup.RuleVariablesProperty(ip_sets={
                    "HOME_NET": nf.CfnRuleGroup.IPSetProperty(definition=egress_cidrs)}),
                stateful_rule_options=nf.CfnRuleGroup.StatefulRuleOptionsProperty(rule_order="STRICT_ORDER")))
        self.sftp = nf.CfnRuleGroup(
            stack, "egress-sftp", rule_group_name=f"{prefix}-egress-sftp", type="STATEFUL", capacity=SFTP_CAPACITY,
            description="SSH out to the partner-sftp prefix list's addresses only",
            rule_group=nf.CfnRuleGroup.RuleGroupProperty(
                rules_source=nf.CfnRuleGroup.RulesSourceProperty(rules_string=sftp_rule()),
                rule_variables=nf.CfnRuleGroup.RuleVariablesProperty(ip_sets={
                    "EGRESS_NET": nf.CfnRuleGroup.IPSetProperty(definition=egress_cidrs)}),
                reference_sets=nf.CfnRuleGroup.ReferenceSetsProperty(ip_set_references={
                    "PARTNER_SFTP": nf.CfnRuleGroup.IPSetReferenceProperty(reference_arn=sftp_list_arn)}),
                stateful_rule_options=nf.CfnRuleGroup.StatefulRuleOptionsProperty(rule_order="STRICT_ORDER")))
        self.policy = nf.CfnFirewallPolicy(
            stack, "egress-policy", firewall_policy_name=f"{prefix}-egress",
            description="strict order; established flows dropped unless a rule group passed them",
            firewall_policy=nf.CfnFirewallPolicy.FirewallPolicyProperty(
                stateless_default_actions=["aws:forward_to_sfe"],
                stateless_fragment_default_actions=["aws:forward_to_sfe"],
                stateful_engine_options=nf.CfnFirewallPolicy.StatefulEngineOptionsProperty(
                    rule_order="STRICT_ORDER", stream_exception_policy="DROP"),
                stateful_default_actions=["aws:drop_established", "aws:alert_established"],
                stateful_rule_group_references=[
                    nf.CfnFirewallPolicy.StatefulRuleGroupReferenceProperty(resource_arn=group.attr_rule_group_arn,
                                                                            priority=priority)
                    for priority, group in ((10, self.domains), (20, self.sftp))]))
        alerts, flows = log_groups  # the firewalls' alert and flow logs (the network stack makes them, encrypted)
        self.firewalls: list[nf.CfnFirewall] = []
        self.subnets: list[ec2.Subnet] = []
        for i, (egress, nat) in enumerate(zip(egress_subnets, nat_subnets, strict=True)):
            zone = i + 1
            subnet = ec2.Subnet(stack, f"firewall-subnet-{zone}", vpc_id=vpc.vpc_id, cidr_block=FIREWALL_CIDRS[i],
                                availability_zone=egress.availability_zone, map_public_ip_on_launch=False)
            nat_gateway = nat.node.find_child("NATGateway")
            subnet.add_route("to-nat", router_id=nat_gateway.ref,  # type: ignore[attr-defined]
                             router_type=ec2.RouterType.NAT_GATEWAY, destination_cidr_block="0.0.0.0/0")
            firewall = nf.CfnFirewall(
                stack, f"egress-firewall-{zone}", firewall_name=f"{prefix}-egress-{zone}",
                firewall_policy_arn=self.policy.attr_firewall_policy_arn, vpc_id=vpc.vpc_id,
                subnet_mappings=[nf.CfnFirewall.SubnetMappingProperty(subnet_id=subnet.subnet_id)],
                delete_protection=True, subnet_change_protection=True, firewall_policy_change_protection=False,
                description=f"egress of zone {zone}: partner and Snowflake host names only")
            # One subnet per firewall, so its one endpoint is "<zone>:<vpce id>".
            endpoint = Fn.select(1, Fn.split(":", Fn.select(0, firewall.attr_endpoint_ids)))
            route = egress.node.find_child("DefaultRoute")
            route.add_property_deletion_override("NatGatewayId")  # type: ignore[attr-defined]
            route.add_property_override("VpcEndpointId", endpoint)  # type: ignore[attr-defined]
            ec2.CfnRoute(stack, f"nat-return-{zone}", route_table_id=nat.route_table.route_table_id,
                         destination_cidr_block=egress.ipv4_cidr_block, vpc_endpoint_id=endpoint)
            nf.CfnLoggingConfiguration(
                stack, f"egress-firewall-logging-{zone}", firewall_arn=firewall.attr_firewall_arn,
                logging_configuration=nf.CfnLoggingConfiguration.LoggingConfigurationProperty(log_destination_configs=[
                    nf.CfnLoggingConfiguration.LogDestinationConfigProperty(
                        log_type=kind, log_destination_type="CloudWatchLogs",
                        log_destination={"logGroup": group.log_group_name})
                    for kind, group in (("ALERT", alerts), ("FLOW", flows))]))
            self.firewalls.append(firewall)
            self.subnets.append(subnet)

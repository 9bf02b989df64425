"""The streaming stack: the MSK cluster (IAM auth, TLS, the streaming CMK) and every topic the pipeline uses.

Brokers in the three private subnets, reachable on 9098 (SASL/IAM over TLS) only from the Managed Flink
applications' and the ECS services' security groups (infra/aws/network.py); no unauthenticated, plaintext
or SCRAM listener. At rest: the `streaming` key (raw.<feed> holds records before PHI protection). Broker
logs to a log group under the logs key. The broker configuration refuses auto-created topics and
unclean leader election and keeps two in-sync replicas of three, which transactional (exactly-once)
writes need. Topics are `config.topics()`: the same names and partitions the jobs create locally
from conf/application_properties.json and the feed contracts (a job creates only what is missing, so
on AWS it finds them; its role has no CreateTopic).
"""

from __future__ import annotations

import base64

from aws_cdk import CfnParameter, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_msk as msk
from constructs import Construct

from infra.aws.config import Names, Topic, topics
from infra.aws.network import log_group

BROKERS_PER_ZONE = 1
REPLICATION = 3
# Exactly-once needs the transaction log replicated like the data; nothing is created by a client's
# first use; a lagging replica never becomes leader (no silent loss).
SERVER_PROPERTIES = {
    "auto.create.topics.enable": "false",
    "default.replication.factor": str(REPLICATION),
    "min.insync.replicas": "2",
    "unclean.leader.election.enable": "false",
    "transaction.state.log.replication.factor": str(REPLICATION),
    "transaction.state.log.min.isr": "2",
    "offsets.topic.replication.factor": str(REPLICATION),
}


def topic_configs(topic: Topic) -> str | None:
    """AWS::MSK::Topic's Configs: the topic's properties file, base64-encoded."""
    if not topic.configs:
        return None
    return base64.b64encode("".join(f"{k}={v}\n" for k, v in topic.configs).encode()).decode()


class StreamingStack(Stack):
    """The MSK cluster of one environment and its topics."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, vpc: ec2.IVpc,
                 security_group: ec2.ISecurityGroup, streaming_key: kms.IKey, logs_key: kms.IKey,
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        # No internet here to confirm MSK's newest version string or instance family in every region:
        # parameters, with defaults that MSK listed in 2025.
        version = CfnParameter(self, "KafkaVersion", type="String", default="3.9.x",
                               description="MSK Apache Kafka version (aws kafka list-kafka-versions)")
        instance = CfnParameter(self, "BrokerInstanceType", type="String", default="kafka.m7g.large",
                                description="MSK broker instance type")
        volume = CfnParameter(self, "BrokerVolumeGiB", type="Number", default=1000, min_value=100,
                              description="EBS storage per broker (GiB)")
        configuration = msk.CfnConfiguration(
            self, "broker-config", name=f"{names.msk_cluster}-brokers",
            server_properties="".join(f"{k}={v}\n" for k, v in SERVER_PROPERTIES.items()),
            description=f"medistream {names.env}: no auto-created topics, 2 of 3 in sync")
        group = log_group(self, "broker-log-group", f"/medistream/{names.env}/msk", logs_key)
        subnets = vpc.isolated_subnets
        self.cluster = msk.CfnCluster(
            self, "cluster", cluster_name=names.msk_cluster, kafka_version=version.value_as_string,
            number_of_broker_nodes=BROKERS_PER_ZONE * len(subnets),
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                client_subnets=[s.subnet_id for s in subnets], instance_type=instance.value_as_string,
                security_groups=[security_group.security_group_id],
                storage_info=msk.CfnCluster.StorageInfoProperty(ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(
                    volume_size=volume.value_as_number)),
                connectivity_info=msk.CfnCluster.ConnectivityInfoProperty(
                    public_access=msk.CfnCluster.PublicAccessProperty(type="DISABLED"))),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(iam=msk.CfnCluster.IamProperty(enabled=True)),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False)),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_at_rest=msk.CfnCluster.EncryptionAtRestProperty(data_volume_kms_key_id=streaming_key.key_arn),
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(client_broker="TLS", in_cluster=True)),
            configuration_info=msk.CfnCluster.ConfigurationInfoProperty(arn=configuration.attr_arn, revision=1),
            enhanced_monitoring="PER_TOPIC_PER_BROKER",
            logging_info=msk.CfnCluster.LoggingInfoProperty(broker_logs=msk.CfnCluster.BrokerLogsProperty(
                cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(enabled=True, log_group=group.log_group_name))))
        self.cluster.apply_removal_policy(RemovalPolicy.RETAIN)
        self.topics: dict[str, msk.CfnTopic] = {}
        for topic in topics():
            resource = msk.CfnTopic(self, f"topic-{topic.name}", cluster_arn=self.cluster.attr_arn,
                                    topic_name=topic.name, partition_count=topic.partitions,
                                    replication_factor=REPLICATION, configs=topic_configs(topic))
            resource.apply_removal_policy(RemovalPolicy.RETAIN)
            self.topics[topic.name] = resource

"""CloudWatch alarms from ops/alerts.yaml (the one source of thresholds) and the dashboard of infra/dashboards.py.

An alert becomes an alarm per Managed Flink application where Managed Flink publishes its metric
with the `Application` dimension alone (checked in AWS's metrics list): restarts and failed
checkpoints. Kafka consumer lag (SnowflakeLag, ConsumerLagGrowing) comes from MSK's lag metric per
group and topic; FeedSilent per feed from where the feed arrives (S3 request metrics of its landing
prefix, or MSK's messages into its raw topic). The others are named in NOT_IN_CLOUDWATCH with the
reason: the jobs' per-partner and operator counters exist at the OPERATOR metrics level, but their
dimension set has not been seen on a running application yet, and an alarm cannot use SEARCH. Alarms
notify one SNS topic per severity (page, ticket), encrypted with the logs key and TLS-only.
"""

from __future__ import annotations

import math
import re
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.alert_rules import feed_intervals, load_alerts, thresholds
from infra.aws.config import FLINK_JOBS, Names, base_groups, feeds_with, topics
from infra.aws.network import AZ_COUNT
from infra.aws.storage import feed_metrics_id
from infra.aws.streaming import BROKERS_PER_ZONE
from infra.dashboards import NAMESPACE, PANELS, cloudwatch_dashboard

# alert -> (the dashboard panel's CloudWatch metric, the threshold's key in ops/alerts.yaml). Both metrics
# are counters since the job started: the alarm reads their increase over the alert's window (DIFF).
IN_CLOUDWATCH = {"JobRestarting": ("numRestarts", "max_restarts"),
                 "CheckpointFailures": ("numberOfFailedCheckpoints", "max_failures")}
NOT_IN_CLOUDWATCH = {
    "DeadLetterRateHigh": "per-feed counters: as FeedSilent",
    "PartnerCircuitOpen": "per-partner gauge: as FeedSilent",
    "PartnerRateLimited": "per-partner counter: as FeedSilent",
    "KmsErrors": "operator counter: as FeedSilent",
    "FreshnessOverTarget": "currentEmitEventTimeLag is an operator metric: as FeedSilent",
    "SinkCommitsStalled": "Managed Flink publishes no last-completed-checkpoint time",
    "SinkDelayOverTarget": "per-sink commit delay is the jobs' and the loader's own metric; the loader runs on ECS "
                           "(doors stack) but nothing ships its Prometheus metrics to CloudWatch yet",
    "MetricsTargetDown": "a Prometheus scrape alert; on AWS the applications' state is Managed Flink's",
    "AuditChainBroken": "`medistream audit watch` is not deployed yet (issue 22, item 5)",
    "AuditVerificationStale": "`medistream audit watch` is not deployed yet (issue 22, item 5)",
}


LABEL = re.compile(r"\{\{ \$labels\.\w+ \}\}")  # a Prometheus summary's label: the application here


# Alerts on Kafka consumer lag, from MSK's consumer-lag metric (AWS/Kafka SumOffsetLag by cluster, consumer group
# and topic, as MSK's documentation lists it; not seen on a running cluster here).
IN_MSK = ("SnowflakeLag", "ConsumerLagGrowing")
# FeedSilent per feed from what AWS itself counts where the feed arrives: a file feed's PutRequests on its
# landing prefix (S3 request metrics, storage.py), a Kafka or REST feed's MessagesInPerSec on its raw topic
# summed over the brokers (MSK at PER_TOPIC_PER_BROKER, streaming.py). No data is silence.
IN_FEED_METRICS = ("FeedSilent",)
BROKERS = BROKERS_PER_ZONE * AZ_COUNT  # MSK numbers its brokers 1..n
MSK_NAMESPACE = "AWS/Kafka"
ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


def consumers(groups: dict[str, dict[str, str]] | None = None) -> dict[str, list[str]]:
    """Each consumer group of the pipeline -> the topics it reads (config.topics(), the jobs' group ids)."""
    g = base_groups() if groups is None else groups
    names = [t.name for t in topics(g)]
    partner_prefix = g["curated"]["partner.topic.prefix"]
    return {g["kafka"]["group.id"]: [t for t in names if t.startswith("raw.")],
            g["partners"]["group.id"]: [t for t in names if t.startswith(partner_prefix)],
            g["snowflake"]["consumer.group.id"]: [g["curated"]["snowflake.topic"]]}


def _minutes(window: str) -> int:
    """A Prometheus duration of whole minutes ('10m') in minutes."""
    if not window.endswith("m") or not window[:-1].isdigit():
        raise ValueError(f"window {window!r}: expected whole minutes such as '10m'")
    return int(window[:-1])


def alarm_rows(doc: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The thresholds() rows that have a CloudWatch metric (no per-feed rows: FeedSilent is not one)."""
    doc = load_alerts() if doc is None else doc
    rows = thresholds(doc, feed_intervals({}, doc["defaults"]["feed_expected_interval_s"]))
    unknown = {r["alert"] for r in rows} - set(IN_CLOUDWATCH) - set(IN_MSK) - set(IN_FEED_METRICS) - set(
        NOT_IN_CLOUDWATCH)
    if unknown:
        raise ValueError(f"ops/alerts.yaml: {sorted(unknown)} neither mapped to a CloudWatch metric nor excluded")
    return [r for r in rows if r["alert"] in IN_CLOUDWATCH]


class MonitoringStack(Stack):
    """The alarms, their SNS topics and the dashboard of one environment's applications."""

    def __init__(self, scope: Construct, construct_id: str, *, names: Names, logs_key: kms.IKey,
                 **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        self.topics = {severity: sns.Topic(self, f"{severity}-topic", topic_name=f"{names.prefix}-{severity}",
                                           master_key=logs_key, enforce_ssl=True)
                       for severity in ("page", "ticket")}
        published = {p.cloudwatch for p in PANELS}
        self.alarms: list[cloudwatch.Alarm] = []
        for row in alarm_rows():
            metric_name, threshold_key = IN_CLOUDWATCH[row["alert"]]
            assert metric_name in published  # noqa: S101 - the dashboard shows what alarms
            minutes = _minutes(row["window"])
            for job in FLINK_JOBS:
                application = names.application(job)
                counter = cloudwatch.Metric(namespace=NAMESPACE, metric_name=metric_name, statistic="Maximum",
                                            dimensions_map={"Application": application},
                                            period=Duration.minutes(minutes))
                increase = cloudwatch.MathExpression(expression="DIFF(m)", using_metrics={"m": counter},
                                                     period=Duration.minutes(minutes), label=f"{metric_name} increase")
                alarm = cloudwatch.Alarm(
                    self, f"{row['alert']}-{job}", alarm_name=f"{application}-{row['alert']}",
                    alarm_description=f"{row['severity']}: {LABEL.sub(application, row['summary'])} (ops/alerts.yaml)",
                    metric=increase, threshold=float(row[threshold_key]), evaluation_periods=1,
                    comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
                alarm.add_alarm_action(actions.SnsAction(self.topics[row["severity"]]))
                self.alarms.append(alarm)
        self._consumer_lag(names)
        self._feeds_silent(names)
        body = cloudwatch_dashboard([names.application(job) for job in FLINK_JOBS], self.region)
        cloudwatch.CfnDashboard(self, "dashboard", dashboard_name=f"{names.prefix}-pipeline",
                                dashboard_body=self.to_json_string(body))

    def _consumer_lag(self, names: Names) -> None:
        """SnowflakeLag (the loader's group on curated.snowflake) and ConsumerLagGrowing (every group and topic)."""
        alerts = load_alerts()["alerts"]
        snowflake = base_groups()["snowflake"]
        for group, group_topics in consumers().items():
            for topic in group_topics:
                lag = cloudwatch.Metric(namespace=MSK_NAMESPACE, metric_name="SumOffsetLag", statistic="Maximum",
                                        period=Duration.minutes(1), dimensions_map={
                                            "Cluster Name": names.msk_cluster, "Consumer Group": group, "Topic": topic})
                growing = alerts["ConsumerLagGrowing"]
                window = _minutes(growing["window"])
                # Above the floor and higher than a window ago: DIFF over window-long periods.
                expression = cloudwatch.MathExpression(
                    expression=f"IF(m > {growing['min_lag']} AND DIFF(m) > 0, 1, 0)", period=Duration.minutes(window),
                    using_metrics={"m": lag.with_(period=Duration.minutes(window))}, label="lag above floor, growing")
                self._alarm(names, f"ConsumerLagGrowing-{group}-{topic}", expression, 1, AT_LEAST,
                            _minutes(growing["for"]) // window or 1, growing,
                            f"{group} on {topic}: Kafka consumer lag above {growing['min_lag']} and growing")
                if group == snowflake["consumer.group.id"]:
                    rule = alerts["SnowflakeLag"]
                    self._alarm(names, "SnowflakeLag", lag, float(rule["max_messages"]), ABOVE, _minutes(rule["for"]),
                                rule,
                                f"Snowflake loader more than {rule['max_messages']} messages behind {topic}")

    def _feeds_silent(self, names: Names) -> None:
        """FeedSilent per feed of the contracts: nothing arrived over the contract's expected interval."""
        from schemas.contracts import load_contracts

        doc = load_alerts()
        rule = doc["alerts"]["FeedSilent"]
        intervals = feed_intervals(load_contracts(), doc["defaults"]["feed_expected_interval_s"])
        landing = set(feeds_with("landing"))
        for feed, seconds in intervals.items():
            period = Duration.minutes(max(1, math.ceil(seconds / 60)))
            metric: cloudwatch.IMetric
            if feed in landing:
                metric = cloudwatch.Metric(namespace="AWS/S3", metric_name="PutRequests", statistic="Sum",
                                           period=period, dimensions_map={"BucketName": names.buckets["landing"],
                                                           "FilterId": feed_metrics_id(feed)})
            else:
                brokers = {f"b{i}": cloudwatch.Metric(
                    namespace=MSK_NAMESPACE, metric_name="MessagesInPerSec", statistic="Sum", period=period,
                    dimensions_map={"Cluster Name": names.msk_cluster, "Broker ID": str(i), "Topic": f"raw.{feed}"})
                    for i in range(1, BROKERS + 1)}
                metric = cloudwatch.MathExpression(expression=" + ".join(f"FILL({b}, 0)" for b in brokers),
                                                   using_metrics=brokers, period=period, label=f"raw.{feed} in")
            alarm = cloudwatch.Alarm(
                self, f"FeedSilent-{feed}", alarm_name=f"{names.prefix}-FeedSilent-{feed}", metric=metric,
                threshold=1, evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                alarm_description=f"{rule['severity']}: {LABEL.sub(feed, rule['summary'])} ({seconds} s, "
                                  "ops/alerts.yaml)")
            alarm.add_alarm_action(actions.SnsAction(self.topics[rule["severity"]]))
            self.alarms.append(alarm)

    def _alarm(self, names: Names, alert: str, metric: cloudwatch.IMetric, threshold: float,
               comparison: cloudwatch.ComparisonOperator, periods: int, rule: dict[str, Any], summary: str) -> None:
        """One alarm to the topic of the rule's severity."""
        alarm = cloudwatch.Alarm(
            self, alert, alarm_name=f"{names.prefix}-{alert}", metric=metric, threshold=threshold,
            evaluation_periods=periods, alarm_description=f"{rule['severity']}: {summary} (ops/alerts.yaml)",
            comparison_operator=comparison,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(actions.SnsAction(self.topics[rule["severity"]]))
        self.alarms.append(alarm)

"""The CloudWatch dashboard body through the CloudWatch API (moto server on loopback): PutDashboard takes it,
GetDashboard gives back the same body, ListDashboards names it."""

from __future__ import annotations

import json

import pytest

from connectors.kms import aws_client
from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
from infra.dashboards import cloudwatch_dashboard

pytestmark = pytest.mark.integration


def test_put_dashboard_takes_the_generated_body_and_gives_it_back(stack: object, run_id: str) -> None:
    cloudwatch = aws_client(load_phi_config(read_property_groups(LOCAL_PROPERTIES)), "cloudwatch")
    name = f"medistream-pipeline-t{run_id}"
    body = cloudwatch_dashboard(["medistream-ingest-dev", "medistream-partner_delivery-dev"], "us-east-1")
    answer = cloudwatch.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
    assert answer.get("DashboardValidationMessages", []) == []
    try:
        assert json.loads(cloudwatch.get_dashboard(DashboardName=name)["DashboardBody"]) == body
        listed = cloudwatch.list_dashboards(DashboardNamePrefix=name)["DashboardEntries"]
        assert [d["DashboardName"] for d in listed] == [name]
    finally:
        cloudwatch.delete_dashboards(DashboardNames=[name])

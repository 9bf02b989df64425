"""The S3 client every component builds from its S3Config (moto locally, S3 in AWS)."""

from __future__ import annotations

from typing import Any

import boto3

from connectors.iceberg import S3Config


def s3_client(s3: S3Config) -> Any:
    """A boto3 S3 client for the configured endpoint (credentials from the environment or the role)."""
    return boto3.client("s3", endpoint_url=s3.endpoint or None, region_name=s3.region)

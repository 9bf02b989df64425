"""Secrets Manager helpers for the secrets we write (API key digests, local partner credentials)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def put_secret(secrets_client: Any, secret_id: str, document: Mapping[str, Any]) -> None:
    """Create the secret as JSON, or store a new version of it; the values never reach a log."""
    text = json.dumps(dict(document))
    try:
        secrets_client.create_secret(Name=secret_id, SecretString=text)
    except secrets_client.exceptions.ResourceExistsException:
        secrets_client.put_secret_value(SecretId=secret_id, SecretString=text)

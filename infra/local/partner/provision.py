"""Local provisioning for partner delivery: the partner's credentials in Secrets Manager (moto locally).

Production secrets are created by the platform team, never by the job; this writes the values a
local partner stand-in was started with, so the job reads them the same way it would in AWS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def put_secret(secrets_client: Any, secret_id: str, document: Mapping[str, str]) -> None:
    """Create the secret, or store a new version of it; the values never reach a log."""
    text = json.dumps(dict(document))
    try:
        secrets_client.create_secret(Name=secret_id, SecretString=text)
    except secrets_client.exceptions.ResourceExistsException:
        secrets_client.put_secret_value(SecretId=secret_id, SecretString=text)

"""Secrets Manager helpers: JSON secrets we read (partner credentials, API key digests) and write."""

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


def read_json_object(secrets_client: Any, secret_id: str, where: str, error: type[Exception]) -> dict[str, Any]:
    """The secret's JSON object; `error(f"{where}: ...")` when it cannot be read or is not an object.

    Messages carry the service's error code only, never the secret's content.
    """
    try:
        text = secrets_client.get_secret_value(SecretId=secret_id)["SecretString"]
    except Exception as err:  # botocore raises service-specific classes; the code is what matters
        code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
        raise error(f"{where}: cannot be read ({code})") from None
    try:
        doc = json.loads(text)
    except ValueError:
        raise error(f"{where}: is not a JSON object") from None
    if not isinstance(doc, dict):
        raise error(f"{where}: is not a JSON object")
    return doc

"""Key-pair authentication material for Snowpipe Streaming, fetched from Secrets Manager.

The private key (PKCS#8 PEM, as Snowflake's key-pair auth wants it) lives only in Secrets Manager
(moto server locally) and only in memory here, inside a `Secret` whose repr and str are redacted.
It is fetched when the loader opens its client, never read from a properties file or logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from connectors.snowflake.channel import Fatal, Retriable

_NOT_FOUND = {"ResourceNotFoundException", "NotFoundException"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException"}
_THROTTLED = {"ThrottlingException", "InternalServiceError", "InternalFailure", "ServiceUnavailable"}


@dataclass(frozen=True)
class Secret:
    """A secret value that never shows itself in repr, str, logs or exceptions."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The secret itself: pass it straight to the client that needs it, nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


def secrets_client(endpoint: str, region: str) -> Any:
    """A Secrets Manager client at the configured endpoint ("" = AWS itself)."""
    return boto3.client("secretsmanager", endpoint_url=endpoint or None, region_name=region)


def fetch_private_key(secrets: Any, secret_id: str) -> Secret:
    """The PEM private key stored as the SecretString of `secret_id`.

    Raises Fatal when the secret is missing, not permitted or not a PEM private key, and Retriable
    when the service cannot be reached or throttles; no message contains any of the secret.
    """
    try:
        response = secrets.get_secret_value(SecretId=secret_id)
    except EndpointConnectionError:
        raise Retriable(f"Secrets Manager unreachable while reading {secret_id}") from None
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            raise Fatal(f"Snowflake private key secret {secret_id} does not exist") from None
        if code in _DENIED:
            raise Fatal(f"not permitted to read Snowflake private key secret {secret_id}") from None
        if code in _THROTTLED:
            raise Retriable(f"Secrets Manager {code} reading {secret_id}") from None
        raise Fatal(f"Secrets Manager error {code or 'unknown'} reading {secret_id}") from None
    except BotoCoreError as err:
        raise Retriable(f"Secrets Manager call failed reading {secret_id}: {type(err).__name__}") from None
    pem = response.get("SecretString")
    if not isinstance(pem, str) or "-----BEGIN" not in pem or "PRIVATE KEY-----" not in pem:
        raise Fatal(f"secret {secret_id} does not hold a PEM private key as its SecretString")
    return Secret(pem.strip() + "\n")

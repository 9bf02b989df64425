"""Typed, frozen configuration of the Snowflake target (built by jobs/snowflake_load.py from properties)."""

from __future__ import annotations

from dataclasses import dataclass

EMULATOR, SNOWPIPE = "emulator", "snowpipe"
MODES = (EMULATOR, SNOWPIPE)


@dataclass(frozen=True)
class SnowpipeConfig:
    """Where the real service is and how to authenticate; names only, never key material."""

    account: str
    user: str
    role: str
    url: str  # https://<account>.snowflakecomputing.com unless overridden
    private_key_secret: str  # Secrets Manager id holding the PKCS#8 PEM private key
    secrets_endpoint: str  # "" = AWS itself; the moto server locally
    secrets_region: str
    client_name: str
    close_timeout_s: int


@dataclass(frozen=True)
class SnowflakeConfig:
    """The target table, which implementation writes to it, and the channel naming."""

    mode: str  # "emulator" (default, local stand-in) or "snowpipe" (the real SDK)
    database: str
    schema: str
    table: str
    channel_prefix: str
    emulator_path: str
    emulator_max_rows_per_append: int
    snowpipe: SnowpipeConfig | None  # set when mode == "snowpipe"

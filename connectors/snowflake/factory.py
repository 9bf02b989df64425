"""Choose the channel implementation from config: the local emulator (default) or Snowpipe Streaming."""

from __future__ import annotations

from connectors.snowflake.channel import ChannelFactory, Fatal
from connectors.snowflake.config import EMULATOR, SNOWPIPE, SnowflakeConfig


def create_channel_factory(cfg: SnowflakeConfig) -> ChannelFactory:
    """A client that opens channels on the configured table; heavy imports only for the chosen mode."""
    if cfg.mode == EMULATOR:
        from connectors.snowflake.emulator import LocalChannelEmulator

        return LocalChannelEmulator(cfg.emulator_path, cfg.table, cfg.emulator_max_rows_per_append)
    if cfg.mode == SNOWPIPE:
        from connectors.snowflake.auth import fetch_private_key, secrets_client
        from connectors.snowflake.sdk import SnowpipeChannelFactory

        if cfg.snowpipe is None:
            raise Fatal("snowflake.mode=snowpipe needs the snowpipe settings (account, user, role, secret)")
        key = fetch_private_key(secrets_client(cfg.snowpipe.secrets_endpoint, cfg.snowpipe.secrets_region),
                                cfg.snowpipe.private_key_secret)
        return SnowpipeChannelFactory(cfg, key)
    raise Fatal(f"unknown snowflake.mode {cfg.mode!r}; expected emulator or snowpipe")

"""Snowflake loading: channels with offset tokens (Snowpipe Streaming, or its local emulator).

See channel.py for the exactly-once guarantee and docs/snowflake.md for operation.
"""

from connectors.snowflake.channel import (
    Channel,
    ChannelFactory,
    ChannelInvalidated,
    Fatal,
    OffsetTokenRegression,
    Retriable,
    SnowflakeError,
    channel_name,
    decode_token,
    encode_token,
    resume_offset,
)
from connectors.snowflake.config import SnowflakeConfig, SnowpipeConfig
from connectors.snowflake.factory import create_channel_factory

__all__ = [
    "Channel",
    "ChannelFactory",
    "ChannelInvalidated",
    "Fatal",
    "OffsetTokenRegression",
    "Retriable",
    "SnowflakeConfig",
    "SnowflakeError",
    "SnowpipeConfig",
    "channel_name",
    "create_channel_factory",
    "decode_token",
    "encode_token",
    "resume_offset",
]

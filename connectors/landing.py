"""Landing prefix: files dropped per feed (SFTP, Transfer Family), each read whole, continuously.

Built on Flink's FileSource with our `WholeFileFormat` (src/main/java): a CSV file, an Avro container
or an X12 interchange is one unit, decoded by the feed's decoder in Python. Each record is
(path, modified_ms, size, payload); payload is None for a file above `max_file_bytes`, which the
job dead-letters by name. Guarantee: files already read are remembered in checkpoints, so after a
restore a file is neither skipped nor read twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, StreamExecutionEnvironment

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class LandingConfig:
    """Where file drops land; one sub-folder per feed."""

    path: str
    # Empty: list the prefix once and finish (tests and benchmarks).
    monitor_interval: str
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


def _duration(text: str) -> object:
    from pyflink.common import Duration

    value, _, unit = text.strip().partition(" ")
    scale = {"ms": 1, "s": 1000, "min": 60_000}.get(unit.strip() or "s")
    if scale is None:
        raise ValueError(f"landing monitor interval {text!r}: use '<n> ms', '<n> s' or '<n> min'")
    return Duration.of_millis(int(value) * scale)


def create_landing_source(env: StreamExecutionEnvironment, cfg: LandingConfig, name: str = "landing-files"
                          ) -> DataStream:
    """A stream of whole landed files under cfg.path (recursively), as Row(path, modified_ms, size, payload)."""
    from pyflink.common import WatermarkStrategy
    from pyflink.datastream.connectors.file_system import BulkFormat, FileSource
    from pyflink.java_gateway import get_gateway

    j_format = get_gateway().jvm.com.medistream.flink.WholeFileFormat(cfg.max_file_bytes)
    builder = FileSource.for_bulk_file_format(BulkFormat(j_format), cfg.path)
    if cfg.monitor_interval:
        builder = builder.monitor_continuously(_duration(cfg.monitor_interval))
    else:
        builder = builder.process_static_file_set()
    return env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), name)

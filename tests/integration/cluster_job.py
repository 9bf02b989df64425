"""A tiny PyFlink DataStream job for the cluster tests, submitted with `python -m tools.cluster submit`.

Self-contained (the cluster's workers do not see the source tree). Modes:
- `finite <out_dir> <n> [process|thread]`: 0..n-1 from a collection, mapped to "<i>:<i*i>" at the
  submitted parallelism by Python in that execution mode, into part files under out_dir (streaming
  mode: the files are committed by the final checkpoint);
- `streaming`: an endless, slowed number sequence keyed into a running count (RocksDB state), so
  checkpoints carry keyed state; the cluster's checkpoint defaults apply;
- `fail <message>`: a map that raises ValueError(message) on its first record, with no restarts.
"""

from __future__ import annotations

import sys
import time

from pyflink.common import Configuration, Encoder, Types, WatermarkStrategy
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.datastream.connectors.file_system import FileSink
from pyflink.datastream.connectors.number_seq import NumberSequenceSource


def finite(out_dir: str, n: int, mode: str) -> None:
    conf = Configuration()
    conf.set_string("python.execution-mode", mode)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    numbers = env.from_collection(list(range(n)), type_info=Types.LONG())
    lines = numbers.map(lambda i: f"{i}:{i * i}", output_type=Types.STRING())
    lines.sink_to(FileSink.for_row_format(out_dir, Encoder.simple_string_encoder()).build())
    env.execute("cluster-test-finite")


def slow(value: int) -> tuple[int, int]:
    time.sleep(0.01)  # about 100 records/s per subtask: the job runs until cancelled, not flat out
    return value % 16, 1


def streaming() -> None:
    env = StreamExecutionEnvironment.get_execution_environment()
    source = NumberSequenceSource(0, 10**12)
    numbers = env.from_source(source, WatermarkStrategy.no_watermarks(), "numbers")
    pairs = numbers.map(slow, output_type=Types.TUPLE([Types.LONG(), Types.LONG()]))
    counts = pairs.key_by(lambda pair: pair[0]).reduce(lambda a, b: (a[0], a[1] + b[1]))
    counts.filter(lambda pair: pair[1] < 0).print()  # nothing printed: the state is what matters
    env.execute("cluster-test-streaming")


def fail(message: str) -> None:
    conf = Configuration()
    conf.set_string("restart-strategy.type", "none")
    env = StreamExecutionEnvironment.get_execution_environment(conf)

    def explode(value: int) -> int:
        raise ValueError(message)

    env.from_collection([1, 2, 3], type_info=Types.INT()).map(explode, output_type=Types.INT()).print()
    env.execute("cluster-test-fail")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "finite":
        finite(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "process")
    elif mode == "streaming":
        streaming()
    else:
        fail(sys.argv[2])

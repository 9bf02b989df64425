"""The ingest operator on the mini-cluster (thread mode), bounded input: main and dead-letter outputs."""

from __future__ import annotations

import orjson
import pytest

from infra.local import synthetic
from infra.local.synthetic import Feed

pytestmark = pytest.mark.flink

FEED = Feed("flink_claims", "claim", "kafka")


def test_operator_splits_accepted_claims_and_dead_letters(flink_process_env: None) -> None:
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment

    from jobs.ingest_operator import ACCEPTED_TYPE, CLAIMS, DEAD_LETTERS, IngestOperator

    generated = list(synthetic.generate(120, seed=5, feeds=(FEED,), mix=synthetic.Mix(1.0, 0.0, 0.0), size_kb=(1, 2),
                                        duplicate_rate=0.0,
                                        invalid_rate=0.25))
    rows = [(g.payload, f"raw.{g.feed}", 0, i, None) for i, g in enumerate(generated)]
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    raw_type = Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(), Types.INT(), Types.LONG(),
                          Types.STRING()])
    accepted = env.from_collection(rows, type_info=raw_type).process(
        IngestOperator("s3://unused/"), output_type=ACCEPTED_TYPE)
    pair = Types.TUPLE([Types.STRING(), Types.STRING()])
    tagged = (
        accepted.map(lambda r: ("accepted", r[0]), output_type=pair)
        .union(accepted.get_side_output(CLAIMS).map(lambda r: ("claim", r[0]), output_type=pair))
        .union(accepted.get_side_output(DEAD_LETTERS).map(lambda r: ("dead", r[1]), output_type=pair))
    )
    with tagged.execute_and_collect() as results:
        out = list(results)

    valid_ids = sorted(g.record_id for g in generated if g.expect == "valid")
    assert sorted(v for k, v in out if k == "accepted") == valid_ids
    assert sorted(v for k, v in out if k == "claim") == valid_ids
    letters = [orjson.loads(v) for k, v in out if k == "dead"]
    assert len(letters) == sum(g.expect == "invalid" for g in generated)
    assert {letter["payload_sha256"] for letter in letters} == {g.payload_sha256 for g in generated
                                                               if g.expect == "invalid"}
    assert all(letter["feed"] == FEED.name and letter["source"]["topic"] == f"raw.{FEED.name}" for letter in letters)

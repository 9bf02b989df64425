"""The ingest operator on the mini-cluster (thread mode), bounded input: main and dead-letter outputs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from infra.local import synthetic
from infra.local.reference import reference_documents, unknown_payer
from infra.local.synthetic import Feed
from tests.flink import thread_mode_env

pytestmark = pytest.mark.flink

FEED = Feed("flink_claims", "claim", "kafka")
SEED = 5


def test_operator_splits_accepted_records_and_dead_letters(flink_process_env: None, stack: object,
                                                           tmp_path: Path) -> None:
    """Key material comes from KMS and Secrets Manager on the local stack, as in the job."""
    from pyflink.common import Types

    from connectors.iceberg import S3Config
    from connectors.properties import LOCAL_PROPERTIES, load_phi_config, read_property_groups
    from connectors.reference import ReferenceConfig, create_reference_stream
    from jobs.ingest_operator import ACCEPTED_TYPE, DEAD_LETTERS, REFERENCE_STATE, IngestOperator
    from udfs.rows import ACCEPTED_FIELDS

    contracts = tmp_path / "feeds"
    contracts.mkdir()
    (contracts / f"{FEED.name}.yaml").write_text(yaml.safe_dump({
        "feed": FEED.name, "owner": "team@medistream.example", "record_type": "claim", "schema_version": "1.0",
        "sources": ["kafka"], "format": {"type": "json"}, "enrichment": {"on_miss": "dead_letter"},
        "phi_policy": "default-v1", "routes": ["iceberg", "archive"]}))
    reference = tmp_path / "reference"
    for dataset, document in reference_documents(SEED).items():
        (reference / dataset).mkdir(parents=True)
        (reference / dataset / "v000001.json").write_bytes(orjson.dumps(document))

    generated = list(synthetic.generate(120, seed=SEED, feeds=(FEED,), mix=synthetic.Mix(1.0, 0.0, 0.0),
                                        size_kb=(1, 2), duplicate_rate=0.0, invalid_rate=0.25))
    rows = [(g.payload, f"raw.{g.feed}", 0, i, None, 0) for i, g in enumerate(generated)]
    env = thread_mode_env()
    raw_type = Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(), Types.INT(), Types.LONG(),
                          Types.STRING(), Types.LONG()])
    updates = create_reference_stream(env, ReferenceConfig(reference.as_uri() + "/", "")).broadcast(REFERENCE_STATE)
    operator = IngestOperator("s3://unused/", str(contracts), reference.as_uri() + "/", S3Config("", "us-east-1", True),
                              load_phi_config(read_property_groups(LOCAL_PROPERTIES)))
    accepted = env.from_collection(rows, type_info=raw_type).connect(updates).process(
        operator, output_type=ACCEPTED_TYPE)
    pair = Types.TUPLE([Types.STRING(), Types.STRING()])
    payer_at = ACCEPTED_FIELDS.index("payer_name")
    tagged = (
        accepted.map(lambda r: ("accepted", f"{r[0]}|{r[payer_at]}"), output_type=pair)
        .union(accepted.get_side_output(DEAD_LETTERS).map(lambda r: ("dead", r[1]), output_type=pair))
    )
    with tagged.execute_and_collect() as results:
        out = list(results)

    missing_payer = unknown_payer(SEED)
    misses = {g.record_id for g in generated if g.expect == "valid"
              and orjson.loads(g.payload)["payer"]["payer_id"] == missing_payer}
    assert misses, "the sample should hold claims of the payer the directory lacks"
    accepted_ids = [v.split("|")[0] for k, v in out if k == "accepted"]
    assert sorted(accepted_ids) == sorted(g.record_id for g in generated if g.expect == "valid"
                                          and g.record_id not in misses)
    assert all(v.split("|")[1] != "None" for k, v in out if k == "accepted")  # enriched from the reference
    letters = [orjson.loads(v) for k, v in out if k == "dead"]
    assert {letter["record_id"] for letter in letters if letter["reason_code"] == "enrichment_miss"} == misses
    assert len(letters) == sum(g.expect == "invalid" for g in generated) + len(misses)
    assert all(letter["feed"] == FEED.name and letter["source"]["topic"] == f"raw.{FEED.name}" for letter in letters)
    assert all(letter["protected_payload"] for letter in letters)  # sealed, never in clear

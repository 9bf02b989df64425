"""What a job sets in code on a cluster is only what Managed Flink 2.2 takes from code (decision 0016)."""

from __future__ import annotations

import pytest

from connectors.properties import (
    LOCAL_PROPERTIES,
    CheckpointConfig,
    ConfigError,
    RuntimeConfig,
    S3Config,
    load_ingest_config,
    read_property_groups,
)
from jobs.runtime import (
    MANAGED_CODE_KEYS,
    MANAGED_TABLE_KEYS_TO_CONFIRM,
    check_managed_keys,
    flink_configuration,
    restore_point,
)

CHECKPOINTS = CheckpointConfig("file:///tmp/x", 5000, 60000)
S3 = S3Config(endpoint="http://127.0.0.1:1", region="us-east-1", path_style_access=True)

# Building a configuration starts PyFlink's gateway JVM; its environment must be the jobs' (PYTHONPATH with the
# project and site-packages), or a Flink test later in the same session runs Python workers without them.
pytestmark = pytest.mark.usefixtures("flink_process_env")


def _keys(runtime: RuntimeConfig, **kw: dict[str, str]) -> dict[str, str]:
    conf = flink_configuration(CHECKPOINTS, runtime, S3, "file:///tmp/sp", **kw)
    return dict(conf.to_dict())


def test_on_a_cluster_a_job_sets_only_keys_managed_flink_takes_from_code() -> None:
    cluster = RuntimeConfig(2, "thread", "medistream-ingest", deployment="cluster")
    keys = _keys(cluster, cluster_extra={"python.fn-execution.bundle.time": "5000"})
    assert keys == {"python.execution-mode": "thread", "pipeline.name": "medistream-ingest",
                    "execution.checkpointing.unaligned": "true"}
    assert set(keys) <= MANAGED_CODE_KEYS


def test_unaligned_checkpoints_are_the_default_and_a_property_turns_them_off() -> None:
    groups = read_property_groups(LOCAL_PROPERTIES)
    assert load_ingest_config(groups).checkpoints.unaligned is True
    groups["checkpoints"]["unaligned"] = "false"
    aligned = load_ingest_config(groups).checkpoints
    assert aligned.unaligned is False
    conf = flink_configuration(aligned, RuntimeConfig(1, "thread", deployment="cluster"), S3, None)
    assert dict(conf.to_dict())["execution.checkpointing.unaligned"] == "false"
    groups["checkpoints"]["unaligned"] = "sometimes"
    with pytest.raises(ConfigError, match="checkpoints.unaligned"):
        load_ingest_config(groups)


def test_embedded_a_job_still_brings_its_whole_mini_cluster_configuration() -> None:
    keys = _keys(RuntimeConfig(1, "thread"), cluster_extra={"python.fn-execution.bundle.time": "5000"})
    assert keys["execution.checkpointing.mode"] == "EXACTLY_ONCE" and keys["execution.savepoint.path"]
    assert keys["python.fn-execution.bundle.time"] == "5000" and keys["rest.bind-address"] == "127.0.0.1"
    # Exactly these embedded keys are ones Managed Flink would refuse from code: they are the cluster's.
    refused = set(keys) - MANAGED_CODE_KEYS - MANAGED_TABLE_KEYS_TO_CONFIRM
    assert "parallelism.default" in refused and "state.backend.type" in refused


def test_a_key_managed_flink_refuses_fails_before_submission_naming_it() -> None:
    with pytest.raises(ConfigError, match="python.fn-execution.bundle.time"):
        check_managed_keys({"python.execution-mode", "python.fn-execution.bundle.time"})
    with pytest.raises(ConfigError, match="state.backend.type"):
        flink_configuration(CHECKPOINTS, RuntimeConfig(1, "thread", deployment="cluster"), S3, None,
                            extra={"state.backend.type": "rocksdb"})


def test_a_cluster_job_never_restores_from_code() -> None:
    assert restore_point(RuntimeConfig(1, "thread", deployment="cluster"), CHECKPOINTS, "file:///sp", False) is None
    assert restore_point(RuntimeConfig(1, "thread"), CHECKPOINTS, "file:///sp", False) == "file:///sp"


def test_the_deployment_property_is_checked() -> None:
    groups = read_property_groups(LOCAL_PROPERTIES)
    assert load_ingest_config(groups).runtime.deployment == "embedded"
    groups["runtime"]["deployment"] = "kubernetes"
    with pytest.raises(ConfigError, match="runtime.deployment"):
        load_ingest_config(groups)

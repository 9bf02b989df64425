"""The local Flink cluster's generated configuration: the keys it must hold, loopback only, valid YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connectors.properties import S3Config
from infra.local.settings import SettingsError
from tools.cluster_config import ClusterSettings, config_yaml, distribution_java_opts, flink_config, flink_home

S3 = S3Config(endpoint="http://127.0.0.1:15000", region="us-east-1", path_style_access=True)


def conf(tmp_path: Path, **kwargs: object) -> dict[str, str]:
    return flink_config(ClusterSettings(home=tmp_path, **kwargs), S3)  # type: ignore[arg-type]


def test_every_address_and_bind_host_is_loopback(tmp_path: Path) -> None:
    generated = conf(tmp_path)
    hosts = {k: v for k, v in generated.items() if k.endswith((".address", ".bind-address", ".bind-host", ".host"))}
    assert set(hosts) >= {"jobmanager.rpc.address", "jobmanager.bind-host", "taskmanager.host",
                          "taskmanager.bind-host", "rest.address", "rest.bind-address"}
    assert set(hosts.values()) == {"127.0.0.1"}
    assert not any(v in ("0.0.0.0", "localhost", "::") for v in generated.values())  # noqa: S104


def test_state_backend_checkpoints_and_restarts(tmp_path: Path) -> None:
    generated = conf(tmp_path, checkpoints_uri="s3://medistream-warehouse/cluster-x")
    assert generated["state.backend.type"] == "rocksdb"
    assert generated["execution.checkpointing.incremental"] == "true"
    assert generated["execution.checkpointing.dir"] == "s3://medistream-warehouse/cluster-x/checkpoints"
    assert generated["execution.checkpointing.savepoint-dir"] == "s3://medistream-warehouse/cluster-x/savepoints"
    assert generated["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert generated["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert generated["restart-strategy.type"] == "exponential-delay"
    assert int(generated["restart-strategy.exponential-delay.attempts-before-reset-backoff"]) > 0
    assert generated["s3.endpoint"] == "http://127.0.0.1:15000"
    assert generated["s3.path.style.access"] == "true"


def test_memory_slots_ports_and_python(tmp_path: Path) -> None:
    generated = conf(tmp_path, rest_port=28081, rpc_port=26123, blob_port=26124)
    assert generated["jobmanager.memory.process.size"] == "1024m"
    assert generated["taskmanager.memory.process.size"] == "1728m"
    assert generated["taskmanager.numberOfTaskSlots"] == "2"
    assert (generated["rest.port"], generated["jobmanager.rpc.port"], generated["blob.server.port"]) == (
        "28081", "26123", "26124")
    assert Path(generated["python.executable"]).name.startswith("python")
    assert generated["io.tmp.dirs"] == str(tmp_path / "tmp")
    # Flink's own Prometheus reporter binds every interface: the cluster loads ours, on loopback only.
    assert generated["metrics.reporter.prom.factory.class"].endswith("LoopbackPrometheusReporterFactory")
    assert generated["metrics.reporter.prom.host"] == "127.0.0.1"


def test_yaml_reads_back_as_the_same_flat_keys(tmp_path: Path) -> None:
    generated = conf(tmp_path)
    opts = distribution_java_opts(flink_home() / "conf" / "config.yaml")
    assert "--add-opens=java.base/java.util=ALL-UNNAMED" in opts
    assert yaml.safe_load(config_yaml(generated, opts)) == {"env.java.opts.all": opts, **generated}


def test_ports_come_from_the_environment_and_are_checked(tmp_path: Path) -> None:
    env = {"MEDISTREAM_FLINK_REST_PORT": "28081", "MEDISTREAM_FLINK_CHECKPOINTS": "s3://b/p/"}
    settings = ClusterSettings.from_env(env, home=tmp_path)
    assert settings.rest_url() == "http://127.0.0.1:28081"
    assert settings.checkpoints_uri == "s3://b/p"
    with pytest.raises(SettingsError, match="MEDISTREAM_FLINK_RPC_PORT"):
        ClusterSettings.from_env({"MEDISTREAM_FLINK_RPC_PORT": "x"}, home=tmp_path)
    with pytest.raises(SettingsError, match="distinct"):
        ClusterSettings(home=tmp_path, rest_port=1, rpc_port=1)
    with pytest.raises(SettingsError, match="s3://"):
        ClusterSettings(home=tmp_path, checkpoints_uri="file:///tmp/x")
    assert ClusterSettings(home=tmp_path).processes() == ("jobmanager", "tm1", "tm2")

"""The Kinesis door's property group: defaults, refusals by key name, and the worker's settings and command."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from connectors.kinesis_pull.config import load_kinesis_pull_config
from connectors.kinesis_pull.worker import WORKER_JAR, java_command, settings_text, write_settings
from connectors.properties import LOCAL_PROPERTIES, ConfigError


def groups(**kinesis: str) -> dict[str, dict[str, str]]:
    base: dict[str, dict[str, str]] = {g["PropertyGroupId"]: dict(g["PropertyMap"])
                                       for g in json.loads(LOCAL_PROPERTIES.read_text())}
    base["kinesis_pull"] = {"stream": "device-events", "feed": "hospital_m_devices", **kinesis}
    return base


def test_defaults_and_derived_names() -> None:
    cfg = load_kinesis_pull_config(groups())
    assert (cfg.raw_topic, cfg.application, cfg.cursor_topic) == (
        "raw.hospital_m_devices", "medistream-kinesis-pull-hospital_m_devices", "medistream.kinesis.cursors")
    assert cfg.worker_id == socket.gethostname() and cfg.local and not cfg.cloudwatch_metrics
    assert cfg.endpoint.startswith("http://127.0.0.1:")


@pytest.mark.parametrize(("change", "named"), [
    ({"shards": "2"}, "kinesis_pull.shards"),
    ({"stream": "a b"}, "kinesis_pull.stream"),
    ({"feed": "Hospital-M"}, "kinesis_pull.feed"),
    ({"max.records": "0"}, "kinesis_pull.max.records"),
    ({"cloudwatch.metrics": "yes"}, "kinesis_pull.cloudwatch.metrics"),
    ({"heap": "lots"}, "kinesis_pull.heap"),
])
def test_refusals_name_the_key(change: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", "[.]")):
        load_kinesis_pull_config(groups(**change))


def test_plain_http_only_to_loopback_and_no_msk_iam_yet() -> None:
    remote = groups()
    remote["phi"]["endpoint"] = "http://kinesis.example.com"
    with pytest.raises(ConfigError, match="loopback"):
        load_kinesis_pull_config(remote)
    msk: Any = groups()
    msk["kafka"]["security"] = "msk-iam"
    with pytest.raises(ConfigError, match="msk-iam"):
        load_kinesis_pull_config(msk)


def test_kcl_floor_and_max_records_cap() -> None:
    cfg = load_kinesis_pull_config(groups(**{"idle.between.reads.ms": "50", "max.records": "50000"}))
    assert (cfg.idle_between_reads_ms, cfg.max_records) == (200, 10_000)


def test_settings_file_is_private_and_the_command_is_json_over_http1(tmp_path: Path) -> None:
    cfg = load_kinesis_pull_config(groups(**{"worker.id": "w1"}))
    path = write_settings(cfg, tmp_path / "run")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == settings_text(cfg)
    assert "raw.topic=raw.hospital_m_devices\n" in path.read_text() and "worker.id=w1\n" in path.read_text()
    kcl = tmp_path / "kcl"
    with pytest.raises(ConfigError, match="./medistream setup"):
        java_command(cfg, path, kcl)
    kcl.mkdir()
    (kcl / WORKER_JAR).write_bytes(b"")
    command = java_command(cfg, path, kcl)
    assert "-Daws.cborEnabled=false" in command and command[-1] == str(path) and f"{kcl}/*" in command

"""Property groups -> typed config: the shipped file loads, and every bad key is named."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from connectors.properties import LOCAL_PROPERTIES, ConfigError, load_ingest_config, read_property_groups


def groups() -> dict[str, dict[str, str]]:
    return read_property_groups(LOCAL_PROPERTIES)


def test_local_properties_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))
    cfg = load_ingest_config(groups())
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert cfg.iceberg.uri == f"jdbc:sqlite:{tmp_path}/iceberg/catalog.db"
    assert cfg.checkpoints.directory == f"file://{tmp_path}/checkpoints"
    assert cfg.runtime.python_execution_mode == "thread"


@pytest.mark.parametrize(
    ("group", "key", "value", "message"),
    [
        ("kafka", "bootstrap.servers", None, "missing property 'kafka.bootstrap.servers'"),
        ("iceberg", "catalog-impl", None, "missing property 'iceberg.catalog-impl'"),
        ("checkpoints", "interval.ms", "soon", "'checkpoints.interval.ms' must be a positive integer"),
        ("runtime", "python.execution-mode", "fast", "'runtime.python.execution-mode' is 'fast': the ingest job runs "
                                                     "in thread mode only"),
        ("runtime", "python.execution-mode", "process", "'runtime.python.execution-mode' is 'process': the ingest job "
                                                        "runs in thread mode only"),
        ("s3", "path.style.access", "yes", "'s3.path.style.access' must be true or false"),
        ("archive", "path", "${NOT_SET_ANYWHERE}", "unset environment variable NOT_SET_ANYWHERE"),
    ],
)
def test_bad_keys_are_named(group: str, key: str, value: str | None, message: str) -> None:
    bad = copy.deepcopy(groups())
    if value is None:
        del bad[group][key]
    else:
        bad[group][key] = value
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        load_ingest_config(bad)


def test_missing_group_is_named() -> None:
    bad = groups()
    del bad["landing"]
    with pytest.raises(ConfigError, match="missing property group 'landing'"):
        load_ingest_config(bad)


def test_unreadable_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_property_groups(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_property_groups(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"kafka": {}}))
    with pytest.raises(ConfigError, match="list of property groups"):
        read_property_groups(wrong)


GLUE = "org.apache.iceberg.aws.glue.GlueCatalog"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"catalog-impl": "org.apache.iceberg.hive.HiveCatalog"}, "'iceberg.catalog-impl' is 'org.apache.iceberg.hive"
                                                                   ".HiveCatalog'; the jobs know"),
        ({"catalog-impl": GLUE}, "'iceberg.uri' is for the JDBC catalog; the Glue catalog takes none"),
        ({"uri": None}, "missing property 'iceberg.uri'"),
        ({"glue.endpoint": "http://127.0.0.1:15000"}, "'iceberg.glue.endpoint' is for the Glue catalog"),
    ],
)
def test_incomplete_or_unknown_catalogs_are_named(changes: dict[str, str | None], message: str) -> None:
    bad = copy.deepcopy(groups())
    for key, value in changes.items():
        if value is None:
            del bad["iceberg"][key]
        else:
            bad["iceberg"][key] = value
    with pytest.raises(ConfigError, match=message):
        load_ingest_config(bad)


def test_the_glue_catalog_needs_no_uri_and_takes_the_local_endpoint_only_when_given() -> None:
    from connectors.iceberg import catalog_options

    glue = copy.deepcopy(groups())
    del glue["iceberg"]["uri"]
    glue["iceberg"] |= {"catalog-impl": GLUE, "glue.endpoint": "http://127.0.0.1:15000"}
    cfg = load_ingest_config(glue)
    options = catalog_options(cfg.iceberg, cfg.s3)
    assert options["glue.endpoint"] == "http://127.0.0.1:15000" and "uri" not in options
    assert options["io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO" and options["client.region"] == "us-east-1"
    assert options["glue.skip-archive"] == "true"


def test_checkpoints_dir_is_needed_embedded_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jobs.partner_delivery import load_delivery_config

    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))
    without = copy.deepcopy(groups())
    del without["checkpoints"]["dir"]
    with pytest.raises(ConfigError, match="missing property 'checkpoints.dir'"):
        load_ingest_config(without)
    without["runtime"]["deployment"] = "cluster"  # the cluster keeps checkpoints: nothing to name
    assert load_ingest_config(without).checkpoints.directory == ""
    assert load_delivery_config(without).checkpoints.directory == ""
    embedded = load_delivery_config(groups()).checkpoints.directory
    assert embedded == f"file://{tmp_path}/checkpoints-partner-delivery"


def test_the_partner_delivery_job_takes_the_kafka_auth_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from jobs.partner_delivery import load_delivery_config

    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))
    assert load_delivery_config(groups()).kafka_auth.security == "plaintext"
    iam = copy.deepcopy(groups())
    iam["kafka"]["security"] = "msk-iam"
    assert load_delivery_config(iam).kafka_auth.security == "msk-iam"

"""Where the ingest API listens: `ingest_api.bind.host`, 127.0.0.1 unless a deployment sets it (a Fargate task: 0.0.0.0,
so that its load balancer can connect). Local runs never set it, so every local server stays on loopback."""

from __future__ import annotations

import json

import pytest

from connectors.ingest_api.server import LOOPBACK, bind_host, uvicorn_config
from connectors.properties import LOCAL_PROPERTIES, REPO_ROOT, ConfigError, read_property_groups


def test_local_properties_bind_loopback_only() -> None:
    assert bind_host({}) == bind_host({"ingest_api": {}}) == bind_host({"ingest_api": {"bind.host": ""}}) == LOOPBACK
    assert bind_host(read_property_groups(LOCAL_PROPERTIES)) == LOOPBACK
    for overlay in sorted((REPO_ROOT / "conf" / "environments").glob("*.json")):  # no environment file moves it
        assert "bind.host" not in json.dumps(json.loads(overlay.read_text()).get("ingest_api") or {}), overlay.name


def test_a_deployment_sets_the_address_and_only_an_address() -> None:
    assert bind_host({"ingest_api": {"bind.host": "0.0.0.0"}}) == "0.0.0.0"  # noqa: S104 - a task's interface
    assert bind_host({"ingest_api": {"bind.host": " 10.40.1.7 "}}) == "10.40.1.7"
    assert bind_host({"ingest_api": {"bind.host": "::"}}) == "::"
    for bad in ("localhost", "api.example.com", "0.0.0.0/0", "256.1.1.1"):
        with pytest.raises(ConfigError, match=r"ingest_api\.bind\.host"):
            bind_host({"ingest_api": {"bind.host": bad}})


def test_the_server_listens_where_it_is_told_and_on_loopback_by_default() -> None:
    default = uvicorn_config(object(), 0, 5.0)
    assert default.host == LOOPBACK
    sock = default.bind_socket()  # the socket uvicorn would serve on (port 0: any free port)
    try:
        assert sock.getsockname()[0] == LOOPBACK
    finally:
        sock.close()
    everywhere = "0.0.0.0"  # noqa: S104 - a task's interface; not bound here: the tests' machine keeps to loopback
    told = uvicorn_config(object(), 0, 5.0, host=bind_host({"ingest_api": {"bind.host": everywhere}}))
    assert told.host == everywhere

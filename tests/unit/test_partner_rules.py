"""The partner stand-in's pure rules: OAuth2 token requests, delivery body checks, deterministic rejects."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from infra.local.partner.rules import (
    PartnerConfig,
    auth_failure,
    client_credentials_failure,
    rejected,
    validation_error,
)

OAUTH = PartnerConfig(client_id="test-client", client_secret="test-secret")
GRANT = {"grant_type": "client_credentials"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_client_credentials_accepts_basic_auth_or_form_credentials() -> None:
    assert client_credentials_failure(OAUTH, basic("test-client", "test-secret"), GRANT) is None
    form = GRANT | {"client_id": "test-client", "client_secret": "test-secret"}
    assert client_credentials_failure(OAUTH, {}, form) is None


@pytest.mark.parametrize(("headers", "form"), [
    (basic("test-client", "wrong"), GRANT),
    (basic("other-client", "test-secret"), GRANT),
    ({}, GRANT),  # no credentials at all
    ({}, GRANT | {"client_id": "test-client"}),  # no secret
    ({}, GRANT | {"client_id": "test-client", "client_secret": "wrong"}),
    ({"Authorization": "Basic !!not-base64!!"}, GRANT),
    ({"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}, GRANT),  # not UTF-8
])
def test_client_credentials_refuses_a_bad_client(headers: dict[str, str], form: dict[str, str]) -> None:
    assert client_credentials_failure(OAUTH, headers, form) == "invalid_client"


def test_basic_auth_wins_over_form_credentials() -> None:
    form = GRANT | {"client_id": "test-client", "client_secret": "test-secret"}
    assert client_credentials_failure(OAUTH, basic("test-client", "wrong"), form) == "invalid_client"


@pytest.mark.parametrize("form", [{}, {"grant_type": "password"}, {"grant_type": "authorization_code"}])
def test_client_credentials_refuses_another_grant_type(form: dict[str, str]) -> None:
    assert client_credentials_failure(OAUTH, basic("test-client", "test-secret"), form) == "unsupported_grant_type"


def test_client_credentials_without_oauth_configured_refuses_everyone() -> None:
    plain = PartnerConfig()
    assert client_credentials_failure(plain, basic("", ""), GRANT) == "invalid_client"
    assert client_credentials_failure(plain, {}, GRANT) == "invalid_client"


def test_client_id_and_secret_go_together() -> None:
    with pytest.raises(ValueError, match="client_id and client_secret"):
        PartnerConfig(client_id="test-client")
    with pytest.raises(ValueError, match="client_id and client_secret"):
        PartnerConfig(client_secret="test-secret")


def test_oauth_access_tokens_unknown_expired_and_valid() -> None:
    issued = {"tok-live": 1_000.0 + 60, "tok-old": 1_000.0 - 1}
    assert auth_failure(OAUTH, {}, b"", 1_000.0, issued) == "unknown_access_token"
    assert auth_failure(OAUTH, {"Authorization": "Bearer tok-other"}, b"", 1_000.0, issued) == "unknown_access_token"
    assert auth_failure(OAUTH, {"Authorization": "Basic tok-live"}, b"", 1_000.0, issued) == "unknown_access_token"
    assert auth_failure(OAUTH, {"Authorization": "Bearer tok-old"}, b"", 1_000.0, issued) == "expired_access_token"
    assert auth_failure(OAUTH, {"Authorization": "Bearer tok-live"}, b"", 1_000.0, issued) is None
    # The expiry instant itself is already expired.
    assert auth_failure(OAUTH, {"Authorization": "Bearer tok-live"}, b"", 1_060.0, issued) == "expired_access_token"


@pytest.mark.parametrize("doc", [
    {"business_key": "bk-1", "version": 1},  # no payload is fine
    {"business_key": "bk-1", "record_id": "rec-1"},  # record id instead of a version
    {"business_key": "bk-1", "version": 2, "payload": {}},
    {"business_key": "bk-1", "version": 2, "payload": {"amount": "1.00"}},
])
def test_validation_accepts(doc: dict[str, Any]) -> None:
    assert validation_error(doc) is None


@pytest.mark.parametrize(("doc", "problem"), [
    ([], "body must be a JSON object"),
    ("text", "body must be a JSON object"),
    ({"version": 1}, "business_key must be a non-empty string"),
    ({"business_key": "", "version": 1}, "business_key must be a non-empty string"),
    ({"business_key": 7, "version": 1}, "business_key must be a non-empty string"),
    ({"business_key": "bk-1"}, "version (integer) or record_id (string) is required"),
    ({"business_key": "bk-1", "version": True}, "version (integer) or record_id (string) is required"),
    ({"business_key": "bk-1", "version": "1"}, "version (integer) or record_id (string) is required"),
    ({"business_key": "bk-1", "record_id": 5}, "version (integer) or record_id (string) is required"),
    ({"business_key": "bk-1", "version": 1, "payload": []}, "payload must be a JSON object"),
    ({"business_key": "bk-1", "version": 1, "payload": "x"}, "payload must be a JSON object"),
    ({"business_key": "bk-1", "version": 1, "payload": None}, "payload must be a JSON object"),
])
def test_validation_refuses(doc: Any, problem: str) -> None:
    assert validation_error(doc) == problem


def test_rejected_is_deterministic_and_near_the_fraction() -> None:
    keys = [f"claim:TEST-{i:05d}" for i in range(4000)]
    config = PartnerConfig(reject_fraction=0.25)
    first = [rejected(config, k) for k in keys]
    assert first == [rejected(PartnerConfig(reject_fraction=0.25, seed=99), k) for k in keys]  # not seeded
    assert 0.22 <= sum(first) / len(keys) <= 0.28
    assert not any(rejected(PartnerConfig(), k) for k in keys)
    assert all(rejected(PartnerConfig(reject_fraction=1.0), k) for k in keys)
    # A larger fraction rejects a superset: raising it never un-rejects a key.
    wider = [rejected(PartnerConfig(reject_fraction=0.5), k) for k in keys]
    assert all(w for f, w in zip(first, wider, strict=True) if f)


@pytest.mark.parametrize("kwargs", [{"reject_fraction": -0.1}, {"reject_fraction": 1.5}, {"token_ttl_s": 0}])
def test_config_refuses_bad_reject_fraction_or_ttl(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="reject_fraction"):
        PartnerConfig(**kwargs)

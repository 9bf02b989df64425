"""Schemathesis against the ingestion API's own OpenAPI document, loaded from the live `/openapi.json`.

Schemathesis' engine (what `schemathesis run` drives) runs the examples, coverage and fuzzing phases
over every operation, with positive and negative (fuzzed) data, bounded: `MAX_EXAMPLES` per operation
and phase, a fixed seed, deterministic generation, no example database. Checked: no 5xx, only documented
status codes, content types, headers and bodies, negative data refused, required headers, undocumented
methods refused with Allow. Once with the feed's key (a per-case auth provider), once without any key:
then every request to a REST feed must be 401. Accepted fuzz records land on the run's own raw topics.

The engine, not `schema.parametrize()`: the schema exists only once the server runs, and schemathesis'
fixture-based loader (`schemathesis.pytest.from_fixture`) fails on pytest 9 (it sets `Function._nodeid`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from connectors.ingest_api.app import ApiSettings
from tests.integration.ingest_api_harness import KAFKA_ONLY, Api, serving_api

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 100
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "negative_data_rejection",
          "missing_required_header", "unsupported_method", "allow_header_conformance")


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 20261122,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS},
                   # A batch above the document's maxItems (max_batch) is schema-violating and refused with
                   # the documented 413 ("body or batch too large"): a rejection, as 400 or 422 would be.
                   # Whether the generator reaches such a case depends on the run's feed names (random).
                   "negative_data_rejection": {"enabled": True, "expected-statuses": [
                       "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]}},
        "request-timeout": 20,
        "max-failures": 50,
    })


@dataclass
class Run:
    """What one engine run found: failures (check, title, operation, status) and the statuses per request path."""

    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        """How many requests the run sent."""
        return sum(self.statuses.values())


@pytest.fixture(scope="module")
def served(stack: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API for the module, with the shipped default rate limits (so 429s do not dominate)."""
    with serving_api(tmp_path_factory.mktemp("schemathesis"), ApiSettings(max_batch=50, body_timeout_s=5)) as api:
        yield api


def _feed_of(api: Api, path: str) -> str | None:
    """The shipped feed a records path names, if it is one of this run's."""
    parts = unquote(path).split("/")
    if len(parts) == 5 and parts[:3] == ["", "v1", "feeds"] and parts[4] == "records":
        shipped = parts[3].removeprefix(f"t{api.run}_")
        return shipped if parts[3] == api.feed(shipped) and shipped in api.keys else None
    return None


def run_schemathesis(api: Api, with_key: bool) -> Run:
    """One engine run over the live document; with_key: each request carries its feed's key."""
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", config=_config())
    schema.config.update(base_url=api.url)

    class FeedKey:
        """The key of the feed the case posts to (none for an unknown feed)."""

        def get(self, case: Any, _ctx: Any) -> str | None:
            feed = str((case.path_parameters or {}).get("feed", ""))
            shipped = feed.removeprefix(f"t{api.run}_")
            return api.keys.get(shipped) if feed == api.feed(shipped) else None

        def set(self, case: Any, data: str | None, _ctx: Any) -> None:
            if data is not None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    class NoKey:
        """No credentials at all, whatever the generator put in."""

        def get(self, _case: Any, _ctx: Any) -> str:
            return ""

        def set(self, case: Any, _data: str, _ctx: Any) -> None:
            case.headers = {k: v for k, v in (case.headers or {}).items()
                            if k.lower() not in ("authorization", "x-api-key")}

    schema.auth(refresh_interval=None)(FeedKey if with_key else NoKey)
    run = Run()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        interaction = event.recorder.interactions.get(case_id)
                        status = interaction.response.status_code if interaction and interaction.response else None
                        run.failures.append(f"{check.name}: {failure.title} [{event.recorder.label} -> {status}]")
            for interaction in event.recorder.interactions.values():
                if interaction.response is not None:
                    path = urlsplit(interaction.request.uri).path
                    run.statuses[(interaction.request.method, path, interaction.response.status_code)] += 1
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {type(event.value).__name__}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {type(event.exception).__name__}: {event.exception}")
    return run


def test_every_operation_conforms_to_the_document_with_the_feeds_key(served: Api) -> None:
    run = run_schemathesis(served, with_key=True)
    assert run.errors == [] and sorted(set(run.failures)) == []
    accepted = sum(n for (method, _path, status), n in run.statuses.items() if method == "POST" and status == 202)
    assert accepted > 0 and run.requests > 100  # the key opened the door: fuzz records were accepted
    assert not any(status >= 500 for (_m, _p, status) in run.statuses)


def test_without_a_key_every_rest_feed_answers_401(served: Api) -> None:
    run = run_schemathesis(served, with_key=False)
    assert run.errors == [] and sorted(set(run.failures)) == []
    to_rest_feeds = Counter(status for (method, path, status), n in run.statuses.items()
                            for _ in range(n) if method == "POST" and _feed_of(served, path) not in (None, KAFKA_ONLY))
    assert set(to_rest_feeds) == {401} and to_rest_feeds[401] > 20
    assert not any(status >= 500 for (_m, _p, status) in run.statuses)

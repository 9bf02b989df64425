"""The ops console's routes (Starlette's TestClient): 401 without a token, panels that name an absent back end
instead of failing, a viewer's replay refused with 403 and audited, a replay without a reason refused.

Every back end here is absent (nothing listens on its loopback port): the cluster's REST API, the Kafka
broker, Prometheus, and DynamoDB for the audit log where a test shows that a replay that cannot be audited
does not happen. Where a test needs the audit entry itself it keeps the log in an in-test recorder, as
tests/unit/test_job_control.py does; tests/integration/test_ops_console.py does it all against the local
stack in a real browser.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from starlette.testclient import TestClient

from connectors.audit import AuditLog
from connectors.iceberg import S3Config
from infra.local.process import free_loopback_port as free_port
from tests.unit.test_job_control import AuditRecorder  # the audit log's append, kept in a list
from tools.cluster_config import ClusterSettings
from tools.dlq import replay
from tools.dlq_units import DlqConfig
from tools.job_backend_cluster import LocalClusterBackend
from tools.ops_console.app import Sources, build_app
from tools.ops_console.auth import Principal, Tokens, TokensError, digest, parse_tokens
from tools.ops_console.pages import sparkline
from tools.ops_console.panels import Panel, Prometheus, Recent, dead_letter_counts

VIEWER, OPERATOR = "mso_viewer-token-for-tests-000000000000", "mso_operator-token-for-tests-0000000000"
PAGES = ("/", "/jobs", "/dead-letters", "/feeds", "/lineage", "/audit")


def absent_audit_log() -> AuditLog:
    """A real AuditLog whose DynamoDB endpoint does not answer (one attempt, so the test is quick)."""
    client = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1))
    return AuditLog(client, "medistream-audit", "unit")


def sources(audit: Any = None) -> Sources:
    doc = {digest(VIEWER): {"user": "vera", "role": "viewer"}, digest(OPERATOR): {"user": "otto", "role": "operator"}}
    ports = iter([free_port() for _ in range(3)])
    cluster = ClusterSettings.from_env({}, rest_port=next(ports))
    dlq = DlqConfig(f"127.0.0.1:{next(ports)}", "medistream.dlq", "medistream.dlq.replays", "s3://landing/",
                    S3Config(endpoint="", region="us-east-1", path_style_access=True), timeout_s=1.0)
    return Sources(tokens=Tokens(lambda: parse_tokens(doc, "unit")), backend=lambda: LocalClusterBackend(cluster),
                   dlq_config=lambda: dlq, prometheus=Prometheus(f"http://127.0.0.1:{next(ports)}", timeout_s=1),
                   audit=(lambda: audit) if audit is not None else absent_audit_log, replay=replay)


@pytest.fixture
def client() -> TestClient:
    return TestClient(build_app(sources()), base_url="http://127.0.0.1:18096")


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("token", [None, "mso_not-a-token", "Bearer-less"])
def test_without_a_valid_token_every_page_is_401_and_shows_the_sign_in(client: TestClient, path: str,
                                                                         token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.get(path, headers=headers)
    assert answer.status_code == 401 and 'name=token' in answer.text
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_every_page_names_each_absent_back_end_and_none_answers_500(client: TestClient) -> None:
    texts = {}
    for path in PAGES:
        answer = client.get(path, headers={"Authorization": f"Bearer {VIEWER}"})
        assert answer.status_code == 200, path
        assert "default-src 'none'" in answer.headers["content-security-policy"] and "<script" not in answer.text
        texts[path] = answer.text
    assert "Flink cluster unreachable at http://127.0.0.1:" in texts["/jobs"]
    assert "Kafka unreachable (DlqError: Kafka broker unreachable" in texts["/dead-letters"]
    assert texts["/feeds"].count("Prometheus unreachable at http://127.0.0.1:") == 3  # feeds, partners, alerts
    assert "DynamoDB (audit log) unreachable" in texts["/audit"]
    assert all(marker in texts["/"] for marker in ("Flink cluster unreachable", "Kafka unreachable",
                                                   "Prometheus unreachable", "DynamoDB (audit log) unreachable"))
    assert "vera (viewer)" in texts["/"]


def test_sign_in_sets_a_strict_http_only_cookie_and_is_audited() -> None:
    audit = AuditRecorder()
    client = TestClient(build_app(sources(audit)), base_url="http://127.0.0.1:18096")
    assert client.post("/login", data={"token": "mso_wrong"}).status_code == 401
    answer = client.post("/login", data={"token": OPERATOR}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert [(e.actor, e.role, e.action, e.decision) for e in audit.events] == [
        ("otto", "operator", "ops_console_login", "grant")]
    assert client.get("/audit").status_code == 200  # the cookie the sign-in set


def test_a_viewers_replay_is_403_and_the_refusal_is_audited_before_any_back_end_is_read() -> None:
    audit = AuditRecorder()
    client = TestClient(build_app(sources(audit)), base_url="http://127.0.0.1:18096")
    answer = client.post("/dead-letters/replay", headers={"Authorization": f"Bearer {VIEWER}"},
                         data={"kind": "feed", "target": "hospital_a_claims", "reason": "schema.schema_violation",
                               "why": "contract fixed in INC-7"})
    assert answer.status_code == 403 and "may not replay dead letters. The refusal is audited" in answer.text
    (event,) = audit.events
    assert (event.actor, event.role, event.action, event.decision) == ("vera", "viewer", "job_replay", "deny")
    assert "INC-7" in event.reason and "hospital_a_claims" in event.reason


@pytest.mark.parametrize(("form", "headers", "status"), [
    ({"kind": "feed", "target": "hospital_a_claims", "reason": "schema.schema_violation", "why": ""}, {}, 400),
    ({"kind": "table", "target": "x", "reason": "y", "why": "z"}, {}, 400),
    ({"kind": "feed", "target": "Robert Smith", "reason": "y", "why": "z"}, {}, 400),
    ({"kind": "feed", "target": "hospital_a_claims", "reason": "y", "why": "z"}, {"Origin": "http://evil.example"},
     403),
])
def test_a_replay_without_a_reason_a_known_target_or_from_another_site_is_refused(
        form: dict[str, str], headers: dict[str, str], status: int) -> None:
    audit = AuditRecorder()
    client = TestClient(build_app(sources(audit)), base_url="http://127.0.0.1:18096")
    answer = client.post("/dead-letters/replay", data=form, headers={"Authorization": f"Bearer {OPERATOR}", **headers})
    assert answer.status_code == status and audit.events == []


def test_a_replay_that_cannot_be_audited_does_not_happen(client: TestClient) -> None:
    answer = client.post("/dead-letters/replay", headers={"Authorization": f"Bearer {VIEWER}"},
                         data={"kind": "feed", "target": "hospital_a_claims", "reason": "schema_violation", "why": "x"})
    assert answer.status_code == 503 and "Nothing replayed: a back end did not answer" in answer.text


def test_dead_letters_are_shown_as_counts_by_reason_never_an_id_detail_or_pointer() -> None:
    letters = [{"dead_letter_id": f"{i:032x}", "feed": "f", "stage": "schema", "reason_code": "schema_violation",
                "detail": "$.member.name", "payload_sha256": "ab" * 32, "record_id": f"rec-{i}",
                "source": {"kind": "kafka", "topic": "raw.f", "partition": 0, "offset": i}, "failed_at_ms": i}
               for i in range(3)]
    rows = dead_letter_counts(letters, "feed", "failed_at_ms")
    assert rows == [{"feed": "f", "stage": "schema", "reason": "schema_violation", "count": 3,
                     "newest": "1970-01-01T00:00:00Z"}]


def test_tokens_are_checked_by_digest_and_a_revoked_one_stops_working_after_the_refresh() -> None:
    doc: dict[str, Any] = {digest(VIEWER): {"user": "vera", "role": "viewer"}}
    tokens = Tokens(lambda: parse_tokens(doc, "unit"), refresh_s=0)
    assert tokens.who(VIEWER) == Principal("vera", "viewer") and tokens.who(OPERATOR) is None
    doc.clear()
    assert tokens.who(VIEWER) is None
    with pytest.raises(TokensError, match="user 'x'"):
        parse_tokens({digest(VIEWER): {"user": "x", "role": "admin"}}, "unit")


def test_a_sparkline_is_an_svg_polyline_scaled_to_its_box() -> None:
    svg = sparkline([0.0, 2.0, 1.0], width=100, height=20)
    assert svg.startswith("<svg") and 'points="0.0,18.0 50.0,2.0 100.0,10.0"' in svg
    assert sparkline([]) == "" and 'points="0.0,18.0 100.0,18.0"' in sparkline([0.0, 0.0], width=100, height=20)


def test_a_panel_is_read_once_per_interval_and_an_unreachable_one_is_not_kept() -> None:
    reads: list[bool] = [False, True, True]  # the first read finds the back end down

    def read() -> Panel:
        ok = reads.pop(0)
        return Panel("Dead letters", ok, [{"n": len(reads)}] if ok else [], error=None if ok else "down", note="topic")

    recent = Recent(read, ttl_s=60)
    assert not recent.get().ok  # not kept: the next page asks again
    first = recent.get()
    assert first.ok and first.rows == [{"n": 1}] and first.note is not None and "read at" in first.note
    assert recent.get() is first and reads == [True]


def test_the_lineage_page_shows_each_job_around_a_dataset_from_the_lineage_store(tmp_path: Any) -> None:
    """A real lineage store (its own process on a free loopback port) holding the ingest and partner jobs' events."""
    import dataclasses

    from connectors.lineage.datasets import openlineage_dataset
    from connectors.lineage.emitter import LineageEmitter
    from connectors.properties import LOCAL_PROPERTIES, read_property_groups
    from infra.local import lineage_store
    from tools.lineage import job_datasets

    url = lineage_store.start(tmp_path, free_port())
    try:
        groups = read_property_groups(LOCAL_PROPERTIES)
        emitter = LineageEmitter(url)  # the jobs' own sending path
        for job in ("ingest", "partner_delivery"):
            inputs, outputs = job_datasets(job, groups)
            emitter.run(job, [openlineage_dataset(d, "input") for d in inputs],
                        [openlineage_dataset(d, "output") for d in outputs]).start()
        assert emitter.close(timeout_s=10) == {"sent": 2, "failed": 0, "dropped": 0}
        client = TestClient(build_app(dataclasses.replace(sources(), lineage_url=url)),
                            base_url="http://127.0.0.1:18096")
        viewer = {"Authorization": f"Bearer {VIEWER}"}
        page = client.get("/lineage", params={"dataset": "kafka://127.0.0.1:19092/curated.partner.clearwater_health"},
                          headers=viewer).text
        assert "medistream/ingest" in page and "medistream/partner_delivery" in page
        assert "raw.hospital_a_claims" in page and "https://api.clearwater-health.example/v2/submissions" in page
        assert "eligibility" not in page.split('id="lineage"')[1]  # not upstream of the partner topic
        everything = client.get("/lineage", headers=viewer).text
        assert "raw.clearinghouse_c_eligibility" in everything  # without a dataset: the whole graph
    finally:
        lineage_store.stop(tmp_path)
    off = client.get("/lineage", headers=viewer).text
    assert "the lineage store unreachable" in off
    assert "lineage is off" in TestClient(build_app(sources()), base_url="http://127.0.0.1:18096").get(
        "/lineage", headers=viewer).text

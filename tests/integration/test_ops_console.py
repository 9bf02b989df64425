"""The ops console in a real headless browser (Debian's chromium through chromium-driver) over the local stack.

The console runs as the demo starts it (`medistream ops serve`, a child process on a free loopback port)
with this run's own properties: a dead-letter topic, replay ledger, partner dead-letter topic, audit chain and token
secret of its own. Dead letters are written as the job writes them (tests/integration/test_dlq.py's
helpers: raw units on raw.<feed>, dead letters in a Kafka transaction); tokens are made by
`medistream ops token add`'s function in the local Secrets Manager.

Prometheus is a real one of the test's own (Debian's binary, free loopback ports, rules from
ops/alerts.yaml) that scrapes one loopback endpoint serving the series the console reads under the
names Flink's reporter gives them (a feed's recordsIn, a partner's delivered count and an open
circuit), so the feeds, partners and alerts panels show real query results in a few seconds instead of
the minute a job takes to start. The cluster's REST API is not started here: the jobs panel shows
its "unreachable" state, as an operator would see it.

A viewer signs in, sees the panels, and is refused a replay (403, audited); an operator replays the same
dead letters (the units reach the raw topic again, audited before and after). Every page is rendered
and the repo's PHI leak scanner runs over its HTML with the raw units' PHI, the dead-letter ids and
digests and the record ids as needles. Screenshots go to $MEDISTREAM_SCREENSHOTS (docs/ops-console when
making the README's pictures), else to the test's temporary folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.audit import load_audit_settings, open_audit_log
from connectors.kafka import create_missing_topics
from connectors.kms import aws_client
from connectors.metrics.targets import announce
from connectors.properties import load_phi_config, medistream_home, read_property_groups
from infra.alert_rules import (
    ACCEPTED,
    DEAD_LETTERS,
    PARTNER_CIRCUIT,
    PARTNER_DELIVERED,
    PARTNER_P95,
    RECORDS_IN,
    SINK_DELAY,
)
from infra.dashboards import PANELS as DASHBOARD_PANELS
from infra.local import prometheus
from infra.local.process import free_loopback_port
from tests.integration.conftest import read_topic, wait_for
from tests.integration.test_dlq import BOOTSTRAP, letter, produce, write_dead_letters, write_properties
from tools.checks.leak_scan import LeakScanner, Needles
from tools.dlq_units import REPLAY_HEADER
from tools.ops_console.auth import add_token
from tools.ops_console.command import start_background, stop_background

pytestmark = pytest.mark.integration
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PATIENT = "Quentavious Brightwater"  # synthetic PHI inside a raw unit: must never reach a page
PAGES = {"/": "overview", "/jobs": "jobs", "/dead-letters": "dead-letters", "/feeds": "feeds",
         "/dashboards": "dashboards", "/audit": "audit"}


@dataclass
class Console:
    url: str
    feed: str
    partner: str
    raw_topic: str
    viewer: str
    operator: str
    groups: dict[str, dict[str, str]]
    needles: list[str]


def stand_in_series(feed: str, partner: str, stop: threading.Event) -> int:
    """A loopback endpoint serving the console's series under Flink's reporter names, counting up; its port."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    records = Gauge(RECORDS_IN, "records in", ["feed", "job_name"], registry=registry)
    delivered = Gauge(PARTNER_DELIVERED, "delivered", ["partner", "job_name"], registry=registry)
    circuit = Gauge(PARTNER_CIRCUIT, "circuit", ["partner", "job_name"], registry=registry)
    circuit.labels(partner, "partner-delivery").set(2)  # open: PartnerCircuitOpen goes pending
    # A few more of the dashboards' series, so their page draws lines (the stand-in's numbers, no job's).
    accepted = Gauge(ACCEPTED, "accepted", ["feed", "job_name"], registry=registry)
    dead = Gauge(DEAD_LETTERS, "dead letters", ["feed", "reason", "job_name"], registry=registry)
    Gauge(SINK_DELAY, "delay", ["sink"], registry=registry).labels("iceberg_claims").set(5.2)
    Gauge(PARTNER_P95, "p95", ["partner", "job_name"], registry=registry).labels(partner, "partner-delivery").set(1800)

    port = free_loopback_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)

    def count() -> None:
        while not stop.wait(0.5):
            records.labels(feed, "ingest").inc(20)
            accepted.labels(feed, "ingest").inc(19)
            dead.labels(feed, "schema_violation", "ingest").inc(1)
            delivered.labels(partner, "partner-delivery").inc(6)
        server.shutdown()

    threading.Thread(target=count, daemon=True).start()
    return port


@pytest.fixture
def console(stack: object, run_id: str, tmp_path: Path) -> Iterator[Console]:
    feed, partner = f"t{run_id}_claims", f"t{run_id}_partner"
    raw_topic, dlq_topic, partner_dlq = f"raw.{feed}", f"dlq.t{run_id}", f"dlq.partner.t{run_id}"
    create_missing_topics(BOOTSTRAP, [raw_topic, dlq_topic, partner_dlq])
    units = [b'{"record_type": "claim", "patient": "' + PATIENT.encode() + b'", "n": %d}' % i for i in range(3)]
    offsets = [produce(raw_topic, 0, unit, key=f"k{i}".encode()) for i, unit in enumerate(units)]
    now = int(time.time() * 1000)
    letters = [letter(f"u{i}", feed, {"kind": "kafka", "feed": feed, "topic": raw_topic, "partition": 0,
                                      "offset": offsets[i]}, units[i], now - 60_000 + i,
                      **({"stage": "decode", "reason": "malformed_json"} if i == 2 else {})) for i in range(3)]
    letters = [dataclasses.replace(x, record_id=f"rec-{run_id}-{i}") for i, x in enumerate(letters)]
    write_dead_letters(dlq_topic, letters)

    properties = write_properties(tmp_path / "properties.json", dlq_topic=dlq_topic,
                                  ledger_topic=f"replays.t{run_id}", landing=f"s3://medistream-landing/t{run_id}/")
    doc = json.loads(properties.read_text())
    doc.append({"PropertyGroupId": "ops_console", "PropertyMap": {"tokens.secret": f"medistream/ops-console/t{run_id}",
                                                                  "tokens.refresh.s": "1"}})
    for group in doc:
        if group["PropertyGroupId"] == "partners":
            group["PropertyMap"]["dlq.topic"] = partner_dlq
    if not any(g["PropertyGroupId"] == "partners" for g in doc):
        doc.append({"PropertyGroupId": "partners", "PropertyMap": {"dlq.topic": partner_dlq}})
    properties.write_text(json.dumps(doc))
    groups = read_property_groups(properties)
    secrets = aws_client(load_phi_config(groups), "secretsmanager")
    secret_id = groups["ops_console"]["tokens.secret"]
    viewer, operator = (add_token(secrets, secret_id, f"{role}-{run_id}", role) for role in ("viewer", "operator"))

    stop = threading.Event()
    metrics_port = stand_in_series(feed, partner, stop)
    prom = prometheus.PrometheusSettings(home=tmp_path / "home", port=free_loopback_port(),
                                         alertmanager_port=free_loopback_port(), scrape_interval="1s",
                                         name=f"prometheus-t{run_id}")
    # Its own home, so it scrapes only the stand-in (the stack's targets folder is shared); the binaries as set up.
    prom.home.mkdir()
    (prom.home / "prometheus-dist").symlink_to(medistream_home() / "prometheus-dist")
    announce("ops-console-test", metrics_port, folder=prom.targets_dir)
    server = None
    try:
        prometheus.start(prom)
        server, url = start_background(properties, tmp_path / "console.log", prom.url(), free_loopback_port())
        # Two scrapes at least, so rate() has a value for the stand-in's series.
        wait_for(lambda: prometheus.query(prom, f"rate({RECORDS_IN}[2m]) > 0") != [], 30, "the stand-in's rate")
        needles = [PATIENT, *(x.dead_letter_id for x in letters), *(x.payload_sha256 for x in letters),
                   *(x.record_id or "" for x in letters)]
        yield Console(url, feed, partner, raw_topic, viewer, operator, groups, needles)
    finally:
        if server is not None:
            stop_background(server)
        stop.set()
        prometheus.stop(prom)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (./medistream setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1150", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: Any, console: Console, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(console.url + "/login")
    driver.find_element(By.NAME, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    wait_for(lambda: "Sign out" in driver.page_source or "id=\"flash\"" in driver.page_source, 30, "signing in")
    assert "Sign out" in driver.page_source, driver.find_element(By.TAG_NAME, "main").text


def replay(driver: Any, console: Console, reason: str, why: str) -> str:
    """Fill the row's reason and press Replay; the flash message."""
    from selenium.webdriver.common.by import By

    driver.get(console.url + "/dead-letters")
    form = driver.find_element(By.XPATH, f"//form[input[@name='target' and @value='{console.feed}'] and "
                                         f"input[@name='reason' and @value='{reason}']]")
    form.find_element(By.NAME, "why").send_keys(why)
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "id=\"flash\"" in driver.page_source, 60, "the replay's answer")
    return str(driver.find_element(By.ID, "flash").text)


def test_viewer_and_operator_in_a_real_browser(console: Console, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("MEDISTREAM_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    scanner = LeakScanner(Needles(console.needles))
    browser.get(console.url + "/")
    assert "Sign in" in browser.page_source and browser.find_element(By.NAME, "token")

    sign_in(browser, console, console.viewer)
    html = browser.page_source
    assert f"viewer-{console.feed[1:9]} (viewer)" in html
    jobs = browser.find_element(By.ID, "jobs").text
    assert "Flink cluster unreachable at http://127.0.0.1:" in jobs  # no cluster in this test: said, not a 500
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr")]
    assert any(r.startswith(f"feed {console.feed} schema schema_violation 2 ") for r in rows), rows
    assert any(r.startswith(f"feed {console.feed} decode malformed_json 1 ") for r in rows), rows
    assert "yes" in browser.find_element(By.ID, "audit-log").text
    browser.save_screenshot(str(shots / "overview.png"))

    browser.get(console.url + "/feeds")
    feeds = browser.find_element(By.ID, "feeds").text
    assert console.feed in feeds and "≤ 60 s ago" in feeds
    assert browser.find_elements(By.CSS_SELECTOR, "#feeds svg polyline")
    partners = browser.find_element(By.ID, "partner-delivery").text
    assert f"{console.partner}" in partners and "open" in partners
    alerts = browser.find_element(By.ID, "alerts").text
    assert "PartnerCircuitOpen pending page partner=" + console.partner in alerts
    browser.save_screenshot(str(shots / "feeds.png"))

    browser.get(console.url + "/dashboards")  # ops/dashboards' panels, drawn from the same Prometheus
    titles = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "section h2")]
    assert titles == [f"{p.row} / {p.title}" for p in DASHBOARD_PANELS]
    sections = browser.find_elements(By.CSS_SELECTOR, "section")
    drawn = {h: s.text for h, s in zip(titles, sections, strict=True)}
    assert console.feed in drawn["Throughput / Records in per feed"]
    assert f"{console.feed} schema_violation" in drawn["Dead letters / Dead letters per feed and reason"]
    assert "iceberg_claims 5.2" in drawn[next(t for t in titles if t.startswith("Freshness / Sink delay"))]
    assert browser.find_elements(By.CSS_SELECTOR, "section svg polyline")
    browser.save_screenshot(str(shots / "dashboards.png"))

    message = replay(browser, console, "schema.schema_violation", "INC-21 contract fixed")
    assert "may not replay dead letters. The refusal is audited" in message
    raw_before = len(read_topic(BOOTSTRAP, console.raw_topic))
    browser.find_element(By.CSS_SELECTOR, "header form button").click()  # sign out

    sign_in(browser, console, console.operator)
    message = replay(browser, console, "schema.schema_violation", "INC-21 contract fixed")
    assert message.startswith(f"Replay of feed {console.feed}, schema.schema_violation, by operator-")
    assert "2 unit(s) from 2 dead letter(s): 2 replayed, 0 skipped (already replayed), 0 not replayable" in message
    browser.save_screenshot(str(shots / "dead-letters.png"))
    replayed = [m for m in read_topic(BOOTSTRAP, console.raw_topic) if any(k == REPLAY_HEADER for k, _ in
                                                                          (m.headers() or []))]
    assert len(replayed) == 2 and len(read_topic(BOOTSTRAP, console.raw_topic)) == raw_before + 2

    log = open_audit_log(load_audit_settings(console.groups))
    entries = list(log.entries())
    assert [(e["role"], e["action"], e["decision"]) for e in entries] == [
        ("viewer", "ops_console_login", "grant"), ("viewer", "job_replay", "deny"),
        ("operator", "ops_console_login", "grant"), ("operator", "job_replay", "grant"),
        ("operator", "job_replay", "grant")]
    assert all("INC-21 contract fixed" in e["reason"] for e in entries if e["action"] == "job_replay")
    assert log.verify().ok

    for path, name in PAGES.items():
        browser.get(console.url + path)
        html = browser.page_source
        assert "Sign out" in html, path
        assert list(scanner.scan_text(f"page:{path}", html)) == [], path
        if name in ("jobs", "audit"):
            browser.save_screenshot(str(shots / f"{name}.png"))
    audit = browser.find_element(By.ID, "audit-log").text
    assert "yes 5 5" in audit  # verifies, 5 entries, head seq 5
    recent = [r.text.split()[2:] for r in browser.find_elements(By.CSS_SELECTOR, "#recent-audit-entries tbody tr")]
    assert recent[:2] == [[f"operator-{console.feed[1:9]}", "operator", "job_replay", "grant"]] * 2
    assert scanner.report().scanned["text"]["texts"] == len(PAGES) and scanner.report().clean

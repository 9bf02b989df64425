"""The local Prometheus and Alertmanager: Debian's binaries run by us on 127.0.0.1, not as services.

`medistream stack up` starts both after Kafka and moto (idempotent, like them); `stack down` stops
them. Prometheus scrapes whatever announced itself in `<home>/prometheus/targets/` (file_sd: every Flink
process with our reporter, every door process; connectors/metrics/targets.py) and evaluates the rules
generated from ops/alerts.yaml (infra/alert_rules.py); Alertmanager routes by severity
(ops/alertmanager.yml) and runs without its cluster gossip listener, which binds every interface.

The binaries come from Debian's `prometheus` and `prometheus-alertmanager` packages, unpacked under
`<home>/prometheus-dist` by `./medistream setup` (apt-get download + dpkg-deb: no service starts, no
unit listens on 0.0.0.0:9090), or from PATH. Prometheus is an observer: when it cannot start (binary
missing, port taken), `stack up` says so and carries on; no job depends on it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.local import process
from infra.local.settings import LOOPBACK, REPO_ROOT, check_ports, ports_from_env

log = logging.getLogger(__name__)

ENV_PROMETHEUS_PORT = "MEDISTREAM_PROMETHEUS_PORT"
ENV_ALERTMANAGER_PORT = "MEDISTREAM_ALERTMANAGER_PORT"
ALERTMANAGER_CONFIG = REPO_ROOT / "ops" / "alertmanager.yml"
BINARIES = {"prometheus": "prometheus", "promtool": "promtool", "alertmanager": "prometheus-alertmanager",
            "amtool": "amtool"}


def tool(name: str, home: Path | None = None) -> Path | None:
    """A Prometheus tool (prometheus, promtool, alertmanager, amtool): PATH first, then the unpacked package."""
    binary = BINARIES[name]
    found = shutil.which(binary)
    if found:
        return Path(found)
    from connectors.properties import medistream_home

    local = (home or medistream_home()) / "prometheus-dist" / "usr" / "bin" / binary
    return local if local.exists() else None


@dataclass(frozen=True)
class PrometheusSettings:
    """Where the local Prometheus keeps its state, its loopback ports, how often it scrapes."""

    home: Path
    port: int = 19090
    alertmanager_port: int = 19094
    scrape_interval: str = "5s"
    # Alert overrides for tests ({alert: {key: value}}, see infra.alert_rules.load_alerts).
    rule_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    name: str = "prometheus"  # a second instance (a test's) gets its own folder, PID files and ports
    contracts_dir: Path | None = None  # the feed contracts FeedSilent is generated for (None: the shipped ones)

    def __post_init__(self) -> None:
        check_ports({"prometheus": self.port, "alertmanager": self.alertmanager_port}, "prometheus")

    @classmethod
    def from_env(cls, home: Path, env: Mapping[str, str] | None = None) -> PrometheusSettings:
        """Defaults plus MEDISTREAM_PROMETHEUS_PORT / MEDISTREAM_ALERTMANAGER_PORT."""
        values = ports_from_env(os.environ if env is None else env,
                                {ENV_PROMETHEUS_PORT: "port", ENV_ALERTMANAGER_PORT: "alertmanager_port"})
        return cls(home=home, **values)  # type: ignore[arg-type]

    @property
    def folder(self) -> Path:
        return self.home / self.name

    @property
    def targets_dir(self) -> Path:
        """The file_sd folder the jobs and doors announce themselves in (shared by every instance)."""
        return self.home / "prometheus" / "targets"

    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def alertmanager_url(self) -> str:
        return f"http://{LOOPBACK}:{self.alertmanager_port}"

    def pid_file(self, component: str) -> Path:
        return self.home / "run" / f"{self.name}-{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.home / "logs" / f"{self.name}-{component}.log"


def scrape_config(settings: PrometheusSettings) -> dict[str, Any]:
    """prometheus.yml: file_sd over the targets folder, the generated rules, our Alertmanager."""
    return {
        "global": {"scrape_interval": settings.scrape_interval, "evaluation_interval": settings.scrape_interval,
                   "scrape_timeout": settings.scrape_interval},  # loopback: an answer takes milliseconds
        "rule_files": [str(settings.folder / "rules.yml")],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"{LOOPBACK}:{settings.alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "medistream",
             "file_sd_configs": [{"files": [str(settings.targets_dir / "*.json")], "refresh_interval": "5s"}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{LOOPBACK}:{settings.port}"]}]},
        ],
    }


def write_config(settings: PrometheusSettings) -> Path:
    """Generate the rules and the scrape config under the instance's folder; return the config file."""
    from infra.alert_rules import rules_text

    settings.folder.mkdir(parents=True, exist_ok=True)
    settings.targets_dir.mkdir(parents=True, exist_ok=True)
    from schemas.contracts import FEEDS_DIR, load_contracts

    contracts = load_contracts(settings.contracts_dir or FEEDS_DIR)
    (settings.folder / "rules.yml").write_text(rules_text(settings.rule_overrides or None, contracts))
    config = settings.folder / "prometheus.yml"
    config.write_text("# Generated by infra/local/prometheus.py; edits are overwritten.\n"
                      + yaml.safe_dump(scrape_config(settings), sort_keys=False))
    return config


def _get(url: str, timeout_s: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310 -- our loopback URL
        return bytes(answer.read())


def _ready(url: str) -> bool:
    try:
        _get(url + "/-/ready", 1.0)
    except OSError:
        return False
    return True


def running(settings: PrometheusSettings) -> bool:
    """Is our Prometheus up and ready?"""
    return process.owned_process(settings.pid_file("prometheus")) is not None and _ready(settings.url())


def start(settings: PrometheusSettings, timeout_s: float = 60.0) -> dict[str, str]:
    """Start Alertmanager and Prometheus unless ours are running; the URLs. Raises StackError when it cannot."""
    before = {c for c in ("prometheus", "alertmanager") if process.owned_process(settings.pid_file(c)) is not None}
    try:
        return _start(settings, timeout_s)
    except BaseException:
        for component in {"prometheus", "alertmanager"} - before:  # nothing half-started stays behind
            process.stop(settings.pid_file(component), term_timeout_s=20.0)
        raise


def _start(settings: PrometheusSettings, timeout_s: float) -> dict[str, str]:
    prometheus, alertmanager = tool("prometheus", settings.home), tool("alertmanager", settings.home)
    if prometheus is None or alertmanager is None:
        raise process.ToolMissing("Prometheus or Alertmanager is not installed: run ./medistream setup "
                                  "(it unpacks Debian's prometheus and prometheus-alertmanager packages)")
    config = write_config(settings)
    folder = settings.folder
    if process.owned_process(settings.pid_file("alertmanager")) is None:
        process.ensure_port_free(settings.alertmanager_port, "alertmanager", ENV_ALERTMANAGER_PORT)
        process.launch([str(alertmanager), f"--config.file={ALERTMANAGER_CONFIG}",
                        f"--storage.path={folder / 'alertmanager-data'}",
                        f"--web.listen-address={LOOPBACK}:{settings.alertmanager_port}",
                        "--cluster.listen-address="],  # no gossip: it would listen on every interface
                       log_file=settings.log_file("alertmanager"), pid_file=settings.pid_file("alertmanager"),
                       marker=f"--web.listen-address={LOOPBACK}:{settings.alertmanager_port}", cwd=folder)
    if process.owned_process(settings.pid_file("prometheus")) is None:
        process.ensure_port_free(settings.port, "prometheus", ENV_PROMETHEUS_PORT)
        process.launch([str(prometheus), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                        "--storage.tsdb.retention.time=2d", f"--web.listen-address={LOOPBACK}:{settings.port}",
                        "--web.enable-lifecycle"],
                       log_file=settings.log_file("prometheus"), pid_file=settings.pid_file("prometheus"),
                       marker=f"--web.listen-address={LOOPBACK}:{settings.port}", cwd=folder)
    else:
        reload(settings)  # the rules or the config may have changed
    for component, url in (("alertmanager", settings.alertmanager_url()), ("prometheus", settings.url())):
        process.wait_until(functools.partial(_ready, url), component=component, timeout_s=timeout_s,
                           pid_file=settings.pid_file(component), log_file=settings.log_file(component))
    return {"prometheus": settings.url(), "alertmanager": settings.alertmanager_url()}


def reload(settings: PrometheusSettings) -> None:
    """Regenerate the config and rules and have the running Prometheus read them again."""
    write_config(settings)
    request = urllib.request.Request(settings.url() + "/-/reload", method="POST")  # noqa: S310 -- loopback
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 -- loopback
        pass


def stop(settings: PrometheusSettings) -> dict[str, int | None]:
    """Stop our Prometheus and Alertmanager (SIGTERM, then SIGKILL)."""
    return {c: process.stop(settings.pid_file(c), term_timeout_s=20.0) for c in ("prometheus", "alertmanager")}


def query(settings: PrometheusSettings, promql: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    body = json.loads(_get(f"{settings.url()}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"))
    return list(body["data"]["result"])


def alerts(settings: PrometheusSettings) -> list[dict[str, Any]]:
    """The alerts Prometheus holds now (pending and firing), with labels and state."""
    return list(json.loads(_get(settings.url() + "/api/v1/alerts"))["data"]["alerts"])


def targets(settings: PrometheusSettings) -> list[dict[str, Any]]:
    """The active scrape targets with their health."""
    return list(json.loads(_get(settings.url() + "/api/v1/targets"))["data"]["activeTargets"])

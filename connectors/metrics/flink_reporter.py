"""Flink's Prometheus reporter on 127.0.0.1 only: the plugin folder and the configuration keys.

Flink's own reporter (flink-metrics-prometheus, in the apache-flink wheel under plugins/) binds its
HTTP server to every interface and has no option to change that. `LoopbackPrometheusReporter.java`
(beside this file) keeps all its metric handling and binds one address; it is compiled here, once,
against the wheel's jars (javac from the JDK setup installs), into a plugin folder holding both jars.
The embedded mini-cluster (jobs/runtime.py) and the local standalone cluster (tools/cluster_config.py)
load it; Managed Flink does not (it publishes to CloudWatch itself; the README's "Metrics and alerts").
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess  # nosec B404: javac and jar from the JDK, fixed argv
import tempfile
from pathlib import Path

from connectors.metrics.targets import LOOPBACK, targets_dir
from connectors.properties import medistream_home

SOURCES = sorted(Path(__file__).resolve().parent.glob("*.java"))
FACTORY = "org.apache.flink.metrics.prometheus.LoopbackPrometheusReporterFactory"
PLUGIN_NAME = "metrics-prometheus-loopback"
# Loopback ports the Flink processes take, first free one each (JobManager, TaskManagers, mini-clusters).
FLINK_PORTS = "19250-19299"


def _flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _flink_jar(flink: Path) -> Path:
    jars = sorted((flink / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FileNotFoundError(f"no flink-metrics-prometheus jar under {flink / 'plugins'}")
    return jars[-1]


def plugin_dir(home: Path | None = None) -> Path:
    """The plugin folder (Flink's reporter jar + ours), built on first use and when a source changes."""
    flink = _flink_home()
    flink_jar = _flink_jar(flink)
    digest = hashlib.sha256(b"".join(s.read_bytes() for s in SOURCES) + flink_jar.name.encode()).hexdigest()[:16]
    root = (home or medistream_home()) / "flink-reporter"
    folder = root / f"{PLUGIN_NAME}-{digest}"
    if (folder / "medistream-prometheus-loopback.jar").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as work:
        classes, staged = Path(work) / "classes", Path(work) / PLUGIN_NAME
        classes.mkdir()
        staged.mkdir()
        class_path = f"{flink_jar}:{next((flink / 'lib').glob('flink-dist-*.jar'))}"
        javac = ["javac", "--release", "11", "-nowarn", "-d", str(classes), "-cp", class_path, *map(str, SOURCES)]
        subprocess.run(javac, check=True, capture_output=True)  # noqa: S603 -- the JDK's compiler, our files
        services = classes / "META-INF" / "services"
        services.mkdir(parents=True)
        (services / "org.apache.flink.metrics.reporter.MetricReporterFactory").write_text(FACTORY + "\n")
        jar = ["jar", "cf", str(staged / "medistream-prometheus-loopback.jar"), "-C", str(classes), "."]
        subprocess.run(jar, check=True, capture_output=True)  # noqa: S603 -- the JDK's jar tool, fixed argv
        shutil.copy2(flink_jar, staged / flink_jar.name)
        try:
            staged.rename(folder)
        except OSError:  # another process built the same sources first
            if not (folder / "medistream-prometheus-loopback.jar").exists():
                raise
    return folder


def plugins_root(extra: dict[str, Path], root: Path) -> Path:
    """Make `root` a FLINK_PLUGINS_DIR holding the reporter plus `extra` plugins (name -> folder), as symlinks."""
    root.mkdir(parents=True, exist_ok=True)
    for plugin, target in {**extra, PLUGIN_NAME: plugin_dir()}.items():
        link = root / plugin
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    return root


def reporter_config(ports: str = FLINK_PORTS, home: Path | None = None) -> dict[str, str]:
    """The Flink configuration keys that turn the loopback reporter on."""
    folder = targets_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "metrics.reporters": "prom",
        "metrics.reporter.prom.factory.class": FACTORY,
        "metrics.reporter.prom.host": LOOPBACK,
        "metrics.reporter.prom.port": ports,
        "metrics.reporter.prom.targets.dir": str(folder),
    }

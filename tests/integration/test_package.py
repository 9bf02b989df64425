"""`medistream package`: the Managed Flink zip is reproducible, holds exactly its manifest and nothing it must not.

Builds the zip of HEAD twice (wheels come from PyPI once, then from the wheelhouse cache).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools.package import (
    CODE,
    ENTRY_POINTS,
    JAR,
    RDS_CA_BUNDLE_SHA256,
    RDS_CA_ENTRY,
    SITE,
    PackageError,
    Target,
    build,
    bundle_set,
    required_glibc,
    verify,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(packaged_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's build of HEAD and a second one of the same commit."""
    return packaged_zip, build(Target("3.12"), tmp_path_factory.mktemp("dist2"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_of_one_commit_are_byte_identical(built: tuple[Path, Path]) -> None:
    first, second = built
    assert first.name == second.name and _sha(first) == _sha(second)


def test_the_zip_holds_exactly_its_manifest_and_the_run_options_point_into_it(built: tuple[Path, Path]) -> None:
    manifest = verify(built[0])
    names = set(zipfile.ZipFile(built[0]).namelist())
    assert manifest["target"] == {"python": "3.12", "platform": "linux_x86_64", "glibc": "2.28", "flink": "2.2"}
    for job, options in manifest["run_options"].items():  # type: ignore[attr-defined]
        assert job in ENTRY_POINTS and options["python"] in names and options["jarfile"] == JAR in names
        assert all(any(n.startswith(folder) for n in names) for folder in options["pyFiles"].split(","))


def test_nothing_local_secret_or_runtime_provided_is_inside(built: tuple[Path, Path]) -> None:
    names = zipfile.ZipFile(built[0]).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"MANIFEST.json", CODE, "lib", SITE, *(f"run_{job}.py" for job in ENTRY_POINTS)}
    # Our packages, and the top-level module thread-mode functions are unpickled through (fresh_imports.py).
    assert {n.split("/")[1] for n in names if n.startswith(CODE + "/")} == {
        "schemas", "udfs", "connectors", "jobs", "fresh_imports.py", "certs"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Key files: none of ours but AWS's public RDS CA bundle (the pinned bytes); of the bundled packages only
    # botocore's public CA bundle.
    assert sorted(n for n in names if re.search(r"\.(pem|key|p8|p12|jks)$", n)) == [
        RDS_CA_ENTRY, "site-packages/botocore/cacert.pem"]
    with zipfile.ZipFile(built[0]) as archive:
        assert hashlib.sha256(archive.read(RDS_CA_ENTRY)).hexdigest() == RDS_CA_BUNDLE_SHA256
    bundled = {n.split("/")[1] for n in names if n.startswith(SITE + "/")}
    assert not bundled & {"pyflink", "apache_beam", "orjson", "yaml", "fastavro", "jsonschema", "numpy", "pandas"}
    with zipfile.ZipFile(built[0]) as archive:
        ours = [n for n in names if not n.startswith((SITE + "/", "lib/"))]
        assert not [n for n in ours if re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", archive.read(n))]


def test_a_tampered_or_incomplete_zip_is_refused(built: tuple[Path, Path], tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(built[0]) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data + b"\n# changed" if info.filename == f"{CODE}/jobs/ingest.py" else data)
    with pytest.raises(PackageError, match="application-code/jobs/ingest.py does not match its SHA-256"):
        verify(tampered)
    no_jar = tmp_path / "no_jar.zip"
    with zipfile.ZipFile(built[0]) as src, zipfile.ZipFile(no_jar, "w") as dst:
        manifest = json.loads(src.read("MANIFEST.json"))
        del manifest["files"][JAR]
        for info in src.infolist():
            if info.filename not in (JAR, "MANIFEST.json"):
                dst.writestr(info, src.read(info))
        dst.writestr("MANIFEST.json", json.dumps(manifest))
    with pytest.raises(PackageError, match="pyflink-dependencies.jar is missing"):
        verify(no_jar)


def test_an_entry_point_refuses_a_runtime_of_another_python(built: tuple[Path, Path], tmp_path: Path) -> None:
    with zipfile.ZipFile(built[0]) as archive:
        archive.extract("MANIFEST.json", tmp_path)
        archive.extract("run_ingest.py", tmp_path)
    done = subprocess.run([sys.executable, str(tmp_path / "run_ingest.py")], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 1
    assert "built for Python 3.12, the runtime runs 3.11" in done.stderr


def test_runtime_provided_packages_are_left_out_and_glibc_is_read_from_wheel_tags() -> None:
    bundle, provided = bundle_set(Target("3.12"))
    assert "confluent-kafka" in bundle and "apache-flink" not in bundle and "orjson" in provided
    assert required_glibc([Path("a-1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"),
                           Path("b-1-cp312-cp312-manylinux_2_28_x86_64.whl"), Path("c-1-py3-none-any.whl")]) == "2.28"


def test_the_jar_is_rewritten_the_same_whatever_order_and_times_maven_gave_it(tmp_path: Path) -> None:
    from tools.package import normalized_jar

    def jar(order: list[str], when: tuple[int, int, int, int, int, int]) -> bytes:
        path = tmp_path / "x.jar"
        with zipfile.ZipFile(path, "w") as out:
            for name in order:
                out.writestr(zipfile.ZipInfo(name, when), f"body of {name}")
        return path.read_bytes()

    names = ["META-INF/MANIFEST.MF", "a/B.class", "a/A.class", "META-INF/services/x"]
    first, second = jar(names, (2026, 12, 4, 1, 2, 3)), jar(list(reversed(names)), (2025, 1, 1, 0, 0, 0))
    assert first != second and normalized_jar(first) == normalized_jar(second)
    assert zipfile.ZipFile(io.BytesIO(normalized_jar(first))).namelist()[0] == "META-INF/MANIFEST.MF"


def test_each_application_gets_its_properties_with_run_options_for_the_environment(
        built: tuple[Path, Path], tmp_path: Path) -> None:
    from connectors.properties import load_ingest_config, read_property_groups
    from tools.package import RUN_OPTIONS_GROUP, application_properties

    manifest = verify(built[0])
    path = tmp_path / "ingest.json"
    path.write_text(json.dumps(application_properties("local-cluster", "ingest", manifest)))
    groups = read_property_groups(path)
    assert groups[RUN_OPTIONS_GROUP] == {"python": "run_ingest.py", "jarfile": JAR, "pyFiles": f"{CODE}/,{SITE}/"}
    assert load_ingest_config(groups).runtime.deployment == "cluster"
    with pytest.raises(PackageError, match="no environment 'mars'"):
        application_properties("mars", "ingest", manifest)

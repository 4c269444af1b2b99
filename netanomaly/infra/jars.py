"""JVM jars from Maven Central: the Kafka broker and the Flink Kafka SQL connector.

Maven resolves them from the small pom beside this file into the local repository (~/.m2) and
copies them into a cache folder outside the work tree; later calls reuse the copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from netanomaly.config import CACHE_DIR
from netanomaly.exceptions import InfraError


def _pom_path() -> Path:
    return Path(str(resources.files("netanomaly.infra").joinpath("pom.xml")))


def _pom_property(name: str) -> str:
    m = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", _pom_path().read_text(encoding="utf-8"))
    if not m:
        raise InfraError(f"pom.xml has no <{name}> property")
    return m.group(1).strip()


def kafka_version() -> str:
    """Apache Kafka version the pom pins."""
    return _pom_property("kafka.version")


def connector_version() -> str:
    """flink-sql-connector-kafka version the pom pins."""
    return _pom_property("flink.kafka.connector.version")


def _fetch(profile: str, dest: Path) -> Path:
    marker = dest / ".complete"
    if marker.exists():
        return dest
    if shutil.which("mvn") is None:
        raise InfraError("Maven (mvn) is not installed; install it (apt-get install maven) to fetch the jars")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(_pom_path()),
        "-P",
        profile,
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfraError(
            f"Maven could not fetch profile {profile!r} (exit {proc.returncode}); is Maven Central reachable?\n"
            + (proc.stdout + proc.stderr)[-2000:]
        )
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    marker.touch()
    return dest


def kafka_libs(cache: Path = CACHE_DIR) -> Path:
    """Folder holding the Kafka broker classpath (fetched on first use)."""
    return _fetch("kafka-broker", cache / "jars" / f"kafka-{kafka_version()}")


def flink_parquet_jars(cache: Path = CACHE_DIR) -> list[Path]:
    """Jars of the Parquet format (the feature store's filesystem sink), fetched on first use."""
    folder = _fetch("flink-parquet", cache / "jars" / f"flink-parquet-{_pom_property('flink.parquet.version')}")
    jars = sorted(folder.glob("*.jar"))
    if not any(j.name.startswith("flink-parquet-") for j in jars):
        raise InfraError(f"no flink-parquet jar in {folder}; delete the folder and retry")
    return jars


def flink_kafka_connector(cache: Path = CACHE_DIR) -> Path:
    """Path of the shaded Flink Kafka SQL connector jar (fetched on first use)."""
    folder = _fetch("flink-kafka", cache / "jars" / f"flink-sql-connector-kafka-{connector_version()}")
    jars = sorted(folder.glob("flink-sql-connector-kafka-*.jar"))
    if not jars:
        raise InfraError(f"no flink-sql-connector-kafka jar in {folder}; delete the folder and retry")
    return jars[0]

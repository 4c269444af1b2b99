"""A local single-node Apache Kafka broker (KRaft, broker+controller) on 127.0.0.1.

Runs the real broker from the org.apache.kafka jars on Maven Central (see jars.py). The data
folder holds the config, the logs, the pid file and the KRaft metadata; it survives restarts.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from netanomaly.config import LocalBroker
from netanomaly.exceptions import InfraError
from netanomaly.infra.jars import kafka_libs

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``netanomaly kafka status`` reports."""

    running: bool
    pid: int | None
    bootstrap_servers: str
    data_dir: Path

    def __str__(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        return f"kafka {state} at {self.bootstrap_servers}, data in {self.data_dir}"


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise InfraError("java not found; install a JDK 17 or set JAVA_HOME")
    return java


def _paths(cfg: LocalBroker) -> dict[str, Path]:
    d = Path(cfg.data_dir).expanduser()
    return {
        "root": d,
        "props": d / "server.properties",
        "log4j": d / "log4j2.properties",
        "logs": d / "logs",
        "data": d / "kraft-data",
        "pid": d / "broker.pid",
        "out": d / "logs" / "broker.out",
    }


def bootstrap_servers(cfg: LocalBroker) -> str:
    """Client address of the local broker."""
    return f"127.0.0.1:{cfg.port}"


def _properties(cfg: LocalBroker, data: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cfg.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{cfg.port},CONTROLLER://127.0.0.1:{cfg.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=168",
            "",
        ]
    )


def _read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return pid if "kafka.Kafka" in cmdline and str(pidfile.parent) in cmdline else None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def serves(servers: str) -> bool:
    """True when a Kafka broker answers at ``servers`` (ours or anyone's)."""
    return _ready(servers)


def _ready(servers: str) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=3000, client_id="netanomaly-probe")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def status(cfg: LocalBroker) -> BrokerStatus:
    """Whether the broker from this data folder runs."""
    p = _paths(cfg)
    pid = _read_pid(p["pid"])
    return BrokerStatus(pid is not None, pid, bootstrap_servers(cfg), p["root"])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start(cfg: LocalBroker) -> BrokerStatus:
    """Start the broker (format storage on first use) and wait until it serves requests."""
    current = status(cfg)
    if current.running:
        return current
    p = _paths(cfg)
    for port in (cfg.port, cfg.controller_port):
        if _port_open(port):
            raise InfraError(
                f"port {port} on 127.0.0.1 is taken by another process; stop it or choose other ports "
                "(kafka.local.port / kafka.local.controller_port)"
            )
    libs = kafka_libs()
    java = _java()
    classpath = f"{libs}/*"
    p["logs"].mkdir(parents=True, exist_ok=True)
    p["props"].write_text(_properties(cfg, p["data"]))
    p["log4j"].write_text(LOG4J2.format(log=p["logs"] / "server.log"))
    if not (p["data"] / "meta.properties").exists():
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        fmt = subprocess.run(
            [
                java,
                f"-Dlog4j2.configurationFile={p['log4j']}",
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cid,
                "-c",
                str(p["props"]),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise InfraError(f"formatting the KRaft storage in {p['data']} failed:\n{fmt.stdout}{fmt.stderr}")
    with open(p["out"], "ab") as out:
        proc = subprocess.Popen(
            [
                java,
                f"-Xmx{cfg.heap}",
                f"-Xms{cfg.heap}",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={p['log4j']}",
                f"-Dkafka.logs.dir={p['logs']}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(p["props"]),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    p["pid"].write_text(str(proc.pid))
    servers = bootstrap_servers(cfg)
    deadline = time.monotonic() + cfg.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            p["pid"].unlink(missing_ok=True)
            raise InfraError(
                f"the Kafka broker exited with code {proc.returncode} while starting; last log lines:\n"
                + _tail(p["logs"] / "server.log")
                + "\n"
                + _tail(p["out"])
            )
        if _port_open(cfg.port) and _ready(servers):
            return status(cfg)
        time.sleep(0.25)
    stop(cfg)
    raise InfraError(
        f"the Kafka broker did not become ready within {cfg.start_timeout_s:.0f} s; see {p['logs']}/server.log"
    )


def stop(cfg: LocalBroker, timeout_s: float = 30.0) -> bool:
    """Stop the broker by pid (SIGTERM, then SIGKILL after ``timeout_s``). True if one was running."""
    p = _paths(cfg)
    pid = _read_pid(p["pid"])
    if pid is None:
        p["pid"].unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _read_pid(p["pid"]) is not None:
        time.sleep(0.2)
    if _read_pid(p["pid"]) is not None:
        os.kill(pid, signal.SIGKILL)
        while _read_pid(p["pid"]) is not None:
            time.sleep(0.1)
    p["pid"].unlink(missing_ok=True)
    return True

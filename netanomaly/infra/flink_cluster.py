"""A standalone Flink cluster started from the pyflink pip distribution (bin/, conf/, lib/).

For the ``flink run -py`` path: the job file is submitted to a real JobManager over REST, as users
do against their own cluster. Config, logs and pid files live in a work folder; the installed
pyflink/conf is never modified.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from netanomaly.exceptions import InfraError


def flink_home() -> Path:
    """The pyflink package folder, which is a Flink distribution."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def java17_home() -> str:
    """JAVA_HOME for Flink's scripts, which need Java 17 (a newer JDK fails on a security-manager flag)."""
    home = os.environ.get("JAVA_HOME")
    candidates = [home] if home else []
    candidates += ["/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm/java-17-openjdk-arm64"]
    for c in candidates:
        if c and (Path(c) / "bin" / "java").exists():
            return c
    raise InfraError("no Java 17 found; install openjdk-17 or set JAVA_HOME to a JDK 17")


class StandaloneCluster:
    """JobManager + one TaskManager on 127.0.0.1; start(), submit(), stop()."""

    def __init__(
        self,
        workdir: Path,
        rest_port: int = 18081,
        rpc_port: int = 16123,
        slots: int = 2,
        prometheus_ports: str | None = "19250-19259",
    ) -> None:
        self.workdir = Path(workdir)
        self.prometheus_ports = prometheus_ports
        self.rest_port = rest_port
        self.rpc_port = rpc_port
        self.slots = slots
        self.home = flink_home()
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.lib_dir = self.workdir / "lib"

    @property
    def rest_url(self) -> str:
        """REST endpoint of the JobManager."""
        return f"http://127.0.0.1:{self.rest_port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        java = java17_home()
        env.update(
            {
                "JAVA_HOME": java,
                "PATH": f"{java}/bin:{env.get('PATH', '')}",
                "FLINK_HOME": str(self.home),
                "FLINK_CONF_DIR": str(self.conf_dir),
                "FLINK_LOG_DIR": str(self.log_dir),
                "FLINK_PID_DIR": str(self.workdir),
                "FLINK_LIB_DIR": str(self.lib_dir),
            }
        )
        return env

    def _write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for f in (self.home / "conf").iterdir():
            if f.is_file():
                shutil.copy(f, self.conf_dir / f.name)
        # The cluster's classpath: the distribution's lib/ plus opt/flink-python (the Python operators),
        # as a Flink release tarball has it for PyFlink jobs; links, so the installed package is untouched.
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        for jar in [*(self.home / "lib").glob("*.jar"), *(self.home / "opt").glob("flink-python*.jar")]:
            link = self.lib_dir / jar.name
            if not link.exists():
                link.symlink_to(jar)
        conf = yaml.safe_load((self.home / "conf" / "config.yaml").read_text())
        conf["jobmanager"]["bind-host"] = "127.0.0.1"
        conf["jobmanager"]["rpc"] = {"address": "127.0.0.1", "port": self.rpc_port}
        conf["jobmanager"]["memory"] = {"process": {"size": "1024m"}}
        conf["taskmanager"].update(
            {
                "bind-host": "127.0.0.1",
                "host": "127.0.0.1",
                "numberOfTaskSlots": self.slots,
                "memory": {"process": {"size": "2048m"}},
            }
        )
        conf["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": self.rest_port}
        conf["python"] = {"executable": sys.executable, "client": {"executable": sys.executable}}
        if self.prometheus_ports:
            # Flink's Prometheus reporter (plugins/metrics-prometheus of the distribution): JobManager and
            # TaskManager each take a free port of the range and serve /metrics on 127.0.0.1.
            conf["metrics"] = {
                "reporter": {
                    "prom": {
                        "factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
                        "host": "127.0.0.1",
                        "port": self.prometheus_ports,
                    }
                }
            }
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("localhost\n")

    def overview(self) -> dict | None:
        """GET /overview, or None while the JobManager does not answer."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}/overview", timeout=2) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def start(self, timeout_s: float = 90.0) -> StandaloneCluster:
        """Start JobManager and TaskManager; wait until the TaskManager's slots are registered."""
        self._write_conf()
        proc = subprocess.run(
            [str(self.home / "bin" / "start-cluster.sh")], env=self._env(), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise InfraError(f"start-cluster.sh failed:\n{proc.stdout}{proc.stderr}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ov = self.overview()
            if ov and ov.get("taskmanagers", 0) >= 1 and ov.get("slots-total", 0) >= self.slots:
                return self
            time.sleep(0.5)
        self.stop()
        raise InfraError(f"the Flink cluster did not come up within {timeout_s:.0f} s; logs in {self.log_dir}")

    def run_python_job(self, job_file: Path, args: list[str], jars: list[Path] = (), timeout_s: float = 180.0) -> str:
        """``flink run -d [-j jar] -py job_file args``; returns the JobID the CLI printed.

        Connector jars go with ``--jarfile``: a ``pipeline.jars`` set inside the Python program is
        not shipped to the cluster by the CLI.
        """
        cmd = [str(self.home / "bin" / "flink"), "run", "-m", f"127.0.0.1:{self.rest_port}", "-d"]
        for jar in jars:
            cmd += ["--jarfile", str(jar)]
        cmd += ["-py", str(job_file), "-pyexec", sys.executable, "-pyclientexec", sys.executable, *args]
        proc = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=timeout_s, check=False)
        out = proc.stdout + proc.stderr
        m = re.search(r"JobID ([0-9a-f]{32})", out) or re.search(r"job ([0-9a-f]{32})", out)
        if proc.returncode != 0 or not m:
            causes = "\n".join(line for line in out.splitlines() if "Caused by" in line or "Exception:" in line)
            raise InfraError(f"flink run failed (exit {proc.returncode}):\n{causes[-3000:]}\n...\n{out[-3000:]}")
        return m.group(1)

    def job_state(self, job_id: str) -> str | None:
        """The job's state (RUNNING, FAILED, ...) from the REST API."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}/jobs/{job_id}", timeout=2) as r:
                return json.loads(r.read()).get("state")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def cancel(self, job_id: str) -> None:
        """Cancel a job (PATCH /jobs/:id?mode=cancel)."""
        req = urllib.request.Request(f"{self.rest_url}/jobs/{job_id}?mode=cancel", method="PATCH")
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except urllib.error.URLError:
            pass

    def stop(self) -> None:
        """stop-cluster.sh (TaskManager and JobManager by their pid files)."""
        subprocess.run(
            [str(self.home / "bin" / "stop-cluster.sh")],
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def logs(self, lines: int = 60) -> str:
        """Tail of every log file, for failure messages."""
        parts = []
        for f in sorted(self.log_dir.glob("*.log")):
            parts.append(f"== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

"""Run the streaming job in a child process on a local mini-cluster, and stop it cleanly.

Used by the demo and the integration tests: the child runs ``python -m flink_job.job`` in its
own process group, so stopping it also ends its JVM and Python workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from netanomaly.config import JobConfig


def write_config(cfg: JobConfig, path: Path) -> Path:
    """Dump a config as YAML (without secrets) that load_config reads back to an equal config."""
    data = cfg.model_dump(mode="json", exclude={"wandb": {"api_key"}})
    data["model"]["dir"] = str(Path(cfg.model.dir).expanduser().resolve())  # the child runs elsewhere
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class JobProcess:
    """The job in a child process; use as a context manager or call start()/stop()."""

    def __init__(self, cfg: JobConfig, workdir: Path, extra_args: list[str] | None = None) -> None:
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "job.log"

    def start(self) -> JobProcess:
        """Launch the job (returns at once; the job needs ~15-30 s to start consuming)."""
        conf = write_config(self.cfg, self.workdir / "job-config.yaml")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flink_job.job", "--config", str(conf), "--wait", *self.extra_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=str(self.workdir),
        )
        return self

    def running(self) -> bool:
        """True while the child lives."""
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        """Wait for a bounded job to end; returns its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the job's output, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL after ``timeout_s``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout_s
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # also the JVM and workers left in the group
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._log.close()

    def __enter__(self) -> JobProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

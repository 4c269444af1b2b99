"""The scoring operator: a vectorized (pandas/Arrow) Python UDF running the exported model.

The constructor only keeps plain values (it is pickled and shipped to the workers); the model is
loaded in ``open()``, once per worker, and verified against its metadata (sha256, feature order).
"""

from __future__ import annotations

from pathlib import Path

from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf


def result_type(top_k: int):
    """The UDF's ROW result: verdict, model version and the top-k contributing features."""
    fields = [
        DataTypes.FIELD("score", DataTypes.DOUBLE()),
        DataTypes.FIELD("threshold", DataTypes.DOUBLE()),
        DataTypes.FIELD("is_anomaly", DataTypes.BOOLEAN()),
        DataTypes.FIELD("model_version", DataTypes.STRING()),
    ]
    for i in range(1, top_k + 1):
        fields.append(DataTypes.FIELD(f"top{i}_feature", DataTypes.STRING()))
        fields.append(DataTypes.FIELD(f"top{i}_contribution", DataTypes.DOUBLE()))
    return DataTypes.ROW(fields)


class ScoreWindows(ScalarFunction):
    """Scores a batch of window feature vectors; one call per Arrow batch, not per window."""

    def __init__(
        self,
        model_dir: str,
        feature_names: list[str],
        sequence_length: int,
        top_k: int,
        torch_threads: int = 1,
        backend: str = "torchscript",
        reload_check_s: float = 10.0,
        drift_horizon: int = 2000,
    ) -> None:
        self.model_dir = model_dir
        self.reload_check_s = reload_check_s
        self.drift_horizon = drift_horizon
        self.feature_names = list(feature_names)
        self.sequence_length = sequence_length
        self.top_k = top_k
        self.torch_threads = torch_threads
        self.backend = backend
        self._scorer = None

    def open(self, function_context: FunctionContext) -> None:
        """Load and verify the model once per worker; register the operator's metrics."""
        group = function_context.get_metric_group()
        self._group = group
        self._windows = group.counter("windows_scored")
        self._anomalies = group.counter("anomalies_detected")
        # gauges, not counters: PyFlink reports a counter only once it changed, and a dashboard should
        # show 0 reloads rather than no data
        self._reload_count = 0
        self._reload_failure_count = 0
        group.gauge("model_reloads", lambda: self._reload_count)
        group.gauge("model_reload_failures", lambda: self._reload_failure_count)
        self._batch_ms = 0.0
        self._batch_windows = 0
        group.gauge("scoring_batch_ms", lambda: int(self._batch_ms))
        group.gauge("scoring_batch_windows", lambda: self._batch_windows)
        self._registered_versions: set[str] = set()
        self._version = ""
        self._pointer_seen: float | None = None
        self._next_check = 0.0
        self._load(self._resolve())
        # drift of the live windows against the active model's training baseline, PSI x 1000 per feature
        # (PyFlink gauges are integers); 0 until drift_horizon / 40 windows were seen
        for j, name in enumerate(self.feature_names):
            group.add_group("feature", name).gauge("drift_psi_milli", lambda j=j: self._psi_milli(j))

    def _resolve(self) -> Path:
        from model.registry import resolve

        return resolve(self.model_dir)

    def _load(self, path: Path) -> None:
        from model.exceptions import ModelFileError
        from model.export import load_model
        from model.scoring import Scorer

        loaded = load_model(path, expected_feature_names=self.feature_names)
        length = int(loaded.metadata.get("sequence_length", 1))
        if length != self.sequence_length:
            raise ModelFileError(
                f"the model wants sequences of {length} windows but the job was built for {self.sequence_length}; "
                "restart the job so it reads the model's metadata",
                path=str(path),
            )
        from flink_job.drift import WindowDrift

        scorer = Scorer(loaded, torch_threads=self.torch_threads, backend=self.backend)
        drift = WindowDrift(loaded.metadata, self.drift_horizon, min_samples=max(1, self.drift_horizon // 40))
        # swap as one step: a batch is scored wholly by the old or wholly by the new model
        self._scorer, self._threshold, self._version = scorer, float(loaded.threshold), loaded.model_version
        self._drift = drift
        if self._version not in self._registered_versions:
            self._registered_versions.add(self._version)
            version = self._version
            self._group.add_group("model_version", version).gauge("model_active", lambda: int(self._version == version))

    def _psi_milli(self, j: int) -> int:
        value = self._drift.psi(j)
        return 0 if value is None else int(round(1000 * value))

    def _maybe_reload(self) -> None:
        """Follow the registry's production pointer (checked at most every ``reload_check_s``)."""
        import logging
        import time

        from model.exceptions import ModelError
        from model.registry import POINTER, is_registry

        now = time.monotonic()
        if now < self._next_check or not is_registry(self.model_dir):
            return
        self._next_check = now + self.reload_check_s
        try:
            mtime = (Path(self.model_dir) / POINTER).stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._pointer_seen:
            return
        self._pointer_seen = mtime
        try:
            path = self._resolve()
            if path.name != self._version:
                self._load(path)
                self._reload_count += 1
                logging.getLogger("netanomaly.scoring").warning("now scoring with model %s", self._version)
        except ModelError as e:  # a bad promotion must not stop scoring: keep the current model
            self._reload_failure_count += 1
            logging.getLogger("netanomaly.scoring").error("keeping model %s: %s", self._version, e)

    def eval(self, *columns):
        """pandas Series per feature in, a DataFrame (the ROW fields) out."""
        import time

        import numpy as np
        import pandas as pd

        self._maybe_reload()
        t0 = time.perf_counter()
        x = np.column_stack([c.to_numpy(dtype=np.float32, na_value=np.nan) for c in columns])
        scores = self._scorer.score(x)
        names, shares = self._scorer.top_features(scores.contributions, self.top_k)
        n = len(x)
        out = {
            "score": scores.score.astype(np.float64),
            "threshold": np.full(n, self._threshold),
            "is_anomaly": scores.is_anomaly.astype(bool),
            "model_version": [self._version] * n,
        }
        for i in range(self.top_k):
            out[f"top{i + 1}_feature"] = [row[i] for row in names]
            out[f"top{i + 1}_contribution"] = shares[:, i].astype(np.float64)
        self._drift.add(x[:, -len(self.feature_names) :])  # the newest window of each (sequence) input
        self._windows.inc(n)
        self._anomalies.inc(int(scores.is_anomaly.sum()))
        self._batch_ms = (time.perf_counter() - t0) * 1000.0
        self._batch_windows = n
        return pd.DataFrame(out)


class CountDeadLetters(ScalarFunction):
    """Passes the reason through and counts dead letters per reason (a Flink metric per reason).

    Runs only on rejected events (the dead-letter branch), never on valid traffic.
    """

    def open(self, function_context: FunctionContext) -> None:
        """Register one counter per known reason up front, so dashboards see zeros too."""
        from flink_job.sql import REASONS

        group = function_context.get_metric_group()
        self._counters = {r: group.add_group("reason", r).counter("dead_letters") for r in REASONS}

    def eval(self, reason: str) -> str:
        """Count and return ``reason``."""
        self._counters[reason].inc()
        return reason


def make_udf(
    model_dir: Path,
    feature_names: list[str],
    sequence_length: int,
    top_k: int,
    torch_threads: int = 1,
    backend: str = "torchscript",
    reload_check_s: float = 10.0,
    drift_horizon: int = 2000,
):
    """The registered pandas UDF for ``model_dir`` (called with sequence_length x features columns)."""
    return udf(
        ScoreWindows(
            str(model_dir), feature_names, sequence_length, top_k, torch_threads, backend, reload_check_s, drift_horizon
        ),
        result_type=result_type(top_k),
        func_type="pandas",
    )


def make_dead_letter_udf():
    """The row-at-a-time counter UDF of the dead-letter branch."""
    return udf(CountDeadLetters(), result_type=DataTypes.STRING())

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

    def __init__(self, model_dir: str, feature_names: list[str], top_k: int, torch_threads: int = 1) -> None:
        self.model_dir = model_dir
        self.feature_names = list(feature_names)
        self.top_k = top_k
        self.torch_threads = torch_threads
        self._scorer = None

    def open(self, function_context: FunctionContext) -> None:
        """Load and verify the model once per worker."""
        from model.export import load_model
        from model.scoring import Scorer

        loaded = load_model(Path(self.model_dir), expected_feature_names=self.feature_names)
        self._scorer = Scorer(loaded, torch_threads=self.torch_threads)
        self._threshold = float(loaded.threshold)
        self._version = loaded.model_version
        self._windows = function_context.get_metric_group().counter("windows_scored")
        self._anomalies = function_context.get_metric_group().counter("anomalies_detected")

    def eval(self, *columns):
        """pandas Series per feature in, a DataFrame (the ROW fields) out."""
        import numpy as np
        import pandas as pd

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
        self._windows.inc(n)
        self._anomalies.inc(int(scores.is_anomaly.sum()))
        return pd.DataFrame(out)


def make_udf(model_dir: Path, feature_names: list[str], top_k: int, torch_threads: int = 1):
    """The registered pandas UDF for ``model_dir``."""
    return udf(
        ScoreWindows(str(model_dir), feature_names, top_k, torch_threads),
        result_type=result_type(top_k),
        func_type="pandas",
    )

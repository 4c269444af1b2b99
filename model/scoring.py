"""Scoring windows with an exported model: scores, per-feature contributions, top features.

:class:`Scorer` is what the Flink pandas UDF calls once per Arrow batch; :func:`score_features`
scores an offline features frame into the shared score record layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model.exceptions import ModelError
from model.export import LoadedModel, load_model
from model.features import KEY_COLUMNS, feature_matrix

CHUNK_ROWS = 4096
SCORE_COLUMNS = (
    "device_id",
    "window_start",
    "window_end",
    "score",
    "threshold",
    "is_anomaly",
    "model_version",
    "top_features",
)


@dataclass(frozen=True)
class Scores:
    """Scores of N windows.

    ``score`` [N] float64 (mean squared reconstruction error), ``contributions`` [N, F] float64
    (share of each feature in the window's error; rows sum to 1, uniform when the error is zero
    or not finite), ``is_anomaly`` [N] bool (``score > threshold``; False for a NaN score).
    """

    score: np.ndarray
    contributions: np.ndarray
    is_anomaly: np.ndarray


class Scorer:
    """Scores raw feature matrices with a loaded model; cheap to call once per batch."""

    def __init__(self, loaded: LoadedModel, torch_threads: int | None = 1, chunk_rows: int = CHUNK_ROWS) -> None:
        """``torch_threads`` sets torch's (process-wide) intra-op threads; None leaves it alone."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        if torch_threads is not None:
            if torch_threads < 1:
                raise ValueError(f"torch_threads must be at least 1, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        self.loaded = loaded
        self.module = loaded.module
        self.threshold = float(loaded.threshold)
        self.model_version = loaded.model_version
        self.feature_names = list(loaded.feature_names)
        self.n_features = len(self.feature_names)
        self.chunk_rows = chunk_rows
        self._names = np.array(self.feature_names, dtype=object)
        self._uniform = 1.0 / self.n_features

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Per-feature squared reconstruction errors [N, F] (float32) of raw features ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected features of shape [N, {self.n_features}] ({self.feature_names}), got {x.shape}")
        if not x.flags.c_contiguous or not x.flags.writeable:
            x = np.array(x, dtype=np.float32, order="C", copy=True)
        n = x.shape[0]
        out = np.empty((n, self.n_features), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, n, self.chunk_rows):
                stop = min(start + self.chunk_rows, n)
                out[start:stop] = self.module(torch.from_numpy(x[start:stop])).numpy()
        return out

    def score(self, x: np.ndarray) -> Scores:
        """Scores, contributions and anomaly flags of raw features ``x`` [N, F]."""
        err = self.errors(x).astype(np.float64)
        total = err.sum(axis=1)
        score = total / self.n_features
        ok = np.isfinite(total) & (total > 0)
        contributions = np.full_like(err, self._uniform)
        if ok.any():
            contributions[ok] = err[ok] / total[ok, None]
        return Scores(score=score, contributions=contributions, is_anomaly=score > self.threshold)

    def top_features(self, contributions: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Names and shares of the ``k`` largest contributions per row (ties: feature order)."""
        contributions = np.asarray(contributions, dtype=np.float64)
        if contributions.ndim != 2 or contributions.shape[1] != self.n_features:
            raise ValueError(f"expected contributions of shape [N, {self.n_features}], got {contributions.shape}")
        k = max(0, min(int(k), self.n_features))
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
        shares = np.take_along_axis(contributions, order, axis=1)
        return self._names[order].tolist(), shares


def _iso_utc(col: pd.Series) -> pd.Series:
    """ISO-8601 UTC strings with milliseconds (``2026-01-05T00:10:00.000Z``)."""
    if pd.api.types.is_integer_dtype(col) or pd.api.types.is_float_dtype(col):
        ts = pd.to_datetime(col, unit="ms", utc=True)
    else:
        ts = pd.to_datetime(col, utc=True)
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, -3) + "Z"


def score_features(features_df: pd.DataFrame, model_dir: Path, top_k: int = 3) -> pd.DataFrame:
    """Offline scores of a features frame (one row per window) with the model in ``model_dir``.

    Columns: device_id, window_start, window_end (ISO-8601 UTC), score, threshold, is_anomaly,
    model_version, top_features (list of ``{"feature", "contribution"}``).
    """
    loaded = load_model(Path(model_dir))
    missing_keys = [c for c in KEY_COLUMNS if c not in features_df.columns]
    if missing_keys:
        raise ModelError(f"the features frame lacks key columns {missing_keys}; make it with `netanomaly features`")
    try:
        x = feature_matrix(features_df, loaded.feature_names)
    except KeyError as e:
        raise ModelError(
            f"{e.args[0]} (model {loaded.model_version} in {model_dir} expects {loaded.feature_names})"
        ) from e
    except (TypeError, ValueError) as e:
        raise ModelError(f"feature columns are not numeric: {e}") from e
    scorer = Scorer(loaded, torch_threads=None)
    scores = scorer.score(x)
    names, shares = scorer.top_features(scores.contributions, top_k)
    top = [
        [{"feature": f, "contribution": float(s)} for f, s in zip(row_names, row_shares, strict=True)]
        for row_names, row_shares in zip(names, shares.tolist(), strict=True)
    ]
    return pd.DataFrame(
        {
            "device_id": features_df["device_id"].astype(str).to_numpy(),
            "window_start": _iso_utc(features_df["window_start"]).to_numpy(),
            "window_end": _iso_utc(features_df["window_end"]).to_numpy(),
            "score": scores.score,
            "threshold": np.full(len(x), scorer.threshold),
            "is_anomaly": scores.is_anomaly,
            "model_version": loaded.model_version,
            "top_features": top,
        },
        columns=list(SCORE_COLUMNS),
    )

"""Scoring windows with an exported model: scores, per-feature contributions, top features.

:class:`Scorer` is what the Flink pandas UDF calls once per Arrow batch; :func:`score_features`
scores an offline features frame into the shared score record layout. Both run the model on
TorchScript (``model.pt``) or on ONNX Runtime (``model.onnx``), chosen by ``backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from model.detectors import build_sequences
from model.exceptions import ModelError
from model.export import (
    BACKENDS,
    LoadedModel,
    import_onnxruntime,
    load_model,
    onnx_session,
    onnxruntime_errors,
    read_onnx_verified,
)
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
    """Scores raw model inputs with a loaded model; cheap to call once per batch.

    Inputs are ``[N, D]``: the window features for window models, the flattened last ``L``
    windows of the device (oldest first) for sequence models. Outputs are per window feature.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        torch_threads: int | None = 1,
        chunk_rows: int = CHUNK_ROWS,
        *,
        backend: str = "torchscript",
    ) -> None:
        """``torch_threads`` sets torch's (process-wide) intra-op threads and, for ``backend="onnxruntime"``,
        the session's intra-op threads; None leaves torch alone and lets ONNX Runtime choose.

        The ONNX backend reads ``model.onnx`` and checks its sha256 against the metadata; a model
        without one raises :class:`ModelFileError` (re-export it with ``netanomaly train``).
        """
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        if torch_threads is not None:
            if torch_threads < 1:
                raise ValueError(f"torch_threads must be at least 1, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        self.loaded = loaded
        self.module = loaded.module
        self.backend = backend
        self.threshold = float(loaded.threshold)
        self.model_version = loaded.model_version
        self.feature_names = list(loaded.feature_names)
        self.n_features = len(self.feature_names)
        self.sequence_length = int(loaded.sequence_length)
        self.input_dim = int(loaded.n_inputs)
        self.chunk_rows = chunk_rows
        self._names = np.array(self.feature_names, dtype=object)
        self._uniform = 1.0 / self.n_features
        self._run: Callable[[np.ndarray], np.ndarray] = self._run_torchscript
        self._session = None
        if backend == "onnxruntime":
            ort = import_onnxruntime()
            data = read_onnx_verified(loaded.onnx_path, loaded.onnx_sha256, loaded.model_dir)
            try:
                self._session = onnx_session(data, threads=torch_threads)
            except onnxruntime_errors(ort) as e:
                raise ModelError(f"ONNX Runtime cannot load {loaded.onnx_path}: {e}") from e
            self._run = self._run_onnxruntime

    def _run_torchscript(self, x: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(x)).numpy()

    def _run_onnxruntime(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"x": x})[0]

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Per-feature error terms [N, F] (float32) of raw model inputs ``x`` [N, D]."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            if self.sequence_length == 1:
                what = f"features of shape [N, {self.n_features}] ({self.feature_names})"
            else:
                what = (
                    f"sequences of shape [N, {self.input_dim}] ({self.sequence_length} windows x "
                    f"{self.n_features} features, oldest window first)"
                )
            raise ValueError(f"expected {what}, got {x.shape}")
        if not x.flags.c_contiguous or not x.flags.writeable:
            x = np.array(x, dtype=np.float32, order="C", copy=True)
        n = x.shape[0]
        out = np.empty((n, self.n_features), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, n, self.chunk_rows):
                stop = min(start + self.chunk_rows, n)
                out[start:stop] = self._run(x[start:stop])
        return out

    def score(self, x: np.ndarray) -> Scores:
        """Scores, contributions and anomaly flags of raw model inputs ``x`` [N, D]."""
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


def _sequences_of(features_df: pd.DataFrame, x: np.ndarray, sequence_length: int) -> np.ndarray:
    """Model inputs [N, L*F] of the windows ``x`` (rows of ``features_df``), in the frame's row order."""
    start = features_df["window_start"]
    if pd.api.types.is_integer_dtype(start) or pd.api.types.is_float_dtype(start):
        key = pd.to_datetime(start, unit="ms", utc=True)
    else:
        key = pd.to_datetime(start, utc=True)
    devices = features_df["device_id"].astype(str).to_numpy()
    order = np.lexsort((key.to_numpy(), devices))  # by device, then window_start; stable
    seq = np.empty((len(x), sequence_length * x.shape[1]), dtype=np.float32)
    seq[order] = build_sequences(x[order], devices[order], sequence_length)
    return seq


def score_features(
    features_df: pd.DataFrame, model_dir: Path, top_k: int = 3, *, backend: str = "torchscript"
) -> pd.DataFrame:
    """Offline scores of a features frame (one row per window) with the model in ``model_dir``.

    Columns: device_id, window_start, window_end (ISO-8601 UTC), score, threshold, is_anomaly,
    model_version, top_features (list of ``{"feature", "contribution"}``); rows in the input's
    order. For a sequence model each window is scored with the ``L - 1`` windows of its device
    before it (by window_start; the device's first window repeated where there are fewer).
    """
    loaded = load_model(Path(model_dir), backend=backend)
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
    if loaded.sequence_length > 1:
        x = _sequences_of(features_df, x, loaded.sequence_length)
    scorer = Scorer(loaded, torch_threads=None, backend=backend)
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

"""The window feature spec: defined once, computed by Flink SQL online and by pandas offline.

A feature vector describes one device over one tumbling window ``[window_start, window_end)``
aligned to the UTC epoch: ``event_count`` (optional) then, for each KPI in order, each statistic
in order, named ``<kpi>__<stat>``. ``std`` is the population standard deviation (ddof=0), so a
window with one event has std 0 in both engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from netanomaly.config import FeaturesConfig

KEY_COLUMNS = ("device_id", "window_start", "window_end")


@dataclass(frozen=True)
class FeatureSpec:
    """KPIs x statistics over a window; the single source of the feature order."""

    kpis: tuple[str, ...]
    stats: tuple[str, ...] = ("mean", "std", "min", "max")
    include_count: bool = True
    window_seconds: int = 600

    @classmethod
    def from_config(cls, cfg: FeaturesConfig) -> FeatureSpec:
        """The spec a job config describes."""
        return cls(tuple(cfg.kpis), tuple(cfg.stats), cfg.include_count, cfg.window_seconds)

    @property
    def feature_names(self) -> list[str]:
        """Feature order of the model input."""
        names = ["event_count"] if self.include_count else []
        names += [f"{k}__{s}" for k in self.kpis for s in self.stats]
        return names

    def to_dict(self) -> dict:
        """JSON-friendly form, stored in model metadata."""
        return {
            "kpis": list(self.kpis),
            "stats": list(self.stats),
            "include_count": self.include_count,
            "window_seconds": self.window_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["kpis"]), tuple(d["stats"]), bool(d["include_count"]), int(d["window_seconds"]))


def compute_window_features(events: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Offline window features from validated events.

    ``events`` needs ``device_id``, ``event_time_ms`` (int64 epoch milliseconds, UTC) and one
    float column per KPI. Returns one row per (device, window) that has events, with
    ``window_start``/``window_end`` as tz-aware UTC timestamps, sorted by window then device.
    """
    missing = [c for c in ("device_id", "event_time_ms", *spec.kpis) if c not in events.columns]
    if missing:
        raise KeyError(f"events lack columns {missing}")
    w_ms = spec.window_seconds * 1000
    df = events[["device_id", "event_time_ms", *spec.kpis]].copy()
    df["_w"] = (df["event_time_ms"].astype("int64") // w_ms) * w_ms
    grouped = df.groupby(["device_id", "_w"], sort=False)
    out = pd.DataFrame(index=grouped.size().index)
    if spec.include_count:
        out["event_count"] = grouped.size().astype("float64")
    for k in spec.kpis:
        g = grouped[k]
        for s in spec.stats:
            if s == "mean":
                col = g.mean()
            elif s == "std":
                col = g.std(ddof=0)
            elif s == "min":
                col = g.min()
            elif s == "max":
                col = g.max()
            else:  # pragma: no cover - guarded by config validation
                raise ValueError(f"unknown statistic {s!r}")
            out[f"{k}__{s}"] = col.astype("float64")
    out = out.reset_index()
    out["window_start"] = pd.to_datetime(out["_w"], unit="ms", utc=True)
    out["window_end"] = pd.to_datetime(out["_w"] + w_ms, unit="ms", utc=True)
    out = out.drop(columns="_w").sort_values(["window_start", "device_id"], kind="stable")
    return out[[*KEY_COLUMNS, *spec.feature_names]].reset_index(drop=True)


def feature_matrix(features: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The model input (float32, feature order ``names``) from a features frame."""
    missing = [n for n in names if n not in features.columns]
    if missing:
        raise KeyError(f"features lack columns {missing}; was the model trained on another feature spec?")
    return features[names].to_numpy(dtype=np.float32)

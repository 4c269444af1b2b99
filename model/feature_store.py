"""Read the job's feature store: Parquet files of scored windows, partitioned by ``dt=YYYY-MM-DD``.

The Flink job writes it (stream.feature_store); files are committed on checkpoints, in-progress
files are hidden (dot-prefixed) and skipped by the reader.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from model.exceptions import ModelError
from model.features import KEY_COLUMNS, FeatureSpec


class FeatureStoreError(ModelError):
    """The feature store folder is missing, empty or was written with another feature spec."""


def read_feature_store(
    path: str | Path,
    spec: FeatureSpec,
    *,
    exclude_anomalies: bool = False,
    since: str | None = None,
    until: str | None = None,
) -> pd.DataFrame:
    """Windows from the store as a features frame (device_id, window_start, window_end, features...).

    ``exclude_anomalies`` drops windows the job flagged; ``since``/``until`` (YYYY-MM-DD, inclusive)
    select date partitions. Extra columns (score, is_anomaly, model_version) are kept.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FeatureStoreError(f"feature store {root} does not exist; run the job with stream.feature_store set")
    parts = sorted(p for p in root.glob("dt=*") if p.is_dir())
    if since:
        parts = [p for p in parts if p.name[3:] >= since]
    if until:
        parts = [p for p in parts if p.name[3:] <= until]
    files = [f for p in parts for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith((".", "_"))]
    if not files:
        raise FeatureStoreError(f"no committed Parquet files in {root} (for the dates asked); has a checkpoint passed?")
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    missing = [c for c in (*KEY_COLUMNS, *spec.feature_names) if c not in df.columns]
    if missing:
        raise FeatureStoreError(f"the store lacks columns {missing}: it was written with another feature spec")
    if exclude_anomalies and "is_anomaly" in df.columns:
        df = df[~df["is_anomaly"].astype(bool)]
    for col in ("window_start", "window_end"):
        df[col] = pd.to_datetime(df[col], utc=True)
    df = df.sort_values(["window_start", "device_id"], kind="stable").reset_index(drop=True)
    return df

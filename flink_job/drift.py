"""Drift inside the scoring operator: PSI of each feature over the last windows this worker scored,
against the model's training baseline (metadata.json), exported as Flink gauges.

The monitor service (netanomaly/monitor) computes the same PSI fleet-wide and in event time, and
publishes retrain requests; these gauges give Prometheus/Grafana the same signal from the job itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from netanomaly.monitor.drift import N_BINS, baseline_from_metadata, psi


class WindowDrift:
    """Bin counts of the last ``horizon`` window feature vectors, per feature (a ring buffer)."""

    def __init__(self, metadata: Mapping[str, Any], horizon: int, min_samples: int = 50) -> None:
        base = baseline_from_metadata(metadata)
        self.names = list(base.feature_names)
        self.horizon = horizon
        self.min_samples = min_samples
        self._bins = [base.bins[n] for n in self.names]
        self._anchors = [np.asarray(b.anchors) for b in self._bins]
        self._points = [np.asarray(b.has_point) for b in self._bins]
        self._ring = np.full((horizon, len(self.names)), -1, dtype=np.int64)
        self._counts = np.zeros((len(self.names), N_BINS), dtype=np.int64)
        self._next = 0
        self.seen = 0

    def _bin_index(self, j: int, x: np.ndarray) -> np.ndarray:
        """Vectorised FeatureBins.bin_of for feature ``j`` (-1 for non-finite values)."""
        u, has_point = self._anchors[j], self._points[j]
        m = len(u) - 1
        i = np.searchsorted(u, x, side="left")
        ic = np.minimum(i, m)
        exact = (i <= m) & (u[ic] == x)
        on_point = np.where(has_point[ic], 1 + 2 * ic, np.where(ic < m, 2 + 2 * ic, 2 + 2 * (m - 1)))
        between = np.where(i == 0, 0, np.where(i > m, 2 + 2 * m, 2 + 2 * (i - 1)))
        out = np.where(exact, on_point, between)
        return np.where(np.isfinite(x), out, -1)

    def add(self, features: np.ndarray) -> None:
        """Add a batch of window feature vectors ([N, F] in feature order), evicting the oldest."""
        rows = np.asarray(features, dtype=np.float64)[-self.horizon :]
        n, f = rows.shape
        if n == 0:
            return
        new = np.column_stack([self._bin_index(j, rows[:, j]) for j in range(f)])
        pos = (self._next + np.arange(n)) % self.horizon
        old = self._ring[pos]
        cols = np.broadcast_to(np.arange(f), (n, f))
        valid_old, valid_new = old >= 0, new >= 0
        np.add.at(self._counts, (cols[valid_old], old[valid_old]), -1)
        np.add.at(self._counts, (cols[valid_new], new[valid_new]), 1)
        self._ring[pos] = new
        self._next = int((self._next + n) % self.horizon)
        self.seen += n

    def psi(self, j: int) -> float | None:
        """PSI of feature ``j`` over the horizon, or None with fewer than ``min_samples`` windows."""
        if self._counts[j].sum() < self.min_samples:
            return None
        return psi(self._bins[j].expected, self._counts[j])

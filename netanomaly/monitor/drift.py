"""Feature drift: PSI of the live window features against the model's training baseline.

Bins come from the baseline's quantile edges in the model's ``metadata.json``: per feature the
anchors ``min, p01, p05, p25, p50, p75, p95, p99, max`` at cumulative shares ``0, .01, ...,
.99, 1``. Between two consecutive distinct anchors lies an open interval whose expected share is
the difference of their shares; an anchor that several quantiles share (a point mass, e.g.
``event_count`` when every training window had 10 events) is a bin of its own with the share
the tied quantiles span; values below ``min`` or above ``max`` fall in two outer bins of
expected share 0. So without ties the bins are the usual quantile bins (1 %, 4 %, 20 %, 25 %,
25 %, 20 %, 4 %, 1 %) plus the two out-of-range bins. Values outside the training range weigh a
lot: 5 % of the live windows above the training max alone give PSI ~0.31 (with the default
smoothing), which is intended (the model never saw such values).

PSI = sum over bins of (a - e) x ln(a / e), with the live shares a and expected shares e both
smoothed as (share + s) / (1 + s x B) (s = ``drift.smoothing``, B = :data:`N_BINS`), so empty
bins stay finite and a bin empty on both sides adds 0.

:class:`DriftMonitor` keeps bin counts per window period (event time) and evaluates the horizon
of the last ``horizon_windows`` periods each time a period closes (the caller's watermark
passes it). Each evaluation is a :class:`DriftReport` (kpi-drift). When a feature's PSI is
over ``threshold`` for ``consecutive`` evaluations in a row, ONE :class:`RetrainRequest`
(kpi-retrain-requests) names every feature in that state with its PSI; the next request can
come ``retrain_cooldown_s`` of event time later at the earliest.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from netanomaly.monitor.config import DriftConfig
from netanomaly.monitor.exceptions import BaselineError, InvalidRecord
from netanomaly.monitor.timeutil import iso_ms, utc_now_iso, window_of

ANCHORS: tuple[tuple[str, float], ...] = (
    ("min", 0.0),
    ("p01", 0.01),
    ("p05", 0.05),
    ("p25", 0.25),
    ("p50", 0.50),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
    ("max", 1.0),
)
N_BINS = 2 * len(ANCHORS) + 1  # below, (point, interval) per anchor, above
METADATA_FILE = "metadata.json"


# ------------------------------------------------------------------------------------ bins & PSI
@dataclass(frozen=True)
class FeatureBins:
    """The PSI bins of one feature, built from its training baseline.

    Bin layout (index): 0 below min; ``1 + 2j`` the point of distinct anchor j; ``2 + 2j`` the
    open interval between anchors j and j+1; ``2 + 2m`` above max (m = last anchor index).
    Unused indices up to :data:`N_BINS` have expected share 0.
    """

    feature: str
    anchors: tuple[float, ...]
    has_point: tuple[bool, ...]
    expected: np.ndarray = field(repr=False)

    @classmethod
    def from_baseline(cls, feature: str, stats: Mapping[str, Any]) -> FeatureBins:
        """Bins from ``{min, p01, ..., p99, max}`` (the other keys are ignored)."""
        try:
            pts = [(float(stats[k]), level) for k, level in ANCHORS]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"baseline of {feature!r} lacks a number for {e}; needs {[k for k, _ in ANCHORS]}") from e
        values = [v for v, _ in pts]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"baseline of {feature!r} has non-finite quantiles {values}")
        if any(b < a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f"baseline quantiles of {feature!r} are not ordered: {values}")
        anchors = sorted(set(values))
        lo = [min(lv for v, lv in pts if v == u) for u in anchors]
        hi = [max(lv for v, lv in pts if v == u) for u in anchors]
        m = len(anchors) - 1
        expected = np.zeros(N_BINS)
        for j in range(m + 1):
            expected[1 + 2 * j] = hi[j] - lo[j]
            if j < m:
                expected[2 + 2 * j] = lo[j + 1] - hi[j]
        return cls(feature, tuple(anchors), tuple(h > lw for h, lw in zip(hi, lo, strict=True)), expected)

    def bin_of(self, x: float) -> int | None:
        """Bin index of one value; None for a non-finite value."""
        if not math.isfinite(x):
            return None
        u = self.anchors
        m = len(u) - 1
        i = bisect.bisect_left(u, x)
        if i <= m and u[i] == x:
            if self.has_point[i]:
                return 1 + 2 * i
            return 2 + 2 * i if i < m else 2 + 2 * (m - 1)  # a lone anchor always has a point
        if i == 0:
            return 0
        if i > m:
            return 2 + 2 * m
        return 2 + 2 * (i - 1)

    def counts(self, values: Iterable[float]) -> np.ndarray:
        """Bin counts of values (non-finite ones are skipped)."""
        out = np.zeros(N_BINS, dtype=np.int64)
        for x in values:
            b = self.bin_of(float(x))
            if b is not None:
                out[b] += 1
        return out


def psi(expected: np.ndarray, counts: np.ndarray, smoothing: float = 1e-4) -> float:
    """Population stability index of live bin ``counts`` against ``expected`` shares."""
    expected = np.asarray(expected, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n <= 0:
        raise ValueError("no live values to compare")
    b = expected.size
    a = (counts / n + smoothing) / (1.0 + smoothing * b)
    e = (expected / expected.sum() + smoothing) / (1.0 + smoothing * b)
    return float(np.sum((a - e) * np.log(a / e)))


# -------------------------------------------------------------------------------------- baseline
@dataclass(frozen=True)
class ModelBaseline:
    """What the monitor needs from a model folder: version, features, bins, threshold."""

    model_version: str
    feature_names: tuple[str, ...]
    bins: dict[str, FeatureBins]
    threshold: float | None = None
    path: Path | None = None


def baseline_from_metadata(meta: Mapping[str, Any], path: Path | None = None) -> ModelBaseline:
    """Parse a model's metadata (``model_version``, ``feature_names``, ``baseline``)."""
    hint = "export the model again with `netanomaly train` (metadata.json carries the training baseline)"
    version = meta.get("model_version")
    if not isinstance(version, str) or not version:
        raise BaselineError(f"no model_version; {hint}", path)
    base = meta.get("baseline")
    if not isinstance(base, dict) or not base:
        raise BaselineError(f"no per-feature training baseline ('baseline'); {hint}", path)
    names = meta.get("feature_names") or list(base)
    bins = {}
    for name in names:
        if name not in base:
            raise BaselineError(f"the baseline lacks feature {name!r} of feature_names; {hint}", path)
        try:
            bins[str(name)] = FeatureBins.from_baseline(str(name), base[name])
        except ValueError as e:
            raise BaselineError(f"{e}; {hint}", path) from e
    threshold = meta.get("threshold")
    return ModelBaseline(version, tuple(str(n) for n in names), bins, float(threshold) if threshold else None, path)


def load_baseline(model_dir: str | Path) -> ModelBaseline:
    """Read ``<model_dir>/metadata.json`` (no torch needed). BaselineError says what is wrong."""
    path = Path(model_dir).expanduser() / METADATA_FILE
    if not path.is_file():
        raise BaselineError(
            "not found; point --model (model_dir) at an exported model folder, e.g. the --out of `netanomaly train`",
            path,
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"cannot be read as JSON ({e})", path) from e
    if not isinstance(meta, dict):
        raise BaselineError("must hold a JSON object", path)
    return baseline_from_metadata(meta, path)


# --------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class DriftReport:
    """One evaluation (kpi-drift record, conf/schemas/kpi-drift.schema.json)."""

    window_start: str
    window_end: str
    horizon_start: str
    horizon_windows: int
    periods: int
    samples: int
    psi: dict[str, float]
    max_psi: float
    max_feature: str
    threshold: float
    drifted: list[str]
    consecutive: dict[str, int]
    model_version: str
    created_at: str

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to kpi-drift."""
        return asdict(self)


@dataclass(frozen=True)
class RetrainRequest:
    """A retrain request (kpi-retrain-requests record, conf/schemas/kpi-retrain-requests.schema.json)."""

    request_id: str
    reason: str
    model_version: str
    window_start: str
    window_end: str
    features: list[dict[str, Any]]
    threshold: float
    consecutive_required: int
    horizon_windows: int
    samples: int
    message: str
    created_at: str

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to kpi-retrain-requests."""
        return asdict(self)


@dataclass
class _Bucket:
    end_ms: int
    counts: np.ndarray  # [features, N_BINS]
    records: int = 0


# --------------------------------------------------------------------------------------- monitor
class DriftMonitor:
    """Sliding-horizon PSI over kpi-features records; see the module docstring.

    Feed records with :meth:`add`, then call :meth:`advance` with the event-time watermark (the
    start of the newest window period seen on every partition): every period that started
    before it is evaluated, oldest first. :meth:`observe` does both for a single ordered stream;
    :meth:`flush` evaluates what is left (end of a bounded stream).
    """

    def __init__(
        self,
        cfg: DriftConfig,
        baseline: ModelBaseline,
        *,
        clock: Callable[[], str] = utc_now_iso,
    ) -> None:
        self.cfg = cfg
        self.baseline = baseline
        self.clock = clock
        names = tuple(cfg.features) if cfg.features else baseline.feature_names
        unknown = [n for n in names if n not in baseline.bins]
        if unknown:
            raise BaselineError(
                f"drift.features {unknown} are not in the model's baseline {list(baseline.feature_names)}",
                baseline.path,
            )
        self.features = names
        self._bins = [baseline.bins[n] for n in names]
        self._expected = np.stack([b.expected for b in self._bins])
        self._buckets: dict[int, _Bucket] = {}
        self._first_start: int | None = None
        self._last_evaluated: int | None = None
        self._last_window_ms: int | None = None
        self._streak = dict.fromkeys(names, 0)
        self._last_request_ms: int | None = None
        self.stats: Counter[str] = Counter()

    # ---------------------------------------------------------------------------------- input
    def add(self, record: dict[str, Any]) -> None:
        """Count one kpi-features record into its window period (InvalidRecord if malformed)."""
        start, end = window_of(record)
        w = end - start
        if self._last_evaluated is not None and start <= self._last_evaluated - self.cfg.horizon_windows * w:
            self.stats["late_dropped"] += 1  # older than every horizon still to be evaluated
            return
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = _Bucket(end, np.zeros((len(self.features), N_BINS), dtype=np.int64))
        missing = 0
        for i, (name, bins) in enumerate(zip(self.features, self._bins, strict=True)):
            v = record.get(name)
            b = bins.bin_of(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else None
            if b is None:
                missing += 1
                continue
            bucket.counts[i, b] += 1
        if missing == len(self.features):
            raise InvalidRecord(f"none of the watched features {list(self.features)[:4]}... has a number")
        if missing:
            self.stats["missing_values"] += missing
        bucket.records += 1
        self.stats["records"] += 1
        if self._first_start is None or start < self._first_start:
            self._first_start = start

    def advance(self, watermark_ms: int) -> list[DriftReport | RetrainRequest]:
        """Evaluate every pending period that started before ``watermark_ms``, oldest first."""
        out: list[DriftReport | RetrainRequest] = []
        pending = sorted(
            s for s in self._buckets if s < watermark_ms and (self._last_evaluated is None or s > self._last_evaluated)
        )
        for start in pending:
            out.extend(self._evaluate(start))
        return out

    def observe(self, record: dict[str, Any]) -> list[DriftReport | RetrainRequest]:
        """add() then advance() to this record's window start (one ordered stream)."""
        self.add(record)
        return self.advance(window_of(record)[0])

    def flush(self) -> list[DriftReport | RetrainRequest]:
        """Evaluate every pending period (all windows are closed: end of a bounded stream)."""
        return self.advance(2**62)

    # ----------------------------------------------------------------------------- evaluation
    def _evaluate(self, start: int) -> list[DriftReport | RetrainRequest]:
        cfg = self.cfg
        bucket = self._buckets[start]
        w = bucket.end_ms - start
        self._last_evaluated = start
        lo = start - cfg.horizon_windows * w
        for s in [s for s in self._buckets if s <= lo]:
            del self._buckets[s]
        horizon = [b for s, b in self._buckets.items() if lo < s <= start]
        samples = sum(b.records for b in horizon)
        assert self._first_start is not None
        elapsed = (start - self._first_start) // w + 1
        if elapsed < cfg.periods_needed or samples < cfg.min_samples:
            self.stats["skipped_insufficient"] += 1
            return []
        counts = np.sum([b.counts for b in horizon], axis=0)
        scores: dict[str, float] = {}
        for i, name in enumerate(self.features):
            if counts[i].sum() > 0:
                scores[name] = psi(self._expected[i], counts[i], cfg.smoothing)
        drifted = [n for n in self.features if scores.get(n, 0.0) > cfg.threshold]
        for n in self.features:
            self._streak[n] = self._streak[n] + 1 if n in drifted else 0
        self.stats["evaluations"] += 1
        max_feature = max(scores, key=lambda n: scores[n]) if scores else ""
        report = DriftReport(
            window_start=iso_ms(start),
            window_end=iso_ms(bucket.end_ms),
            horizon_start=iso_ms(lo + w),
            horizon_windows=cfg.horizon_windows,
            periods=len(horizon),
            samples=samples,
            psi=scores,
            max_psi=scores.get(max_feature, 0.0),
            max_feature=max_feature,
            threshold=cfg.threshold,
            drifted=drifted,
            consecutive={n: self._streak[n] for n in drifted},
            model_version=self.baseline.model_version,
            created_at=self.clock(),
        )
        out: list[DriftReport | RetrainRequest] = [report]
        persistent = sorted((n for n in drifted if self._streak[n] >= cfg.consecutive), key=lambda n: (-scores[n], n))
        if persistent:
            cooled = self._last_request_ms is None or start - self._last_request_ms >= cfg.retrain_cooldown_s * 1000
            if cooled:
                self._last_request_ms = start
                self.stats["retrain_requests"] += 1
                out.append(self._request(start, bucket.end_ms, persistent, scores, samples))
            else:
                self.stats["retrain_suppressed"] += 1
        return out

    def _request(
        self, start: int, end: int, features: list[str], scores: dict[str, float], samples: int
    ) -> RetrainRequest:
        cfg = self.cfg
        version = self.baseline.model_version
        listed = ", ".join(f"{n} (PSI {scores[n]:.2f})" for n in features[:5])
        more = f" and {len(features) - 5} more" if len(features) > 5 else ""
        return RetrainRequest(
            request_id=hashlib.sha256(f"{version}|{start}".encode()).hexdigest()[:24],
            reason="feature_drift",
            model_version=version,
            window_start=iso_ms(start),
            window_end=iso_ms(end),
            features=[{"feature": n, "psi": scores[n], "consecutive": self._streak[n]} for n in features],
            threshold=cfg.threshold,
            consecutive_required=cfg.consecutive,
            horizon_windows=cfg.horizon_windows,
            samples=samples,
            message=(
                f"model {version}: {len(features)} feature(s) drifted from the training baseline for "
                f"{cfg.consecutive}+ evaluations (PSI > {cfg.threshold:g} over the last "
                f"{cfg.horizon_windows} windows up to {iso_ms(end)}): {listed}{more}. Retrain on recent "
                "normal windows (e.g. the feature store) and redeploy."
            ),
            created_at=self.clock(),
        )

"""Synthetic network KPI events with labelled injected anomalies (deterministic, seeded).

Every device gets its own baseline (latency, throughput, packet loss, jitter) drawn from the
seed. A daily load cycle (busy evenings, quiet nights) plus a slow random wander drives
throughput and, more weakly, latency, jitter and loss, so the KPIs are correlated. On top comes
multiplicative Gaussian (log-normal) noise. KPI names other than the four known ones are
generated as generic positive, load-correlated series.

Anomaly episodes (see :data:`ANOMALY_KINDS`) start and end on window boundaries of the epoch-
aligned tumbling windows the job uses, so every window is either fully normal or fully inside
one episode, which keeps window-level evaluation unambiguous. The same spec and seed always give
the same events and labels: all randomness comes from ``numpy.random.default_rng`` streams
derived from ``(seed, purpose, device, ...)``, so, for instance, a device's normal values do not
depend on how many anomalies are injected elsewhere.
"""

from __future__ import annotations

import csv
import json
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ANOMALY_KINDS",
    "DEFAULT_KPIS",
    "DEFAULT_START_MS",
    "AnomalyLabel",
    "SimulationSpec",
    "device_ids",
    "event_count",
    "generate_events",
    "generate_frame",
    "plan_anomalies",
    "read_labels",
    "write_events_file",
    "write_labels",
]

ANOMALY_KINDS: tuple[str, ...] = (
    "latency_spike",
    "throughput_collapse",
    "packet_loss_burst",
    "slow_degradation",
    "flapping",
)
DEFAULT_KPIS: tuple[str, ...] = ("latency_ms", "throughput_mbps", "packet_loss_pct", "jitter_ms")
DEFAULT_START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z (a Monday)

EVENT_FORMATS = ("jsonl", "csv", "parquet")
_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}

_LAT, _TP, _LOSS, _JIT = DEFAULT_KPIS
_KNOWN_KPIS = frozenset(DEFAULT_KPIS)
# Which known KPIs each kind changes; generic (unknown) KPIs are changed by every kind.
_AFFECTS: dict[str, frozenset[str]] = {
    "latency_spike": frozenset({_LAT, _JIT}),
    "throughput_collapse": frozenset({_TP, _LOSS}),
    "packet_loss_burst": frozenset({_LOSS, _LAT}),
    "slow_degradation": frozenset({_LAT, _JIT, _LOSS}),
    "flapping": frozenset({_TP, _LOSS}),
}
# Episode length in minutes, before rounding to whole windows (at least 2).
_DURATION_MINUTES: dict[str, tuple[int, int]] = {"slow_degradation": (60, 120)}
_DEFAULT_DURATION_MINUTES = (20, 60)
LEAD_WINDOWS = 2  # no episode starts in the first 2 whole windows of the run
TAIL_WINDOWS = 4  # nor ends within the last 2 (+2 more, for windows that close late) whole windows
GAP_WINDOWS = 2  # normal windows between two episodes of the same device
MIN_EPISODE_WINDOWS = 2

# Daily load profile (hour of day, UTC shifted per device by up to +-1 h) -> relative load.
_PROFILE_HOURS = np.arange(25, dtype=np.float64)
_PROFILE_LOAD = np.array(
    [0.50, 0.38, 0.28, 0.22, 0.20, 0.22, 0.30, 0.42, 0.52, 0.58, 0.60, 0.62, 0.65,
     0.63, 0.62, 0.63, 0.66, 0.72, 0.80, 0.90, 0.97, 1.00, 0.90, 0.70, 0.50]
)  # fmt: skip
_DECIMALS = 4
_CHUNK_EVENTS = 200_000

# Stream "purposes" mixed into the seed so that every random stream is independent.
_S_PLAN, _S_DEVICE, _S_NOISE, _S_TIME, _S_EPISODE, _S_GENERIC = range(6)


_EPOCH_NAIVE = datetime(1970, 1, 1)  # naive UTC: isoformat() then carries no offset


def _iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with millisecond precision and ``Z``."""
    return (_EPOCH_NAIVE + timedelta(milliseconds=int(ms))).isoformat(timespec="milliseconds") + "Z"


def _parse_iso_ms(text: str) -> int:
    """ISO-8601 with a zone (``Z`` or an offset) to epoch milliseconds."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone; use e.g. 2026-01-05T00:00:00Z")
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_kinds_affect_kpis(kinds: Iterable[str], kpis: Sequence[str]) -> None:
    generic = [k for k in kpis if k not in _KNOWN_KPIS]
    for kind in kinds:
        if not generic and not (_AFFECTS[kind] & set(kpis)):
            raise ValueError(
                f"anomaly kind {kind!r} changes {sorted(_AFFECTS[kind])}, none of which is in kpis "
                f"{list(kpis)}; drop the kind or add one of those KPIs"
            )


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate: devices, time range, sampling interval, anomalies, KPIs and seed.

    Each device emits one event per ``interval_s`` (timestamp jittered deterministically within
    the first half of its interval), so every device has exactly ``slots`` events.
    """

    devices: int = 20
    start_ms: int = DEFAULT_START_MS
    duration_s: int = 86400
    interval_s: float = 60.0
    anomalies: int = 0
    kinds: tuple[str, ...] = ANOMALY_KINDS
    seed: int = 42
    kpis: tuple[str, ...] = DEFAULT_KPIS
    window_seconds: int = 600
    device_prefix: str = "dev"

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "kpis", tuple(self.kpis))
        _check_int("devices", self.devices, 1)
        _check_int("start_ms", self.start_ms, 0)
        _check_int("duration_s", self.duration_s, 1)
        _check_int("anomalies", self.anomalies, 0)
        _check_int("seed", self.seed, 0)
        _check_int("window_seconds", self.window_seconds, 1)
        if isinstance(self.interval_s, bool) or not isinstance(self.interval_s, int | float):
            raise TypeError(f"interval_s must be a number of seconds, got {self.interval_s!r}")
        if not math.isfinite(self.interval_s) or self.interval_s < 0.001:
            raise ValueError(f"interval_s must be at least 0.001 s (1 ms), got {self.interval_s}")
        if self.interval_s > self.window_seconds:
            raise ValueError(
                f"interval_s ({self.interval_s}) is longer than window_seconds ({self.window_seconds}): "
                "some windows would have no events; lower interval_s"
            )
        if self.interval_s > self.duration_s:
            raise ValueError(f"interval_s ({self.interval_s}) is longer than duration_s ({self.duration_s})")
        if not self.kinds:
            raise ValueError(f"kinds must name at least one anomaly kind of {list(ANOMALY_KINDS)}")
        unknown = [k for k in self.kinds if k not in ANOMALY_KINDS]
        if unknown:
            raise ValueError(f"unknown anomaly kind(s) {unknown}; known kinds are {list(ANOMALY_KINDS)}")
        if not self.kpis:
            raise ValueError("kpis must name at least one KPI")
        for k in self.kpis:
            if not isinstance(k, str) or not k.strip():
                raise ValueError(f"KPI names must be non-empty strings, got {k!r}")
            if k in ("timestamp", "device_id"):
                raise ValueError(f"KPI name {k!r} is reserved for the event key fields")
        if len(set(self.kpis)) != len(self.kpis):
            raise ValueError(f"KPI names must be unique, got {list(self.kpis)}")
        if not isinstance(self.device_prefix, str) or not self.device_prefix:
            raise ValueError("device_prefix must be a non-empty string")

    @property
    def end_ms(self) -> int:
        """Exclusive end of the run in epoch milliseconds."""
        return self.start_ms + self.duration_s * 1000

    @property
    def interval_ms(self) -> float:
        """Sampling interval in milliseconds."""
        return float(self.interval_s) * 1000.0

    @property
    def slots(self) -> int:
        """Events per device: whole intervals that fit in the run."""
        return math.floor(self.duration_s * 1000 / self.interval_ms + 1e-9)


@dataclass(frozen=True)
class AnomalyLabel:
    """One injected anomaly episode on one device, over ``[start_ms, end_ms)``."""

    device_id: str
    start_ms: int
    end_ms: int
    kind: str

    def __post_init__(self) -> None:
        if not isinstance(self.device_id, str) or not self.device_id:
            raise ValueError(f"label device_id must be a non-empty string, got {self.device_id!r}")
        if self.kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {self.kind!r}; known kinds are {list(ANOMALY_KINDS)}")
        if int(self.end_ms) <= int(self.start_ms):
            raise ValueError(f"label end_ms ({self.end_ms}) must be after start_ms ({self.start_ms})")
        object.__setattr__(self, "start_ms", int(self.start_ms))
        object.__setattr__(self, "end_ms", int(self.end_ms))

    def to_json(self) -> dict:
        """JSON-friendly dict: ISO-8601 UTC ``start``/``end`` plus epoch-ms ``start_ms``/``end_ms``."""
        return {
            "device_id": self.device_id,
            "start": _iso_ms(self.start_ms),
            "end": _iso_ms(self.end_ms),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, d: dict) -> AnomalyLabel:
        """Inverse of :meth:`to_json`; ``start_ms``/``end_ms`` win over ISO ``start``/``end``."""
        start = d["start_ms"] if "start_ms" in d else _parse_iso_ms(d["start"])
        end = d["end_ms"] if "end_ms" in d else _parse_iso_ms(d["end"])
        return cls(str(d["device_id"]), int(start), int(end), str(d["kind"]))


def device_ids(spec: SimulationSpec) -> list[str]:
    """Device ids of a spec, e.g. ``dev-000`` .. ``dev-019`` (zero-padded, so they sort)."""
    width = max(3, len(str(spec.devices - 1)))
    return [f"{spec.device_prefix}-{i:0{width}d}" for i in range(spec.devices)]


def event_count(spec: SimulationSpec) -> int:
    """Exact number of events :func:`generate_events` yields for ``spec``."""
    return spec.devices * spec.slots


def _episode_windows(kind: str, window_seconds: int, rng: np.random.Generator) -> int:
    lo, hi = _DURATION_MINUTES.get(kind, _DEFAULT_DURATION_MINUTES)
    minutes = int(rng.integers(lo, hi + 1))
    return max(MIN_EPISODE_WINDOWS, int(minutes * 60 / window_seconds + 0.5))


def plan_anomalies(spec: SimulationSpec) -> list[AnomalyLabel]:
    """Place ``spec.anomalies`` episodes, deterministically from the seed; sorted by start.

    Kinds are spread evenly (each kind appears once before any appears twice) and episodes are
    spread evenly over devices. Every episode covers at least 2 whole windows, starts and ends on
    window boundaries, starts after the first 2 whole windows, ends at least 4 whole windows
    before the end, and is at least 2 windows apart from other episodes of its device. Episodes
    are shortened (never below 2 windows) when a short run needs it. Raises ``ValueError`` when
    the episodes cannot fit.
    """
    if spec.anomalies == 0:
        return []
    _check_kinds_affect_kpis(spec.kinds, spec.kpis)
    w_ms = spec.window_seconds * 1000
    first_w = -(-spec.start_ms // w_ms)  # first whole window inside the run
    end_w = spec.end_ms // w_ms  # windows [first_w, end_w) lie wholly inside the run
    lo_w, hi_w = first_w + LEAD_WINDOWS, end_w - TAIL_WINDOWS
    avail = hi_w - lo_w
    per_device = (avail + GAP_WINDOWS) // (MIN_EPISODE_WINDOWS + GAP_WINDOWS) if avail >= 2 else 0
    capacity = per_device * spec.devices
    if spec.anomalies > capacity:
        raise ValueError(
            f"cannot fit {spec.anomalies} anomaly episodes: the run has {max(avail, 0)} usable windows "
            f"of {spec.window_seconds} s per device (after leaving {LEAD_WINDOWS} at the start and "
            f"{TAIL_WINDOWS} at the end), room for {per_device} episode(s) of >= {MIN_EPISODE_WINDOWS} "
            f"windows {GAP_WINDOWS} apart per device, so at most {capacity} for {spec.devices} device(s); "
            "lower anomalies, add devices or lengthen duration_s"
        )
    rng = np.random.default_rng([spec.seed, _S_PLAN])
    order = rng.permutation(len(spec.kinds))
    kinds = [spec.kinds[order[i % len(spec.kinds)]] for i in range(spec.anomalies)]
    rng.shuffle(kinds)
    dev_order = rng.permutation(spec.devices)
    per_dev_kinds: dict[int, list[str]] = {}
    for i, kind in enumerate(kinds):
        per_dev_kinds.setdefault(int(dev_order[i % spec.devices]), []).append(kind)
    ids = device_ids(spec)
    labels: list[AnomalyLabel] = []
    for dev in sorted(per_dev_kinds):
        dkinds = per_dev_kinds[dev]
        n = len(dkinds)
        durs = [min(_episode_windows(k, spec.window_seconds, rng), avail) for k in dkinds]
        while sum(durs) + GAP_WINDOWS * (n - 1) > avail:  # short run: shrink the longest
            j = int(np.argmax(durs))
            durs[j] -= 1
        slack = avail - sum(durs) - GAP_WINDOWS * (n - 1)
        cuts = np.sort(rng.integers(0, slack + 1, size=n))
        pos = lo_w
        for j, (kind, dur) in enumerate(zip(dkinds, durs, strict=True)):
            start_w = pos + int(cuts[j]) - (int(cuts[j - 1]) if j else 0)
            labels.append(AnomalyLabel(ids[dev], start_w * w_ms, (start_w + dur) * w_ms, kind))
            pos = start_w + dur + GAP_WINDOWS
    labels.sort(key=lambda lb: (lb.start_ms, lb.device_id))
    return labels


@dataclass
class _Device:
    """Per-device baseline parameters and its persistent random streams."""

    index: int
    base_lat: float
    base_tp: float
    base_loss: float
    jitter_ratio: float
    phase_h: float
    load_scale: float
    wander: list[tuple[float, float, float]]  # (amplitude, period hours, phase)
    ts_phase: float
    ts_rng: np.random.Generator
    noise: dict[str, np.random.Generator]
    generic: dict[str, tuple[float, float]]  # name -> (base, load sensitivity)
    episodes: list[_Episode] = field(default_factory=list)


@dataclass
class _Episode:
    """An anomaly applied to one device, with its parameters and per-slot random draws."""

    label: AnomalyLabel
    k_lo: int
    params: dict[str, float]
    z1: np.ndarray
    z2: np.ndarray
    u1: np.ndarray
    u2: np.ndarray
    down: np.ndarray  # flapping: True where the device is down


def _kpi_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _make_device(spec: SimulationSpec, index: int) -> _Device:
    rng = np.random.default_rng([spec.seed, _S_DEVICE, index])
    base_lat = float(np.exp(rng.uniform(np.log(5.0), np.log(40.0))))
    base_tp = float(np.exp(rng.uniform(np.log(100.0), np.log(1000.0))))
    base_loss = float(np.exp(rng.uniform(np.log(0.01), np.log(0.3))))
    jitter_ratio = float(rng.uniform(0.10, 0.20))
    phase_h = float(rng.uniform(-1.0, 1.0))
    load_scale = float(rng.uniform(0.9, 1.05))
    wander = [
        (float(rng.uniform(0.01, 0.03)), float(rng.uniform(0.75, 8.0)), float(rng.uniform(0, 2 * np.pi)))
        for _ in range(3)
    ]
    ts_phase = float(rng.uniform(0.1, 0.3))
    names = list(dict.fromkeys([*DEFAULT_KPIS, *spec.kpis]))
    noise = {k: np.random.default_rng([spec.seed, _S_NOISE, index, _kpi_key(k)]) for k in names}
    generic = {}
    for k in spec.kpis:
        if k not in _KNOWN_KPIS:
            g = np.random.default_rng([spec.seed, _S_GENERIC, index, _kpi_key(k)])
            generic[k] = (float(np.exp(g.uniform(np.log(5.0), np.log(500.0)))), float(g.uniform(0.2, 0.8)))
    return _Device(
        index, base_lat, base_tp, base_loss, jitter_ratio, phase_h, load_scale, wander, ts_phase,
        np.random.default_rng([spec.seed, _S_TIME, index]), noise, generic,
    )  # fmt: skip


def _make_episode(spec: SimulationSpec, dev: int, label: AnomalyLabel) -> _Episode:
    rng = np.random.default_rng(
        [
            spec.seed,
            _S_EPISODE,
            dev,
            label.start_ms % 2**63,
            label.end_ms % 2**63,
            ANOMALY_KINDS.index(label.kind),
        ]
    )
    step = spec.interval_ms
    k_lo = max(0, math.floor((label.start_ms - spec.start_ms) / step) - 1)
    k_hi = min(spec.slots, math.ceil((label.end_ms - spec.start_ms) / step) + 1)
    n = max(0, k_hi - k_lo)
    kind = label.kind
    if kind == "latency_spike":
        params = {"lat": rng.uniform(4, 8), "jit": rng.uniform(4, 8), "gen": rng.uniform(4, 8)}
    elif kind == "throughput_collapse":
        params = {
            "tp": rng.uniform(0.02, 0.10),
            "loss_add": rng.uniform(1.5, 4.0),
            "gen": rng.uniform(0.02, 0.1),
        }
    elif kind == "packet_loss_burst":
        params = {"loss": rng.uniform(5, 25), "lat": rng.uniform(1.5, 2.0), "gen": rng.uniform(2, 3)}
    elif kind == "slow_degradation":
        params = {
            "lat": rng.uniform(5, 6),
            "jit": rng.uniform(5, 6),
            "loss": rng.uniform(2, 5),
            "gen": rng.uniform(4, 5),
        }
    else:  # flapping
        params = {}
    z1, z2 = rng.standard_normal((2, n))
    u1, u2 = rng.random((2, n))
    down = np.zeros(n, dtype=bool)
    if kind == "flapping":
        pos, state = 0, True  # starts by going down
        while pos < n:
            run = int(rng.integers(1, 4))
            down[pos : pos + run] = state
            pos, state = pos + run, not state
    return _Episode(label, k_lo, {k: float(v) for k, v in params.items()}, z1, z2, u1, u2, down)


def _device_chunk(spec: SimulationSpec, d: _Device, k0: int, k1: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Timestamps and KPI values of one device for slots ``[k0, k1)``."""
    m = k1 - k0
    ks = np.arange(k0, k1, dtype=np.int64)
    step = spec.interval_ms
    off = (d.ts_phase + np.clip(0.03 * d.ts_rng.standard_normal(m), -0.1, 0.1)) * step
    ts = spec.start_ms + np.floor(ks * step + off).astype(np.int64)
    hours = ts / 3_600_000.0
    load = np.interp((hours + d.phase_h) % 24.0, _PROFILE_HOURS, _PROFILE_LOAD) * d.load_scale
    for amp, period, phase in d.wander:
        load += amp * np.sin(2 * np.pi * hours / period + phase)
    load = np.clip(load, 0.05, 1.3)

    def noise(k: str, sigma: float) -> np.ndarray:
        return np.exp(sigma * d.noise[k].standard_normal(m))

    vals: dict[str, np.ndarray] = {}
    vals[_TP] = d.base_tp * (0.2 + 0.8 * load) * noise(_TP, 0.04)
    vals[_LAT] = d.base_lat * (1.0 + 0.35 * load**2) * noise(_LAT, 0.05)
    vals[_JIT] = d.jitter_ratio * vals[_LAT] * (1.0 + 0.5 * load) * noise(_JIT, 0.12)
    vals[_LOSS] = d.base_loss * (1.0 + 1.5 * load**3) * noise(_LOSS, 0.3)
    for k, (base, sens) in d.generic.items():
        vals[k] = base * (1.0 + sens * (load - 0.5)) * noise(k, 0.05)
    for ep in d.episodes:
        _apply_episode(ep, ts, ks, vals)
    for k in (_TP, _LAT, _JIT, *d.generic):
        np.maximum(vals[k], 0.0, out=vals[k])
    np.clip(vals[_LOSS], 0.0, 100.0, out=vals[_LOSS])
    return ts, vals


def _apply_episode(ep: _Episode, ts: np.ndarray, ks: np.ndarray, vals: dict[str, np.ndarray]) -> None:
    lb = ep.label
    idx = np.nonzero((ts >= lb.start_ms) & (ts < lb.end_ms))[0]
    if idx.size == 0:
        return
    rel = ks[idx] - ep.k_lo
    p = (ts[idx] - lb.start_ms) / (lb.end_ms - lb.start_ms)  # progress through the episode, [0, 1)
    z1, z2, u1, u2 = ep.z1[rel], ep.z2[rel], ep.u1[rel], ep.u2[rel]
    pr = ep.params
    generic = [k for k in vals if k not in _KNOWN_KPIS]
    lat, tp, loss, jit = vals[_LAT], vals[_TP], vals[_LOSS], vals[_JIT]
    if lb.kind == "latency_spike":  # erratic: much more spread than normal, not just a shift
        lat[idx] *= pr["lat"] * np.exp(0.35 * z1 - 0.06)
        jit[idx] *= pr["jit"] * np.exp(0.35 * z2 - 0.06)
        gen = pr["gen"] * np.exp(0.2 * z1)
    elif lb.kind == "throughput_collapse":
        tp[idx] *= pr["tp"] * np.exp(0.25 * z1)
        loss[idx] += pr["loss_add"] * np.exp(0.2 * z2)
        gen = pr["gen"] * np.exp(0.25 * z1)
    elif lb.kind == "packet_loss_burst":
        loss[idx] = pr["loss"] * np.exp(0.25 * z1)
        lat[idx] *= pr["lat"] * np.exp(0.1 * z2)
        gen = pr["gen"] * np.exp(0.1 * z2)
    elif lb.kind == "slow_degradation":
        lat[idx] *= 1.0 + (pr["lat"] - 1.0) * p
        jit[idx] *= 1.0 + (pr["jit"] - 1.0) * p
        loss[idx] = loss[idx] * (1.0 - p) + p * pr["loss"] * np.exp(0.2 * z1)
        gen = 1.0 + (pr["gen"] - 1.0) * p
    else:  # flapping: alternate between up (unchanged) and down every 1-3 events
        down = ep.down[rel]
        di = idx[down]
        tp[di] *= 0.05 * u1[down]
        loss[di] = 30.0 + 30.0 * u2[down]
        gen = np.where(down, 0.05 * u1, 1.0)
    for k in generic:
        vals[k][idx] *= gen


def _resolve_labels(spec: SimulationSpec, labels: Iterable[AnomalyLabel] | None) -> list[AnomalyLabel]:
    if labels is None:
        return plan_anomalies(spec)
    labels = list(labels)
    known = set(device_ids(spec))
    unknown = sorted({lb.device_id for lb in labels} - known)
    if unknown:
        raise ValueError(
            f"labels name device(s) {unknown[:5]} that the spec does not simulate "
            f"(it has {spec.devices} devices with prefix {spec.device_prefix!r})"
        )
    _check_kinds_affect_kpis({lb.kind for lb in labels}, spec.kpis)
    return labels


def _iter_chunks(
    spec: SimulationSpec, labels: Iterable[AnomalyLabel] | None
) -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
    """Time-ordered chunks: (timestamps, device indices, one value array per KPI)."""
    resolved = _resolve_labels(spec, labels)
    index = {name: i for i, name in enumerate(device_ids(spec))}
    devices = [_make_device(spec, i) for i in range(spec.devices)]
    for lb in resolved:
        dev = index[lb.device_id]
        devices[dev].episodes.append(_make_episode(spec, dev, lb))
    n = spec.slots
    # Slot k of every device lies in [start + k*interval, start + (k + 0.5)*interval), so chunks of
    # whole slots never interleave and sorting within a chunk gives a globally ordered stream.
    per_chunk = max(32, _CHUNK_EVENTS // spec.devices)
    for k0 in range(0, n, per_chunk):
        k1 = min(n, k0 + per_chunk)
        parts = [_device_chunk(spec, d, k0, k1) for d in devices]
        ts = np.concatenate([p[0] for p in parts])
        dev_idx = np.repeat(np.arange(spec.devices, dtype=np.int64), k1 - k0)
        order = np.lexsort((dev_idx, ts))
        values = [np.round(np.concatenate([p[1][k] for p in parts])[order], _DECIMALS) for k in spec.kpis]
        yield ts[order], dev_idx[order], values


def generate_events(spec: SimulationSpec, labels: Iterable[AnomalyLabel] | None = None) -> Iterator[dict]:
    """Yield events in timestamp order (devices interleaved), lazily in chunks.

    Each event is ``{"timestamp": epoch ms, "device_id": str, <kpi>: float, ...}`` with KPIs in
    ``spec.kpis`` order. ``labels=None`` injects :func:`plan_anomalies` (spec); pass ``[]`` for
    normal data or your own labels (their devices must exist in the spec).
    """
    names = device_ids(spec)
    keys = ("timestamp", "device_id", *spec.kpis)
    for ts, dev_idx, values in _iter_chunks(spec, labels):
        dev_names = [names[i] for i in dev_idx.tolist()]
        for row in zip(ts.tolist(), dev_names, *(v.tolist() for v in values), strict=True):
            yield dict(zip(keys, row, strict=True))


def generate_frame(spec: SimulationSpec, labels: Iterable[AnomalyLabel] | None = None) -> pd.DataFrame:
    """The same events as :func:`generate_events` as one DataFrame (faster for large runs).

    Columns: ``timestamp`` (int64 epoch ms), ``device_id``, then the KPIs (float64).
    """
    names = np.array(device_ids(spec), dtype=object)
    frames = [
        pd.DataFrame({"timestamp": ts, "device_id": names[dev_idx], **dict(zip(spec.kpis, values, strict=True))})
        for ts, dev_idx, values in _iter_chunks(spec, labels)
    ]
    if not frames:
        return pd.DataFrame({"timestamp": pd.Series(dtype="int64"), "device_id": pd.Series(dtype=object)})
    return pd.concat(frames, ignore_index=True)


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"cannot tell the events format of {path} from its suffix; use one of "
                f"{sorted(_SUFFIX_FORMATS)} or pass fmt ({'/'.join(EVENT_FORMATS)})"
            )
    fmt = fmt.lower()
    if fmt not in EVENT_FORMATS:
        raise ValueError(f"unknown events format {fmt!r}; use one of {list(EVENT_FORMATS)}")
    return fmt


def _ts_out(value: Any, iso: bool) -> Any:
    if iso and isinstance(value, int | np.integer) and not isinstance(value, bool):
        return _iso_ms(int(value))
    return value


def write_events_file(
    events: Iterable[dict],
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    iso_timestamps: bool = False,
) -> int:
    """Write events to JSONL, CSV or Parquet (format from ``fmt`` or the suffix); return the count.

    ``timestamp`` stays epoch ms unless ``iso_timestamps``: then JSONL/CSV get ISO-8601 UTC with
    millisecond precision and ``Z`` and Parquet gets its native ``timestamp[ms, UTC]`` type.
    CSV and Parquet take their columns from the first event; every event must have the same
    fields. The file is written under a temporary name and renamed when complete.
    """
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if fmt == "jsonl":
            count = _write_jsonl(events, tmp, iso_timestamps)
        elif fmt == "csv":
            count = _write_csv(events, tmp, iso_timestamps)
        else:
            count = _write_parquet(events, tmp, iso_timestamps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _write_jsonl(events: Iterable[dict], path: Path, iso: bool) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for e in events:
            if iso and "timestamp" in e:
                e = {**e, "timestamp": _ts_out(e["timestamp"], True)}
            f.write(json.dumps(e, separators=(",", ":"), allow_nan=False))
            f.write("\n")
            count += 1
    return count


def _check_fields(e: dict, columns: list[str], count: int) -> None:
    if list(e) != columns and set(e) != set(columns):
        raise ValueError(f"event {count} has fields {sorted(e)}, the first event had {columns}")


def _write_csv(events: Iterable[dict], path: Path, iso: bool) -> int:
    count = 0
    columns: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        for e in events:
            if count == 0:
                columns = list(e)
                writer.writerow(columns)
            else:
                _check_fields(e, columns, count)
            writer.writerow([_ts_out(e[c], iso) if c == "timestamp" else e[c] for c in columns])
            count += 1
    return count


def _write_parquet(events: Iterable[dict], path: Path, iso: bool, batch_rows: int = 65_536) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    columns: list[str] = []
    schema: pa.Schema | None = None
    writer: pq.ParquetWriter | None = None
    batch: list[dict] = []

    def flush() -> None:
        nonlocal schema, writer
        table = pa.Table.from_pylist(batch, schema=schema)
        if schema is None:
            schema = table.schema
        if iso and "timestamp" in table.column_names and pa.types.is_integer(table.schema.field("timestamp").type):
            i = table.column_names.index("timestamp")
            col = table.column(i).cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
            table = table.set_column(i, "timestamp", col)
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
        batch.clear()

    try:
        for e in events:
            if count == 0:
                columns = list(e)
            else:
                _check_fields(e, columns, count)
            batch.append(e)
            count += 1
            if len(batch) >= batch_rows:
                flush()
        if batch:
            flush()
        if writer is None:  # no events: an empty file with the key columns
            ts_type = pa.timestamp("ms", tz="UTC") if iso else pa.int64()
            empty = pa.schema([("timestamp", ts_type), ("device_id", pa.string())])
            pq.write_table(empty.empty_table(), str(path))
    finally:
        if writer is not None:
            writer.close()
    return count


def write_labels(labels: Iterable[AnomalyLabel], path: str | os.PathLike[str]) -> None:
    """Write labels as JSONL, one :meth:`AnomalyLabel.to_json` object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for lb in labels:
            f.write(json.dumps(lb.to_json(), separators=(",", ":")))
            f.write("\n")


def read_labels(path: str | os.PathLike[str]) -> list[AnomalyLabel]:
    """Read labels written by :func:`write_labels` (blank lines are skipped)."""
    path = Path(path)
    labels = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                labels.append(AnomalyLabel.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not a valid anomaly label ({type(e).__name__}: {e})") from e
    return labels

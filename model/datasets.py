"""Adapters from the labelled public KPI data (``shared/datasets``) to labelled events.

Every adapter returns :class:`LabelledEntity` objects whose ``events`` frame has the columns
``timestamp`` (int64 epoch ms, UTC), ``device_id``, one float column per KPI, ``label`` (0/1) and
``split`` (``"train"``/``"test"``), in time order.

ASD (12 servers, 19 metrics, 5-minute rows, no timestamps in the files): row ``i`` of an entity
is at ``ASD_START_MS + i * 5 min`` and the test rows continue right after the training rows.
Training rows have label 0 (the publishers give no labels for them); test rows take
``test_label``. The interpretation labels ``start-end:d1,d2,...`` give 0-based row indices into
the TEST file with an inclusive end (checked against ``test_label`` on all 12 entities: the
labelled runs are exactly ``[start, end + 1)``; omi-11's run 757-815 is listed as two segments
757-781 and 782-815) and 1-based metric columns (1..19, no 0 occurs).

NAB (22 univariate series): ``label`` is 1 for rows inside a window of
``labels/combined_windows.json`` (both ends inclusive, as NAB scores them). NAB has no training
set: the first 15 % of the rows of each series (NAB's probationary period) are the fitting part
(``split="train"``) and the rest the test part. The fitting part may contain labelled anomalies
(machine_temperature_system_failure does); nothing is dropped, duplicates and out-of-order
timestamps included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from model.event_metrics import Episode

ASD_ENTITIES = tuple(f"omi-{i}" for i in range(1, 13))
ASD_N_METRICS = 19
ASD_KPIS = tuple(f"m{j:02d}" for j in range(1, ASD_N_METRICS + 1))
ASD_INTERVAL_MS = 5 * 60 * 1000
# The ASD files carry no timestamps; rows are placed from this arbitrary start (2020-01-01T00:00Z),
# which is aligned to every window length that divides a day.
ASD_START_MS = 1_577_836_800_000
NAB_KPI = "value"
NAB_FIT_FRACTION = 0.15
NAB_FOLDERS = ("realKnownCause", "realAWSCloudwatch")
ENV_VAR = "NETANOMALY_DATASETS"
EVENT_COLUMNS = ("timestamp", "device_id")


class Segment(NamedTuple):
    """An interpretation label: the KPIs that explain an anomalous stretch ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    kpis: list[str]


@dataclass(frozen=True)
class LabelledEntity:
    """One entity (server / series) as labelled events plus its interpretation segments."""

    name: str
    events: pd.DataFrame
    kpis: tuple[str, ...]
    segments: tuple[Segment, ...] = ()
    interval_ms: int | None = None
    notes: dict = field(default_factory=dict)


def datasets_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The datasets folder: ``root``, else ``$NETANOMALY_DATASETS``, else ``shared/datasets`` beside the repo."""
    if root is not None:
        return Path(root)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found; point {ENV_VAR} (or --data-root) at the folder holding asd/ and nab/"
        )
    return path


# ------------------------------------------------------------------------------------------- ASD
def read_asd_matrix(path: Path) -> np.ndarray:
    """An ASD ``train``/``test`` file (gzip CSV, no header) as a float64 [rows, 19] array."""
    arr = pd.read_csv(_require(path), header=None, compression="gzip").to_numpy(dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != ASD_N_METRICS:
        raise ValueError(f"{path}: expected {ASD_N_METRICS} columns, got shape {arr.shape}")
    return arr


def parse_interpretation_label(text: str) -> list[tuple[int, int, list[int]]]:
    """Lines ``start-end:d1,d2`` as ``(start_row, end_row_exclusive, [0-based metric indices])``.

    ``start``/``end`` are 0-based test-row indices with an inclusive end; dims are 1-based.
    """
    out = []
    for line in text.split():
        rows, _, dims = line.partition(":")
        a, _, b = rows.partition("-")
        idx = sorted({int(d) - 1 for d in dims.split(",") if d.strip()})
        if not idx or min(idx) < 0 or max(idx) >= ASD_N_METRICS:
            raise ValueError(f"interpretation label {line!r} names metrics outside 1..{ASD_N_METRICS}")
        out.append((int(a), int(b) + 1, idx))
    return out


def load_asd_entity(entity: str, root: str | os.PathLike[str] | None = None) -> LabelledEntity:
    """One ASD server as labelled events (train rows first, then test rows) and its segments."""
    base = datasets_root(root) / "asd"
    train = read_asd_matrix(base / "train" / f"{entity}.txt.gz")
    test = read_asd_matrix(base / "test" / f"{entity}.txt.gz")
    test_label = np.loadtxt(_require(base / "test_label" / f"{entity}.txt"), dtype=np.float64).astype(np.int8)
    if test_label.shape != (test.shape[0],):
        raise ValueError(f"{entity}: {test_label.shape[0]} test labels for {test.shape[0]} test rows")
    n_train, n_test = train.shape[0], test.shape[0]
    n = n_train + n_test
    ts = ASD_START_MS + np.arange(n, dtype=np.int64) * ASD_INTERVAL_MS
    events = pd.DataFrame(np.vstack([train, test]), columns=list(ASD_KPIS))
    events.insert(0, "device_id", entity)
    events.insert(0, "timestamp", ts)
    events["label"] = np.concatenate([np.zeros(n_train, dtype=np.int8), test_label])
    events["split"] = np.array(["train"] * n_train + ["test"] * n_test, dtype=object)
    segments = []
    interp = base / "interpretation_label" / f"{entity}.txt"
    if interp.is_file():
        for a, b, idx in parse_interpretation_label(interp.read_text(encoding="utf-8")):
            segments.append(
                Segment(int(ts[n_train + a]), int(ts[n_train + b - 1]) + ASD_INTERVAL_MS, [ASD_KPIS[i] for i in idx])
            )
    return LabelledEntity(
        entity, events, ASD_KPIS, tuple(segments), ASD_INTERVAL_MS, {"n_train": n_train, "n_test": n_test}
    )


def load_asd(entities: Sequence[str] | None = None, root: str | os.PathLike[str] | None = None) -> list[LabelledEntity]:
    """Several ASD servers (default: all 12)."""
    names = list(entities) if entities else list(ASD_ENTITIES)
    unknown = [e for e in names if e not in ASD_ENTITIES]
    if unknown:
        raise ValueError(f"unknown ASD entities {unknown}; known: {', '.join(ASD_ENTITIES)}")
    return [load_asd_entity(e, root) for e in names]


# ------------------------------------------------------------------------------------------- NAB
def nab_windows(root: str | os.PathLike[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """``labels/combined_windows.json``: relative CSV path -> list of [start, end] (inclusive)."""
    path = _require(datasets_root(root) / "nab" / "labels" / "combined_windows.json")
    return {k: [(a, b) for a, b in v] for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def nab_series(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Series name (CSV stem) -> relative CSV path, for every NAB CSV present with labels."""
    base = datasets_root(root) / "nab" / "data"
    windows = nab_windows(root)
    out = {}
    for folder in NAB_FOLDERS:
        for csv in sorted((base / folder).glob("*.csv")):
            rel = f"{folder}/{csv.name}"
            if rel in windows:
                out[csv.stem] = rel
    if not out:
        raise FileNotFoundError(f"no labelled NAB series under {base}")
    return out


def _to_ms(values: Iterable) -> np.ndarray:
    """Naive NAB timestamps (taken as UTC) to epoch ms."""
    return (pd.to_datetime(pd.Series(list(values)), utc=True).astype("int64") // 1_000_000).to_numpy(np.int64)


def load_nab_series(
    name: str, root: str | os.PathLike[str] | None = None, fit_fraction: float = NAB_FIT_FRACTION
) -> LabelledEntity:
    """One NAB series as labelled events; the first ``fit_fraction`` of its rows is the fitting part."""
    series = nab_series(root)
    if name not in series:
        raise ValueError(f"unknown NAB series {name!r}; known: {', '.join(series)}")
    rel = series[name]
    raw = pd.read_csv(datasets_root(root) / "nab" / "data" / rel)
    ts = _to_ms(raw["timestamp"])
    label = np.zeros(len(raw), dtype=np.int8)
    wins = nab_windows(root)[rel]
    for a, b in wins:
        a_ms, b_ms = _to_ms([a, b])
        label[(ts >= a_ms) & (ts <= b_ms)] = 1
    n_fit = int(np.floor(len(raw) * fit_fraction))
    events = pd.DataFrame(
        {
            "timestamp": ts,
            "device_id": name,
            NAB_KPI: raw["value"].to_numpy(np.float64),
            "label": label,
            "split": np.where(np.arange(len(raw)) < n_fit, "train", "test").astype(object),
        }
    )
    interval = int(np.median(np.diff(np.sort(ts)))) if len(ts) > 1 else None
    notes = {
        "n_fit": n_fit,
        "n_test": len(raw) - n_fit,
        "labelled_in_fit": int(label[:n_fit].sum()),
        "windows": len(wins),
        "source": rel,
    }
    return LabelledEntity(name, events, (NAB_KPI,), (), interval, notes)


def load_nab(
    names: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    fit_fraction: float = NAB_FIT_FRACTION,
) -> list[LabelledEntity]:
    """Several NAB series (default: all 22 present)."""
    wanted = list(names) if names else list(nab_series(root))
    return [load_nab_series(n, root, fit_fraction) for n in wanted]


# ------------------------------------------------------------------------------ episodes + files
def episodes_from_events(events: pd.DataFrame, interval_ms: int | None = None, kind: str = "") -> list[Episode]:
    """Contiguous labelled events of each device (in time order) as episodes.

    An episode runs from its first labelled event to the next event after its last labelled one
    (or, at the end of the data, the last labelled event plus ``interval_ms``, default the
    device's median sampling interval).
    """
    out: list[Episode] = []
    for dev, g in events.sort_values(["device_id", "timestamp"], kind="stable").groupby("device_id", sort=False):
        ts = g["timestamp"].to_numpy(np.int64)
        lab = g["label"].to_numpy() > 0
        if not lab.any():
            continue
        step = interval_ms if interval_ms is not None else (int(np.median(np.diff(ts))) if len(ts) > 1 else 1)
        d = np.diff(np.concatenate([[0], lab.astype(np.int8), [0]]))
        for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
            end = int(ts[e]) if e < len(ts) else int(ts[e - 1]) + max(1, step)
            out.append(Episode(str(dev), int(ts[s]), end, kind))
    return out


def _iso(ms: pd.Series) -> pd.Series:
    return pd.to_datetime(ms, unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, -3) + "Z"


def write_labelled_events(df: pd.DataFrame, path: str | os.PathLike[str], *, iso_timestamps: bool = False) -> Path:
    """Write labelled events as .jsonl, .csv or .parquet (by suffix); timestamps epoch ms or ISO-8601 UTC."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    if iso_timestamps:
        out["timestamp"] = _iso(out["timestamp"])
    if path.suffix == ".jsonl":
        out.to_json(path, orient="records", lines=True)
    elif path.suffix == ".csv":
        out.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        raise ValueError(f"{path}: use a .jsonl, .csv or .parquet file name")
    return path


def write_episodes(episodes: Iterable[Episode], path: str | os.PathLike[str]) -> Path:
    """Episodes as JSONL: device_id, start/end (ISO-8601 UTC), start_ms/end_ms, kind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for e in episodes:
            rec = {
                "device_id": e.device_id,
                "start": _iso(pd.Series([e.start_ms])).iloc[0],
                "end": _iso(pd.Series([e.end_ms])).iloc[0],
                "start_ms": e.start_ms,
                "end_ms": e.end_ms,
                "kind": e.kind,
            }
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return path


def read_episodes(path: str | os.PathLike[str]) -> list[Episode]:
    """Episodes from a JSONL file of :func:`write_episodes` (``start_ms``/``end_ms`` or ISO ``start``/``end``)."""
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                start = int(d["start_ms"]) if "start_ms" in d else int(_to_ms([d["start"]])[0])
                end = int(d["end_ms"]) if "end_ms" in d else int(_to_ms([d["end"]])[0])
                out.append(Episode(str(d["device_id"]), start, end, str(d.get("kind", ""))))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: not a labelled episode ({type(e).__name__}: {e})") from e
    return out

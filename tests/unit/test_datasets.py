"""Dataset adapters against the raw files, read independently here (skipped without shared/datasets)."""

from __future__ import annotations

import csv
import gzip
import json
import os
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from model.datasets import (
    ASD_INTERVAL_MS,
    ASD_KPIS,
    datasets_root,
    episodes_from_events,
    load_asd_entity,
    load_nab_series,
    nab_series,
    read_episodes,
    write_episodes,
    write_labelled_events,
)

ROOT = datasets_root()
# CI always has shared/datasets beside the clone: there a missing folder must fail, not skip.
pytestmark = pytest.mark.skipif(
    not (ROOT / "asd").is_dir() and not os.environ.get("CI"),
    reason=f"public datasets not found at {ROOT} (set NETANOMALY_DATASETS)",
)


def _gz_rows(path) -> list[list[str]]:
    with gzip.open(path, "rt") as fh:
        return [r for r in csv.reader(fh) if r]


def test_asd_omi1_counts_and_labels_match_the_raw_files():
    base = ROOT / "asd"
    train = _gz_rows(base / "train" / "omi-1.txt.gz")
    test = _gz_rows(base / "test" / "omi-1.txt.gz")
    labels = [int(float(x)) for x in (base / "test_label" / "omi-1.txt").read_text().split()]
    assert (len(train), len(test)) == (8640, 4320)
    assert {len(r) for r in train + test} == {19}

    ent = load_asd_entity("omi-1")
    ev = ent.events
    assert list(ev.columns) == ["timestamp", "device_id", *ASD_KPIS, "label", "split"]
    assert (ev["split"] == "train").sum() == 8640 and (ev["split"] == "test").sum() == 4320
    assert int(ev["label"].sum()) == sum(labels) == 441
    assert int(ev.loc[ev["split"] == "train", "label"].sum()) == 0
    assert ev["label"].iloc[8640:].tolist() == labels
    assert float(ev["m01"].iloc[0]) == float(train[0][0])
    assert float(ev["m19"].iloc[8640]) == float(test[0][18])
    assert set(np.diff(ev["timestamp"].to_numpy())) == {ASD_INTERVAL_MS}


def test_asd_interpretation_rows_are_zero_based_inclusive_test_rows():
    base = ROOT / "asd"
    ent = load_asd_entity("omi-1")
    lines = (base / "interpretation_label" / "omi-1.txt").read_text().split()
    assert len(ent.segments) == len(lines)
    labels = np.array([int(float(x)) for x in (base / "test_label" / "omi-1.txt").read_text().split()])
    t0 = int(ent.events["timestamp"].iloc[8640])
    for seg, line in zip(ent.segments, lines, strict=True):
        a, b = (int(v) for v in line.split(":")[0].split("-"))
        assert seg.start_ms == t0 + a * ASD_INTERVAL_MS
        assert seg.end_ms == t0 + (b + 1) * ASD_INTERVAL_MS
        assert labels[a : b + 1].all()  # every row of the segment, end included, is labelled
        dims = [int(d) for d in line.split(":")[1].split(",")]
        assert seg.kpis == [f"m{d:02d}" for d in sorted(dims)]  # 1-based columns
    # the segments cover exactly the labelled rows
    covered = np.zeros_like(labels)
    for seg in ent.segments:
        covered[(seg.start_ms - t0) // ASD_INTERVAL_MS : (seg.end_ms - t0) // ASD_INTERVAL_MS] = 1
    assert (covered == labels).all()


def _nab_expected(rel: str) -> tuple[int, int]:
    windows = json.loads((ROOT / "nab" / "labels" / "combined_windows.json").read_text())[rel]
    bounds = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in windows]
    rows = labelled = 0
    with open(ROOT / "nab" / "data" / rel, newline="") as fh:
        for rec in csv.DictReader(fh):
            rows += 1
            t = datetime.fromisoformat(rec["timestamp"])
            labelled += any(a <= t <= b for a, b in bounds)
    return rows, labelled


def test_nab_has_22_series():
    assert len(nab_series()) == 22


@pytest.mark.parametrize(
    "name",
    ["ec2_cpu_utilization_24ae8d", "machine_temperature_system_failure", "nyc_taxi", "ec2_cpu_utilization_c6585a"],
)
def test_nab_rows_and_labels_match_the_raw_files(name):
    rel = nab_series()[name]
    rows, labelled = _nab_expected(rel)
    ent = load_nab_series(name)
    ev = ent.events
    assert len(ev) == rows
    assert int(ev["label"].sum()) == labelled
    n_fit = int(rows * 0.15)
    assert (ev["split"] == "train").sum() == n_fit and ev["split"].iloc[:n_fit].eq("train").all()
    assert ent.kpis == ("value",)


def test_write_events_and_episodes_round_trip(tmp_path):
    ent = load_asd_entity("omi-2")
    eps = episodes_from_events(ent.events, ent.interval_ms)
    assert len(eps) == 4 and all(e.device_id == "omi-2" for e in eps)
    labelled_ms = sum(e.end_ms - e.start_ms for e in eps)
    assert labelled_ms == int(ent.events["label"].sum()) * ASD_INTERVAL_MS
    write_episodes(eps, tmp_path / "labels.jsonl")
    assert read_episodes(tmp_path / "labels.jsonl") == eps
    small = ent.events.iloc[:50]
    for suffix, iso in ((".jsonl", True), (".csv", False), (".parquet", True)):
        path = write_labelled_events(small, tmp_path / f"ev{suffix}", iso_timestamps=iso)
        back = {".jsonl": lambda p: pd.read_json(p, lines=True), ".csv": pd.read_csv, ".parquet": pd.read_parquet}[
            suffix
        ](path)
        assert len(back) == 50 and list(back.columns) == list(small.columns)
        ts = back["timestamp"]
        ms = (pd.to_datetime(ts, utc=True).astype("int64") // 1_000_000) if iso else ts
        assert ms.tolist() == small["timestamp"].tolist()

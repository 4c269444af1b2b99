"""End to end evaluation on a tiny synthetic labelled set with a fast detector (PCA)."""

from __future__ import annotations

import json

import click
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from model.datasets import Segment, write_labelled_events
from model.evaluate import (
    PLOT_NAMES,
    aggregate,
    detector_factories,
    evaluate_entity,
    kpi_errors,
    label_windows,
    summary_table,
)
from model.features import FeatureSpec
from netanomaly.config import TrainingConfig
from netanomaly.eval_commands import register

STEP = 300_000  # 5-minute events
T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
KPIS = ("a", "b", "c")


def synthetic_events(n: int = 1440, train_rows: int = 864, seed: int = 0) -> tuple[pd.DataFrame, list[Segment]]:
    """One device: b follows a (daily cycle), c is noise; test anomalies break the a-b relation."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = np.sin(2 * np.pi * t / 288) + 0.05 * rng.normal(size=n)
    b = 2 * a + 0.05 * rng.normal(size=n)
    c = 0.1 * rng.normal(size=n)
    label = np.zeros(n, dtype=np.int8)
    segments = []
    for start in (900, 1000, 1150, 1300):
        sl = slice(start, start + 12)
        b[sl] = -2 * a[sl] + 1.5
        label[sl] = 1
        segments.append(Segment(T0 + start * STEP, T0 + (start + 12) * STEP, ["a", "b"]))
    ev = pd.DataFrame({"timestamp": T0 + t * STEP, "device_id": "dev-1", "a": a, "b": b, "c": c, "label": label})
    ev["split"] = np.where(t < train_rows, "train", "test")
    return ev, segments


def test_window_labels_and_parts():
    ev, _ = synthetic_events()
    spec = FeatureSpec(KPIS, ("mean", "std"), True, 1800)
    w = label_windows(ev, spec)
    assert len(w.x) == 1440 // 6
    assert int((~w.is_test).sum()) == 864 // 6
    # each 12-row episode starting on a window boundary (900, 1000 = 166*6+4, ...) covers 2 or 3 windows
    assert int(w.labels.sum()) == 2 + 3 + 3 + 3
    assert w.x.shape[1] == len(spec.feature_names)
    err = np.ones((2, len(spec.feature_names)))
    assert kpi_errors(err, spec).tolist() == [[2.0, 2.0, 2.0]] * 2  # event_count belongs to no KPI


def test_evaluate_entity_with_pca_writes_metrics_and_plots(tmp_path):
    ev, segments = synthetic_events()
    spec = FeatureSpec(KPIS, ("mean", "std", "min", "max"), True, 1800)
    cfg = TrainingConfig(threshold_quantile=0.99, threshold_margin=1.2)
    facts = detector_factories(["pca"], cfg)
    assert list(facts) == ["pca", "random"]
    res = evaluate_entity(
        ev,
        spec,
        facts,
        name="synthetic",
        segments=segments,
        threshold_quantile=cfg.threshold_quantile,
        threshold_margin=cfg.threshold_margin,
        out_dir=tmp_path / "synthetic",
    )
    pca, rnd = res["detectors"]["pca"], res["detectors"]["random"]
    assert pca["auroc"] > 0.9
    assert pca["event_recall"] == 1.0 and pca["hitrate@100"] > 0.9
    assert 0.2 < rnd["auroc"] < 0.8
    assert res["windows"]["test_anomalous"] == 11
    saved = json.loads((tmp_path / "synthetic" / "metrics.json").read_text())
    assert saved["detectors"]["pca"]["auroc"] == pytest.approx(pca["auroc"])
    for name in PLOT_NAMES:
        assert (tmp_path / "synthetic" / name).stat().st_size > 5000
    mean = aggregate([res])
    assert mean["pca"]["auroc"] == pytest.approx(pca["auroc"])
    assert "pca" in summary_table({"mean": mean})


@pytest.mark.parametrize("suffix,iso", [(".csv", False), (".jsonl", True)])
def test_cli_evaluate_events_file(tmp_path, suffix, iso):
    ev, segments = synthetic_events()
    path = tmp_path / f"events{suffix}"
    # no split column: the first 60 % of the time trains
    write_labelled_events(ev.drop(columns="split"), path, iso_timestamps=iso)
    interp = tmp_path / "interp.jsonl"
    interp.write_text(
        "".join(
            json.dumps({"device_id": "dev-1", "start_ms": s.start_ms, "end_ms": s.end_ms, "kpis": s.kpis}) + "\n"
            for s in segments
        )
    )

    @click.group()
    def main() -> None:
        """Test group."""

    register(main)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--events",
            str(path),
            "--interpretation",
            str(interp),
            "--train-fraction",
            "0.6",
            "--detectors",
            "pca",
            "--window-seconds",
            "1800",
            "--set",
            "training.threshold_quantile=0.99",
            "--out",
            str(out),
            "--no-progress",
            "--wandb-mode",
            "offline",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["mean"]["pca"]["auroc"] > 0.9
    assert summary["entities"]["events"]["windows"]["test"] == 96
    assert (out / "events" / "roc.png").is_file() and (out / "auroc_by_entity.png").is_file()
    assert "pca" in result.output and "random" in result.output

    # the W&B offline run holds the mean metrics and the plots (read back from its files)
    import subprocess
    import sys
    from pathlib import Path

    run_dir = Path(result.output.split("W&B run (offline) in ")[1].split()[0])
    wandb_cli = Path(sys.executable).parent / "wandb"
    proc = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "pca/auroc" in text and "plots/events/roc" in text and "per_entity" in text

"""Evaluate detectors on labelled events: windows, fit on the training part, label-free threshold, metrics.

Per entity (a server, a series, or a labelled events file):

1. Events are windowed with :class:`~model.features.FeatureSpec` and
   :func:`~model.features.compute_window_features`; a window is anomalous when ANY of its events
   is labelled, and belongs to the test part when any of its events does.
2. Every detector (and the ``random`` and ``pca`` baselines, through the same code) is fitted on
   the training windows. Its threshold is ``quantile(validation_scores, q) * margin`` from the
   held-out NORMAL validation part of the training windows: no test label is used.
3. All windows are scored (sequence models thus see the training windows as context) and the
   test windows are compared with their labels: AUROC, AUPRC, precision/recall/F1 at the
   threshold, event recall and time to detect, and, as secondary numbers, the best F1 over all
   thresholds (optimistic: it looks at the test labels) and point-adjusted F1.
4. Explanations: the per-feature error terms are summed per KPI (all ``<kpi>__<stat>``
   features; ``event_count`` belongs to no KPI) and compared with the interpretation labels
   (HitRate@100% and @150%) on the labelled windows they cover.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from model.datasets import LabelledEntity, Segment
from model.features import FeatureSpec, compute_window_features
from model.metrics import detection_metrics, hit_rate, prf_at_threshold
from netanomaly.config import TrainingConfig

BASELINES = ("random", "pca")
DEFAULT_DETECTORS = ("autoencoder", "lstm_autoencoder", "isolation_forest")
HITRATE_P = (1.0, 1.5)
MIN_TRAIN_WINDOWS = 10
PLOT_NAMES = ("roc.png", "pr.png", "timeline.png", "errors_heatmap.png")
SUMMARY_METRICS = (
    "auroc",
    "auprc",
    "f1",
    "precision",
    "recall",
    "event_recall",
    "event_precision",
    "median_time_to_detect_s",
    "hitrate@100",
    "hitrate@150",
    "best_f1_optimistic",
    "point_adjusted_f1",
    "f1_no_margin",
    "fit_seconds",
)

Factory = Callable[[int], Any]
"""Makes a fresh, unfitted detector for ``n_features`` window features."""


def detector_factories(
    names: Sequence[str], cfg: TrainingConfig, *, baselines: bool = True, overrides: Mapping[str, dict] | None = None
) -> dict[str, Factory]:
    """Factories of the named detectors (``model.detectors``), plus the random and PCA baselines.

    ``overrides`` maps a detector name to TrainingConfig updates for that detector only.
    """
    from model.detectors import make_detector

    wanted = list(dict.fromkeys([*names, *(BASELINES if baselines else ())]))
    out: dict[str, Factory] = {}
    for name in wanted:
        upd = dict((overrides or {}).get(name, {}))
        if name != "random":
            upd["detector"] = name
        dcfg = cfg.model_copy(update=upd) if upd else cfg

        def factory(n_features: int, _cfg: TrainingConfig = dcfg, _name: str = name) -> Any:
            return make_detector(_cfg, n_features, name=_name)

        out[name] = factory
    return out


@dataclass(frozen=True)
class Windows:
    """Labelled windows of one entity, in the order of :func:`compute_window_features`."""

    frame: pd.DataFrame
    x: np.ndarray
    labels: np.ndarray
    is_test: np.ndarray
    devices: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray


def label_windows(events: pd.DataFrame, spec: FeatureSpec) -> Windows:
    """Window features of labelled events with a window label (any event) and part (test if any event is).

    ``events`` needs ``timestamp`` (epoch ms) or ``event_time_ms``, ``device_id``, the spec's KPIs,
    ``label`` and optionally ``split`` (``train``/``test``; absent: all test).
    """
    ev = events.rename(columns={"timestamp": "event_time_ms"}) if "event_time_ms" not in events else events
    missing = [c for c in ("device_id", "event_time_ms", "label", *spec.kpis) if c not in ev.columns]
    if missing:
        raise KeyError(f"events lack columns {missing}")
    bad = ~np.isfinite(ev[list(spec.kpis)].to_numpy(np.float64))
    if bad.any():
        raise ValueError(f"{int(bad.any(axis=1).sum())} events have non-finite KPI values; repair or drop them first")
    feats = compute_window_features(ev, spec)
    w_ms = spec.window_seconds * 1000
    keys = pd.DataFrame(
        {
            "device_id": ev["device_id"].to_numpy(),
            "_w": (ev["event_time_ms"].to_numpy(np.int64) // w_ms) * w_ms,
            "label": ev["label"].to_numpy(np.int64) > 0,
            "test": (ev["split"].to_numpy() == "test") if "split" in ev.columns else True,
        }
    )
    per_window = keys.groupby(["device_id", "_w"], sort=False)[["label", "test"]].any().reset_index()
    start_ms = (feats["window_start"].astype("int64") // 1_000_000).to_numpy(np.int64)
    joined = pd.DataFrame({"device_id": feats["device_id"].to_numpy(), "_w": start_ms}).merge(
        per_window, on=["device_id", "_w"], how="left", validate="one_to_one"
    )
    return Windows(
        frame=feats,
        x=feats[spec.feature_names].to_numpy(np.float32),
        labels=joined["label"].to_numpy(bool).astype(np.int8),
        is_test=joined["test"].to_numpy(bool),
        devices=feats["device_id"].astype(str).to_numpy(object),
        start_ms=start_ms,
        end_ms=start_ms + w_ms,
    )


def kpi_errors(errors: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Per-KPI error ``[N, K]``: the sum of the terms of each KPI's ``<kpi>__<stat>`` features."""
    names = spec.feature_names
    out = np.zeros((errors.shape[0], len(spec.kpis)), dtype=np.float64)
    for j, k in enumerate(spec.kpis):
        cols = [i for i, n in enumerate(names) if n.startswith(f"{k}__")]
        out[:, j] = errors[:, cols].astype(np.float64).sum(axis=1)
    return out


def window_ground_truth(
    start_ms: np.ndarray, end_ms: np.ndarray, labels: np.ndarray, segments: Sequence[Segment], kpis: Sequence[str]
) -> list[set[int]]:
    """KPI indices of the interpretation segments overlapping each labelled window (empty set otherwise)."""
    index = {k: i for i, k in enumerate(kpis)}
    out: list[set[int]] = []
    for s, e, y in zip(start_ms, end_ms, labels, strict=True):
        g: set[int] = set()
        if y:
            for seg in segments:
                if seg.start_ms < e and s < seg.end_ms:
                    g.update(index[k] for k in seg.kpis if k in index)
        out.append(g)
    return out


def _finite(v: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def evaluate_entity(
    events: pd.DataFrame,
    spec: FeatureSpec,
    detectors: Mapping[str, Factory],
    *,
    name: str = "entity",
    segments: Sequence[Segment] = (),
    threshold_quantile: float = 0.999,
    threshold_margin: float = 1.5,
    out_dir: Path | None = None,
    plots: bool = True,
    main_detector: str | None = None,
    progress: bool = False,
    seed: int = 7,
) -> dict:
    """Fit, threshold and score every detector on one entity; return (and write) its metrics.

    ``detectors`` maps a name to a factory (:func:`detector_factories`). With ``out_dir`` the
    metrics go to ``out_dir/metrics.json`` and, with ``plots``, ROC / PR curves, the score
    timeline (``main_detector``: default the first detector) and its per-KPI error heat map.
    """
    w = label_windows(events, spec)
    train = ~w.is_test
    n_train, n_test = int(train.sum()), int(w.is_test.sum())
    if n_train < MIN_TRAIN_WINDOWS:
        raise ValueError(
            f"{name}: only {n_train} training windows (need {MIN_TRAIN_WINDOWS}); use a shorter window "
            "or a larger training part"
        )
    if n_test == 0:
        raise ValueError(f"{name}: no test windows; mark some events split=test or lower the training fraction")
    y = w.labels[w.is_test]
    ws, we, dev = w.start_ms[w.is_test], w.end_ms[w.is_test], w.devices[w.is_test]
    gt = window_ground_truth(ws, we, y, segments, spec.kpis) if segments else []
    result: dict[str, Any] = {
        "entity": name,
        "window_seconds": spec.window_seconds,
        "features": spec.feature_names,
        "windows": {
            "train": n_train,
            "test": n_test,
            "test_anomalous": int(y.sum()),
            "train_labelled": int(w.labels[train].sum()),
            "test_anomalous_ratio": float(y.mean()) if n_test else None,
        },
        "threshold_rule": f"quantile(validation_scores, {threshold_quantile}) * {threshold_margin}",
        "detectors": {},
    }
    scores: dict[str, np.ndarray] = {}
    errors: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    for dname, factory in tqdm(detectors.items(), desc=name, unit="det", disable=not progress, leave=False):
        det = factory(w.x.shape[1])
        t0 = time.perf_counter()
        det.fit(w.x[train], devices=w.devices[train], progress=False)
        fit_s = time.perf_counter() - t0
        val = det.validation_scores()
        q_val = float(np.quantile(val, threshold_quantile))
        thr = q_val * threshold_margin
        t0 = time.perf_counter()
        err_all = det.errors(w.x, devices=w.devices).astype(np.float64)
        score_s = time.perf_counter() - t0
        s = err_all.mean(axis=1)[w.is_test]
        err = err_all[w.is_test]
        m = detection_metrics(y, s, thr, ws, we, dev)
        m.update({"fit_seconds": fit_s, "score_seconds": score_s, "n_validation": int(len(val))})
        # Sensitivity to the margin, still label-free: the bare validation quantile as threshold.
        m["f1_no_margin"] = prf_at_threshold(y, s, q_val)["f1"]
        m["flagged_no_margin"] = int((s > q_val).sum())
        hist = getattr(det, "history", None)
        if hist is not None and getattr(hist, "best_epoch", 0):
            m.update({"epochs": len(hist.train_loss), "best_epoch": int(hist.best_epoch)})
        if gt:
            kerr = kpi_errors(err, spec)
            for p in HITRATE_P:
                m[f"hitrate@{round(p * 100)}"] = hit_rate(kerr, gt, p, rng=np.random.default_rng(seed))
        result["detectors"][dname] = m
        scores[dname], errors[dname], thresholds[dname] = s, err, thr
    if gt:
        result["windows"]["test_with_interpretation"] = int(sum(1 for g in gt if g))
    result = _finite(result)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if plots:
            main = main_detector if main_detector in scores else next(iter(scores))
            _entity_plots(out_dir, name, spec, y, scores, errors[main], thresholds[main], main, ws)
    return result


def _entity_plots(
    out_dir: Path,
    name: str,
    spec: FeatureSpec,
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    main_errors: np.ndarray,
    threshold: float,
    main: str,
    start_ms: np.ndarray,
) -> None:
    from model import plots

    times = start_ms.astype("datetime64[ms]")
    plots.plot_roc(y, scores, out_dir / "roc.png", f"{name}: ROC of test windows")
    plots.plot_pr(y, scores, out_dir / "pr.png", f"{name}: precision-recall of test windows")
    plots.plot_timeline(
        times,
        scores[main],
        y,
        threshold,
        out_dir / "timeline.png",
        f"{name}: {main} score per {spec.window_seconds // 60}-min test window",
        spec.window_seconds,
    )
    plots.plot_error_heatmap(
        times,
        kpi_errors(main_errors, spec),
        spec.kpis,
        y,
        out_dir / "errors_heatmap.png",
        f"{name}: {main} error per KPI (test windows)",
    )


def aggregate(results: Sequence[dict]) -> dict:
    """Mean (over entities with a finite value) of every summary metric per detector, with counts."""
    detectors = list(dict.fromkeys(d for r in results for d in r["detectors"]))
    out: dict[str, dict] = {}
    for d in detectors:
        stats: dict[str, Any] = {}
        for metric in SUMMARY_METRICS:
            vals = [r["detectors"][d].get(metric) for r in results if d in r["detectors"]]
            vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            stats[metric] = float(np.mean(vals)) if vals else None
            stats[f"{metric}_n"] = len(vals)
        eps = sum(r["detectors"][d]["event"]["episodes"] for r in results if d in r["detectors"])
        found = sum(r["detectors"][d]["event"]["found"] for r in results if d in r["detectors"])
        stats["episodes_total"], stats["found_total"] = eps, found
        stats["event_recall_pooled"] = found / eps if eps else None
        out[d] = stats
    return out


def evaluate_entities(
    entities: Sequence[LabelledEntity],
    spec_for: Callable[[LabelledEntity], FeatureSpec],
    detectors: Mapping[str, Factory],
    *,
    out_dir: Path | None = None,
    threshold_quantile: float = 0.999,
    threshold_margin: float = 1.5,
    plot_entities: Sequence[str] | None = None,
    main_detector: str | None = None,
    progress: bool = True,
    seed: int = 7,
    settings: dict | None = None,
) -> dict:
    """:func:`evaluate_entity` over many entities; writes ``out_dir/metrics.json`` (per entity + mean).

    ``plot_entities``: entities that get plots (None: all); aggregate bar charts of AUROC and
    AUPRC per entity always go to ``out_dir``.
    """
    results = []
    t0 = time.perf_counter()
    for ent in tqdm(entities, desc="entities", unit="entity", disable=not progress):
        want_plots = plot_entities is None or ent.name in plot_entities
        results.append(
            evaluate_entity(
                ent.events,
                spec_for(ent),
                detectors,
                name=ent.name,
                segments=ent.segments,
                threshold_quantile=threshold_quantile,
                threshold_margin=threshold_margin,
                out_dir=(Path(out_dir) / ent.name) if out_dir is not None else None,
                plots=want_plots,
                main_detector=main_detector,
                progress=progress,
                seed=seed,
            )
        )
    summary = {
        "settings": settings or {},
        "runtime_seconds": time.perf_counter() - t0,
        "mean": aggregate(results),
        "entities": {r["entity"]: r for r in results},
    }
    summary = _finite(summary)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        from model import plots

        for metric in ("auroc", "auprc"):
            vals = {r["entity"]: {d: _nan(m.get(metric)) for d, m in r["detectors"].items()} for r in results}
            plots.plot_metric_bars(
                vals, metric.upper(), out_dir / f"{metric}_by_entity.png", f"{metric.upper()} per entity (test windows)"
            )
    return summary


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_table(summary: dict, metrics: Sequence[str] | None = None, markdown: bool = False) -> str:
    """The mean metrics per detector as a text (or Markdown) table."""
    metrics = list(
        metrics
        or (
            "auroc",
            "auprc",
            "f1",
            "event_recall",
            "event_precision",
            "median_time_to_detect_s",
            "hitrate@100",
            "hitrate@150",
            "best_f1_optimistic",
            "point_adjusted_f1",
            "fit_seconds",
        )
    )
    means = summary["mean"]
    metrics = [m for m in metrics if any(means[d].get(m) is not None for d in means)]
    header = ["detector", *metrics]
    rows = [[d, *(_fmt(means[d].get(m), 0 if m.endswith("_s") else 3) for m in metrics)] for d in means]
    return _table(header, rows, markdown)


def entity_table(summary: dict, metric: str, markdown: bool = False, digits: int = 3) -> str:
    """One metric for every entity (rows) and detector (columns), with the mean as the last row."""
    ents = summary["entities"]
    dets = list(summary["mean"])
    rows = [[e, *(_fmt(r["detectors"].get(d, {}).get(metric), digits) for d in dets)] for e, r in ents.items()]
    rows.append(["**mean**" if markdown else "mean", *(_fmt(summary["mean"][d].get(metric), digits) for d in dets)])
    return _table(["entity", *dets], rows, markdown)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*r) for r in rows)])


def log_evaluation_to_wandb(
    out_dir: Path, summary: dict, settings: dict, mode: str, project: str = "network-anomaly", entity: str | None = None
) -> Path | None:
    """Log an evaluation to W&B: settings as config, mean metrics per detector in the summary, the
    per-entity AUROC/AUPRC as a table, every ROC/PR/timeline/heat-map PNG as an image, metrics.json
    as an artifact. Returns the local run folder (None when ``mode`` is disabled)."""
    if mode == "disabled":
        return None
    import os

    import wandb

    run = wandb.init(
        project=project, entity=entity, mode=mode, job_type="evaluate", config=settings, dir=os.environ.get("WANDB_DIR")
    )
    try:
        for det, metrics in summary["mean"].items():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and value is not None:
                    run.summary[f"{det}/{key}"] = value
        rows = []
        for name, ent in summary["entities"].items():
            for det, m in ent["detectors"].items():
                rows.append([name, det, m.get("auroc"), m.get("auprc"), m.get("f1"), m.get("event_recall")])
        run.log(
            {
                "per_entity": wandb.Table(
                    columns=["entity", "detector", "auroc", "auprc", "f1", "event_recall"], data=rows
                )
            }
        )
        for png in sorted(Path(out_dir).rglob("*.png")):
            rel = png.relative_to(out_dir).with_suffix("")
            run.log({f"plots/{rel.as_posix()}": wandb.Image(str(png))})
        art = wandb.Artifact("netanomaly-evaluation", type="evaluation", metadata=settings)
        art.add_file(str(Path(out_dir) / "metrics.json"))
        run.log_artifact(art)
        return Path(run.dir).parent
    finally:
        run.finish()

"""Detection and explanation metrics on labelled windows (pure numpy / scikit-learn).

Conventions: ``labels`` are 0/1 per window (1 = anomalous), ``scores`` are higher-is-more-anomalous
and a window is flagged when ``score > threshold`` (as the scorer does). Metrics that are undefined
on the given labels (e.g. AUROC with one class) are NaN, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from model.event_metrics import Episode, Flag, event_metrics


def _arrays(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int8).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    return y, s


def _two_classes(y: np.ndarray) -> bool:
    return bool(y.any()) and not bool(y.all())


def auroc(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN unless both classes occur."""
    y, s = _arrays(labels, scores)
    return float(roc_auc_score(y, s)) if _two_classes(y) else float("nan")


def auprc(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> float:
    """Average precision (step-wise area under the precision-recall curve); NaN without positives.

    Its chance level is the share of anomalous windows, not 0.5.
    """
    y, s = _arrays(labels, scores)
    return float(average_precision_score(y, s)) if y.any() else float("nan")


def precision_recall_f1(labels: Sequence | np.ndarray, flags: Sequence | np.ndarray) -> dict[str, float]:
    """Point-wise precision, recall and F1 of boolean ``flags``.

    Precision is 0 when nothing is flagged; recall and F1 are NaN when there is no positive
    (undefined, and left out of means rather than counted as 0).
    """
    y, f = _arrays(labels, np.asarray(flags, dtype=bool))
    f = f.astype(bool)
    tp = int(np.sum(f & (y == 1)))
    fp = int(np.sum(f & (y == 0)))
    fn = int(np.sum(~f & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fn else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def prf_at_threshold(
    labels: Sequence | np.ndarray, scores: Sequence | np.ndarray, threshold: float
) -> dict[str, float]:
    """Precision/recall/F1 of flagging ``score > threshold``."""
    y, s = _arrays(labels, scores)
    return precision_recall_f1(y, s > threshold)


def best_f1(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> dict[str, float]:
    """The best F1 over every threshold, chosen WITH the test labels: an optimistic upper bound.

    Returns ``best_f1_optimistic`` and the ``best_f1_threshold`` (flag ``score >= threshold``)
    with its precision/recall; NaN without positives.
    """
    y, s = _arrays(labels, scores)
    if not y.any():
        nan = float("nan")
        return {"best_f1_optimistic": nan, "best_f1_threshold": nan, "best_f1_precision": nan, "best_f1_recall": nan}
    p, r, t = precision_recall_curve(y, s)
    p, r = p[:-1], r[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    i = int(np.argmax(f1))
    return {
        "best_f1_optimistic": float(f1[i]),
        "best_f1_threshold": float(t[i]),
        "best_f1_precision": float(p[i]),
        "best_f1_recall": float(r[i]),
    }


def label_runs(labels: Sequence | np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of 1s as ``(start, end_exclusive)`` index pairs."""
    y = np.asarray(labels).astype(np.int8).reshape(-1) > 0
    d = np.diff(np.concatenate([[0], y.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def point_adjust(labels: Sequence | np.ndarray, flags: Sequence | np.ndarray) -> np.ndarray:
    """Point adjustment: every window of a labelled run counts as flagged if any window of it is.

    This inflates F1 (a long run found by one lucky window counts fully); report it only beside
    unadjusted metrics.
    """
    y = np.asarray(labels).astype(np.int8).reshape(-1)
    f = np.asarray(flags, dtype=bool).reshape(-1).copy()
    if y.shape != f.shape:
        raise ValueError(f"labels {y.shape} and flags {f.shape} differ in length")
    for a, b in label_runs(y):
        if f[a:b].any():
            f[a:b] = True
    return f


def point_adjusted_f1(labels: Sequence | np.ndarray, flags: Sequence | np.ndarray) -> float:
    """F1 after :func:`point_adjust` (secondary; inflated by construction)."""
    return precision_recall_f1(labels, point_adjust(labels, flags))["f1"]


def window_episodes(
    labels: Sequence | np.ndarray,
    window_start_ms: Sequence | np.ndarray,
    window_end_ms: Sequence | np.ndarray,
    devices: Sequence | np.ndarray | None = None,
) -> list[Episode]:
    """Labelled windows that touch in time (per device) merged into :class:`Episode` objects."""
    y = np.asarray(labels).astype(np.int8).reshape(-1)
    ws = np.asarray(window_start_ms, dtype=np.int64).reshape(-1)
    we = np.asarray(window_end_ms, dtype=np.int64).reshape(-1)
    dev = np.asarray(devices if devices is not None else np.full(len(y), ""), dtype=object).reshape(-1)
    out: list[Episode] = []
    for d in dict.fromkeys(dev[y > 0].tolist()):
        idx = np.flatnonzero((dev == d) & (y > 0))
        idx = idx[np.argsort(ws[idx], kind="stable")]
        cur_s, cur_e = int(ws[idx[0]]), int(we[idx[0]])
        for i in idx[1:]:
            if ws[i] <= cur_e:
                cur_e = max(cur_e, int(we[i]))
            else:
                out.append(Episode(str(d), cur_s, cur_e))
                cur_s, cur_e = int(ws[i]), int(we[i])
        out.append(Episode(str(d), cur_s, cur_e))
    return out


def close_gaps(
    window_start_ms: Sequence | np.ndarray, window_end_ms: Sequence | np.ndarray, devices: Sequence | np.ndarray
) -> np.ndarray:
    """Window ends stretched to the start of the device's next window when the data has a gap.

    Windows without events do not exist, so with gappy data (e.g. hourly samples in 30-minute
    windows) consecutive windows would not touch; stretched, they do, and a run of labelled (or
    flagged) windows with no other window between them stays one episode (or alarm).
    """
    ws = np.asarray(window_start_ms, dtype=np.int64).reshape(-1)
    we = np.asarray(window_end_ms, dtype=np.int64).reshape(-1).copy()
    dev = np.asarray(devices, dtype=object).reshape(-1)
    for d in dict.fromkeys(dev.tolist()):
        idx = np.flatnonzero(dev == d)
        idx = idx[np.argsort(ws[idx], kind="stable")]
        if len(idx) > 1:
            we[idx[:-1]] = np.maximum(we[idx[:-1]], ws[idx[1:]])
    return we


def event_level(
    labels: Sequence | np.ndarray,
    flags: Sequence | np.ndarray,
    window_start_ms: Sequence | np.ndarray,
    window_end_ms: Sequence | np.ndarray,
    devices: Sequence | np.ndarray | None = None,
) -> dict:
    """Event recall/precision and median time to detect (s) from window labels and flags.

    Episodes are runs of labelled windows (:func:`window_episodes`); flagged windows become
    :class:`Flag` objects; the counting is :func:`model.event_metrics.event_metrics`. Window
    ends are first stretched over data gaps (:func:`close_gaps`), so the time to detect of a
    window followed by a gap counts to the next window's start.
    """
    f = np.asarray(flags, dtype=bool).reshape(-1)
    ws = np.asarray(window_start_ms, dtype=np.int64).reshape(-1)
    dev = np.asarray(devices if devices is not None else np.full(len(f), ""), dtype=object).reshape(-1)
    we = close_gaps(ws, window_end_ms, dev)
    episodes = window_episodes(labels, ws, we, dev)
    flagged = [Flag(str(dev[i]), int(ws[i]), int(we[i])) for i in np.flatnonzero(f)]
    return event_metrics(episodes, flagged).as_dict()


def hit_rate(
    contributions: np.ndarray,
    ground_truth: Sequence[Sequence[int] | set[int] | None],
    p: float = 1.0,
    *,
    rng: np.random.Generator | None = None,
) -> float:
    """HitRate@P% (Su et al. 2019, OmniAnomaly) of per-feature contributions.

    For each row with a non-empty ground-truth set G (feature indices), take the
    ``floor(p * |G|)`` features with the largest contribution, count how many are in G and
    divide by |G|; average over those rows. ``p=1.0`` is HitRate@100%, ``p=1.5`` HitRate@150%.
    Ties are ranked in feature order, or in a random order drawn from ``rng`` when given (so a
    detector with uniform contributions scores like a random ranking). NaN when no row has
    ground truth.
    """
    c = np.asarray(contributions, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != len(ground_truth):
        raise ValueError(f"contributions {c.shape} do not match {len(ground_truth)} ground-truth rows")
    if rng is None:
        order = np.argsort(-c, axis=1, kind="stable")
    else:
        tie = rng.random(c.shape)
        order = np.lexsort((tie, -c), axis=1)
    rates = []
    for i, g in enumerate(ground_truth):
        if not g:
            continue
        gs = set(int(x) for x in g)
        k = min(int(np.floor(p * len(gs) + 1e-9)), c.shape[1])
        hits = len(gs.intersection(order[i, :k].tolist()))
        rates.append(hits / len(gs))
    return float(np.mean(rates)) if rates else float("nan")


def roc_points(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) of the ROC curve; empty without both classes."""
    from sklearn.metrics import roc_curve

    y, s = _arrays(labels, scores)
    if not _two_classes(y):
        return np.empty(0), np.empty(0)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def pr_points(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) of the precision-recall curve; empty without positives."""
    y, s = _arrays(labels, scores)
    if not y.any():
        return np.empty(0), np.empty(0)
    p, r, _ = precision_recall_curve(y, s)
    return r, p


def detection_metrics(
    labels: Sequence | np.ndarray,
    scores: Sequence | np.ndarray,
    threshold: float,
    window_start_ms: Sequence | np.ndarray,
    window_end_ms: Sequence | np.ndarray,
    devices: Sequence | np.ndarray | None = None,
) -> dict:
    """All detection metrics of one detector on one set of test windows (JSON-friendly)."""
    y, s = _arrays(labels, scores)
    flags = s > threshold
    prf = precision_recall_f1(y, flags)
    out: dict = {
        "auroc": auroc(y, s),
        "auprc": auprc(y, s),
        "threshold": float(threshold),
        "precision": prf["precision"],
        "recall": prf["recall"],
        "f1": prf["f1"],
        "flagged": int(flags.sum()),
        "point_adjusted_f1": point_adjusted_f1(y, flags),
    }
    out.update(best_f1(y, s))
    ev = event_level(y, flags, window_start_ms, window_end_ms, devices)
    out["event"] = ev
    out["event_recall"] = ev["recall"]
    out["event_precision"] = ev["precision"]
    out["median_time_to_detect_s"] = ev["median_time_to_detect_s"]
    return out

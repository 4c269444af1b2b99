"""Detection and explanation metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import (
    auprc,
    auroc,
    best_f1,
    close_gaps,
    detection_metrics,
    event_level,
    hit_rate,
    label_runs,
    point_adjust,
    point_adjusted_f1,
    precision_recall_f1,
    prf_at_threshold,
    window_episodes,
)

LABELS = [0, 0, 1, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]


def test_auroc_six_points():
    # positive > negative pairs: 0.35 beats 0.1 (1), 0.7 beats 0.1, 0.4 (2), 0.9 beats all 3 (3) -> 6 of 9
    assert auroc(LABELS, SCORES) == pytest.approx(6 / 9)
    assert auroc([0, 1], [0.5, 0.5]) == 0.5  # ties count half
    assert math.isnan(auroc([0, 0, 0], [1, 2, 3]))


def test_auprc_by_hand():
    # ranks: 0.9 (pos, P=1, R=1/2), 0.8 (neg), 0.7 (pos, P=2/3, R=1): AP = 1/2*1 + 1/2*2/3
    assert auprc([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 + 1 / 3)
    assert math.isnan(auprc([0, 0], [0.1, 0.2]))


def test_f1_at_a_threshold():
    # score > 0.5 flags 0.8 (neg), 0.7 and 0.9 (pos): tp 2, fp 1, fn 1
    m = prf_at_threshold(LABELS, SCORES, 0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert prf_at_threshold(LABELS, SCORES, 0.9)["f1"] == 0.0  # strictly greater: nothing flagged
    assert math.isnan(precision_recall_f1([0, 0, 0], [1, 0, 0])["f1"])  # undefined without positives


def test_best_f1_is_the_optimistic_maximum():
    b = best_f1(LABELS, SCORES)
    # threshold 0.35 flags 0.35, 0.4, 0.7, 0.8, 0.9: tp 3, fp 2 -> F1 6/8 (the best)
    assert b["best_f1_optimistic"] == pytest.approx(0.75)
    assert b["best_f1_threshold"] == pytest.approx(0.35)


def test_point_adjust_inflates_f1():
    labels = [0, 1, 1, 1, 1, 0, 0, 1, 1, 0]
    flags = [0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert label_runs(labels) == [(1, 5), (7, 9)]
    # raw: tp 1, fp 1, fn 5 -> F1 2/8
    assert precision_recall_f1(labels, flags)["f1"] == pytest.approx(0.25)
    # adjusted: the first run counts as found entirely: tp 4, fp 1, fn 2 -> F1 8/11
    assert point_adjust(labels, flags).astype(int).tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert point_adjusted_f1(labels, flags) == pytest.approx(8 / 11)


def test_hit_rate_omnianomaly_definition():
    c = np.array([[0.5, 0.1, 0.3, 0.05, 0.05], [0.0, 0.0, 0.2, 0.7, 0.1], [1, 1, 1, 1, 1]])
    gt = [{0, 1}, {3}, set()]  # the last row has no interpretation and is skipped
    # row 0: top-2 = {0, 2} -> 1 hit of 2; top-3 = {0, 2, 1} -> 2 of 2. row 1: top-1 = {3} -> 1 of 1
    assert hit_rate(c, gt, 1.0) == pytest.approx((0.5 + 1.0) / 2)
    assert hit_rate(c, gt, 1.5) == pytest.approx((1.0 + 1.0) / 2)
    assert math.isnan(hit_rate(c[:1], [set()], 1.0))
    # uniform contributions with random tie-breaking score like a random ranking: |G| / F
    rate = hit_rate(np.ones((2000, 10)), [{0, 1, 2}] * 2000, 1.0, rng=np.random.default_rng(0))
    assert rate == pytest.approx(0.3, abs=0.02)


def test_event_level_from_windows():
    m10 = 600_000
    start = np.arange(10) * m10
    end = start + m10
    labels = [0, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    flags = [0, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    eps = window_episodes(labels, start, end, ["d"] * 10)
    assert [(e.start_ms, e.end_ms) for e in eps] == [(m10, 3 * m10), (6 * m10, 9 * m10)]
    ev = event_level(labels, flags, start, end, ["d"] * 10)
    # episode 1 found by window 2 (ends 30 min, episode started at 10 min): 20 min; episode 2 missed
    assert (ev["episodes"], ev["found"], ev["alarms"], ev["true_alarms"]) == (2, 1, 2, 1)
    assert ev["recall"] == 0.5 and ev["median_time_to_detect_s"] == 1200.0


def test_event_level_bridges_data_gaps():
    # hourly data in 30-minute windows: the windows of one run do not touch in time
    m30 = 1_800_000
    start = np.arange(6) * 2 * m30
    end = start + m30
    labels = [0, 1, 1, 1, 0, 0]
    flags = [0, 0, 1, 1, 0, 0]
    assert close_gaps(start, end, ["d"] * 6).tolist() == [*(start[1:]).tolist(), end[-1]]
    ev = event_level(labels, flags, start, end, ["d"] * 6)
    assert (ev["episodes"], ev["found"], ev["alarms"], ev["true_alarms"]) == (1, 1, 1, 1)
    # found by the window starting 1 h into the episode; its end is stretched to the next window (+1 h)
    assert ev["median_time_to_detect_s"] == 7200.0


def test_detection_metrics_keys_flag_optimism():
    m = detection_metrics(LABELS, SCORES, 0.5, np.arange(6) * 10, np.arange(6) * 10 + 10)
    assert {"auroc", "auprc", "f1", "best_f1_optimistic", "point_adjusted_f1", "event_recall"} <= set(m)
    assert "best_f1" not in m

"""Event-level recall/precision and time to detect on hand-computed cases."""

from __future__ import annotations

import math

from model.event_metrics import Episode, Flag, event_metrics, merge_alarms

M = 60_000


def test_hand_computed_case():
    eps = [Episode("a", 10 * M, 40 * M), Episode("a", 100 * M, 120 * M), Episode("b", 0, 20 * M)]
    flags = [
        Flag("a", 20 * M, 30 * M),
        Flag("a", 30 * M, 40 * M),  # one alarm, finds episode 1 after 20 min
        Flag("a", 60 * M, 70 * M),  # false alarm
        Flag("b", 10 * M, 20 * M),  # finds b after 20 min
        Flag("c", 0, 10 * M),  # false alarm on an unlabelled device
    ]
    m = event_metrics(eps, flags)
    assert (m.episodes, m.found, m.alarms, m.true_alarms) == (3, 2, 4, 2)
    assert m.recall == 2 / 3
    assert m.precision == 0.5
    assert m.median_time_to_detect_s == 20 * 60
    assert [e.start_ms for e in m.missed] == [100 * M]


def test_window_touching_an_episode_edge_does_not_count():
    m = event_metrics([Episode("a", 10 * M, 20 * M)], [Flag("a", 20 * M, 30 * M)])
    assert m.found == 0 and m.true_alarms == 0


def test_merge_alarms_and_empty_inputs():
    assert merge_alarms([Flag("a", 0, 10), Flag("a", 10, 20), Flag("a", 30, 40)]) == [("a", 0, 20), ("a", 30, 40)]
    m = event_metrics([], [])
    assert math.isnan(m.recall) and math.isnan(m.precision) and m.median_time_to_detect_s is None

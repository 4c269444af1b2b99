"""Event-level detection quality: labelled anomaly episodes vs flagged windows.

* A labelled episode is *found* when a flagged window of the same device overlaps it; its time to
  detect is the end of the first such window minus the episode start (when the alarm exists).
* Flagged windows of a device that touch each other merge into one *alarm*; an alarm is a true
  positive when it overlaps a labelled episode of its device. Precision = true alarms / alarms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Episode:
    """A labelled anomaly ``[start_ms, end_ms)`` on one device."""

    device_id: str
    start_ms: int
    end_ms: int
    kind: str = ""


@dataclass(frozen=True)
class Flag:
    """A flagged window ``[start_ms, end_ms)`` on one device."""

    device_id: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class EventMetrics:
    """Event recall/precision with detection delays."""

    episodes: int
    found: int
    alarms: int
    true_alarms: int
    recall: float
    precision: float
    median_time_to_detect_s: float | None
    missed: tuple[Episode, ...]
    false_alarms: tuple[tuple[str, int, int], ...]

    def as_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "episodes": self.episodes,
            "found": self.found,
            "alarms": self.alarms,
            "true_alarms": self.true_alarms,
            "recall": self.recall,
            "precision": self.precision,
            "median_time_to_detect_s": self.median_time_to_detect_s,
        }


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def merge_alarms(flags: Iterable[Flag]) -> list[tuple[str, int, int]]:
    """Touching or overlapping flagged windows of a device become one alarm."""
    by_dev: dict[str, list[Flag]] = defaultdict(list)
    for f in flags:
        by_dev[f.device_id].append(f)
    alarms = []
    for dev, fs in by_dev.items():
        fs.sort(key=lambda f: f.start_ms)
        cur_s, cur_e = fs[0].start_ms, fs[0].end_ms
        for f in fs[1:]:
            if f.start_ms <= cur_e:
                cur_e = max(cur_e, f.end_ms)
            else:
                alarms.append((dev, cur_s, cur_e))
                cur_s, cur_e = f.start_ms, f.end_ms
        alarms.append((dev, cur_s, cur_e))
    return alarms


def event_metrics(episodes: Iterable[Episode], flags: Iterable[Flag]) -> EventMetrics:
    """Compare labelled episodes with flagged windows (see module docstring)."""
    eps = list(episodes)
    fl = list(flags)
    flags_by_dev: dict[str, list[Flag]] = defaultdict(list)
    for f in fl:
        flags_by_dev[f.device_id].append(f)
    delays, missed = [], []
    for e in eps:
        hits = [f for f in flags_by_dev.get(e.device_id, []) if _overlaps(f.start_ms, f.end_ms, e.start_ms, e.end_ms)]
        if hits:
            first_end = min(f.end_ms for f in hits)
            delays.append(max(0, first_end - e.start_ms) / 1000.0)
        else:
            missed.append(e)
    alarms = merge_alarms(fl) if fl else []
    eps_by_dev: dict[str, list[Episode]] = defaultdict(list)
    for e in eps:
        eps_by_dev[e.device_id].append(e)
    false_alarms = [
        a for a in alarms if not any(_overlaps(a[1], a[2], e.start_ms, e.end_ms) for e in eps_by_dev.get(a[0], []))
    ]
    true_alarms = len(alarms) - len(false_alarms)
    found = len(eps) - len(missed)
    return EventMetrics(
        episodes=len(eps),
        found=found,
        alarms=len(alarms),
        true_alarms=true_alarms,
        recall=found / len(eps) if eps else float("nan"),
        precision=true_alarms / len(alarms) if alarms else float("nan"),
        median_time_to_detect_s=float(np.median(delays)) if delays else None,
        missed=tuple(missed),
        false_alarms=tuple(false_alarms),
    )

"""Drift: quantile bins from the training baseline, PSI by hand, retrain requests after M evaluations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from netanomaly.monitor.config import DriftConfig
from netanomaly.monitor.drift import (
    N_BINS,
    DriftMonitor,
    DriftReport,
    FeatureBins,
    RetrainRequest,
    baseline_from_metadata,
    load_baseline,
    psi,
)
from netanomaly.monitor.exceptions import BaselineError, InvalidRecord
from netanomaly.monitor.timeutil import iso_ms
from tests.conftest import repo_root

T0 = 1_767_571_200_000
W = 600_000
SCHEMAS = repo_root() / "conf" / "schemas"
# a feature whose training windows were uniform on [0, 100]
UNIFORM = {"min": 0.0, "p01": 1.0, "p05": 5.0, "p25": 25.0, "p50": 50.0, "p75": 75.0, "p95": 95.0, "p99": 99.0,
           "max": 100.0, "count": 1000, "mean": 50.0, "std": 28.9}  # fmt: skip
CONSTANT = {k: 10.0 for k in ("min", "p01", "p05", "p25", "p50", "p75", "p95", "p99", "max", "mean")} | {"std": 0.0}
# values whose shares in the uniform bins are exactly the expected ones: 1, 4, 20, 25, 25, 20, 4, 1 %
MATCHING = np.linspace(0.5, 99.5, 100)


def metadata(**features) -> dict:
    return {"model_version": "ae-drifttest", "feature_names": list(features), "baseline": features, "threshold": 0.1}


def feature_record(i: int, device: int, **values) -> dict:
    return {
        "device_id": f"dev-{device:03d}",
        "window_start": iso_ms(T0 + i * W),
        "window_end": iso_ms(T0 + (i + 1) * W),
        **values,
    }


# --------------------------------------------------------------------------------------------- bins
def test_uniform_baseline_gives_the_usual_quantile_bins_plus_out_of_range():
    b = FeatureBins.from_baseline("x", UNIFORM)
    want = np.zeros(N_BINS)
    # 0 below min | 1 {0} | 2 (0,1) | 3 {1} | 4 (1,5) | ... | 16 (99,100) | 17 {100} | 18 above max
    for idx, share in zip(range(2, 18, 2), [0.01, 0.04, 0.20, 0.25, 0.25, 0.20, 0.04, 0.01], strict=True):
        want[idx] = share
    np.testing.assert_allclose(b.expected, want, atol=1e-12)
    assert [b.bin_of(v) for v in (-1, 0.5, 1.0, 3, 50, 99.5, 100, 101)] == [0, 2, 4, 4, 10, 16, 16, 18]
    assert b.bin_of(float("nan")) is None
    np.testing.assert_array_equal(b.counts(MATCHING), np.round(want * 100))


def test_ties_in_the_baseline_become_a_point_bin():
    b = FeatureBins.from_baseline("event_count", CONSTANT)  # every training window had 10 events
    assert b.anchors == (10.0,) and b.expected[1] == 1.0 and b.expected.sum() == 1.0
    assert [b.bin_of(v) for v in (9, 10, 11)] == [0, 1, 2]
    assert psi(b.expected, b.counts([10] * 50)) == pytest.approx(0.0, abs=1e-12)
    assert psi(b.expected, b.counts([9] * 50)) > 5
    partial = {**UNIFORM, "min": 0.0, "p01": 0.0, "p05": 0.0}  # 5 % of training values were exactly 0
    bp = FeatureBins.from_baseline("loss", partial)
    assert bp.has_point[0] and bp.expected[1] == pytest.approx(0.05) and bp.bin_of(0.0) == 1


def test_bad_baselines_are_refused():
    with pytest.raises(ValueError, match="p50"):
        FeatureBins.from_baseline("x", {k: v for k, v in UNIFORM.items() if k != "p50"})
    with pytest.raises(ValueError, match="not ordered"):
        FeatureBins.from_baseline("x", {**UNIFORM, "p25": 80.0})


# ---------------------------------------------------------------------------------------------- PSI
def test_psi_identical_distribution_is_zero():
    b = FeatureBins.from_baseline("x", UNIFORM)
    assert psi(b.expected, b.counts(MATCHING)) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    assert psi(b.expected, b.counts(rng.uniform(0, 100, 5000))) < 0.02


def test_psi_matches_a_hand_computation():
    b = FeatureBins.from_baseline("x", UNIFORM)
    live = [60.0] * 50 + [80.0] * 50  # half in (50,75), half in (75,95)
    counts = b.counts(live)
    assert counts[10] == 50 and counts[12] == 50
    s = 1e-4
    norm = 1 + s * N_BINS

    def term(a: float, e: float) -> float:
        a, e = (a + s) / norm, (e + s) / norm
        return (a - e) * math.log(a / e)

    by_hand = (
        term(0, 0.01) + term(0, 0.04) + term(0, 0.20) + term(0, 0.25)  # empty bins below 50
        + term(0.5, 0.25) + term(0.5, 0.20)  # the two full bins
        + term(0, 0.04) + term(0, 0.01)  # empty bins above 95
    )  # fmt: skip
    assert psi(b.expected, counts, smoothing=s) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand > 0.25


def test_psi_of_a_shifted_distribution_is_over_the_threshold():
    b = FeatureBins.from_baseline("x", UNIFORM)
    assert psi(b.expected, b.counts(MATCHING + 30)) > 0.25
    assert psi(b.expected, b.counts(MATCHING * 0.97)) < 0.1  # a small change inside the training range: small
    # values beyond the training range weigh a lot (expected share ~0): 5 % over the max alone is drift
    assert psi(b.expected, b.counts(MATCHING * 1.05)) == pytest.approx(0.31, abs=0.01)
    with pytest.raises(ValueError):
        psi(b.expected, np.zeros(N_BINS))


# ----------------------------------------------------------------------------------------- baseline
def test_load_baseline_reads_metadata_and_explains_problems(tmp_path: Path):
    (tmp_path / "metadata.json").write_text(json.dumps(metadata(x=UNIFORM, event_count=CONSTANT)))
    mb = load_baseline(tmp_path)
    assert mb.model_version == "ae-drifttest" and mb.feature_names == ("x", "event_count") and mb.threshold == 0.1
    with pytest.raises(BaselineError, match="not found"):
        load_baseline(tmp_path / "nope")
    (tmp_path / "metadata.json").write_text(json.dumps({"model_version": "v"}))
    with pytest.raises(BaselineError, match="no per-feature training baseline.*netanomaly train"):
        load_baseline(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(BaselineError, match="JSON"):
        load_baseline(tmp_path)


def test_unknown_watched_feature_is_an_error():
    with pytest.raises(BaselineError, match="nope"):
        DriftMonitor(DriftConfig(features=("nope",)), baseline_from_metadata(metadata(x=UNIFORM)))


# ------------------------------------------------------------------------------------------ monitor
def _monitor(**cfg) -> DriftMonitor:
    base = {"horizon_windows": 4, "min_samples": 10, "consecutive": 3, "retrain_cooldown_s": 6 * 600}
    return DriftMonitor(
        DriftConfig(**{**base, **cfg}),
        baseline_from_metadata(metadata(x=UNIFORM, y=UNIFORM, event_count=CONSTANT)),
        clock=lambda: "2026-02-01T00:00:00.000Z",
    )


def _period(i: int, x_shift: float = 0.0, y_shift: float = 0.0) -> list[dict]:
    """100 device windows of period i: x and y spread like the baseline (+ shifts)."""
    return [
        feature_record(i, d, x=float(MATCHING[d] + x_shift), y=float(MATCHING[d] + y_shift), event_count=10.0)
        for d in range(100)
    ]


def _feed(dm: DriftMonitor, periods: list[list[dict]]) -> list:
    out = []
    for recs in periods:
        for r in recs:
            out += dm.observe(r)
    return out + dm.flush()


def test_undrifted_stream_reports_low_psi_and_never_requests_retraining():
    dm = _monitor()
    out = _feed(dm, [_period(i) for i in range(10)])
    reports = [o for o in out if isinstance(o, DriftReport)]
    assert not [o for o in out if isinstance(o, RetrainRequest)]
    # the first 3 periods do not fill the 4-period horizon: no report
    assert [r.window_start for r in reports] == [iso_ms(T0 + i * W) for i in range(3, 10)]
    assert dm.stats["skipped_insufficient"] == 3 and dm.stats["evaluations"] == 7
    for r in reports:
        assert r.periods == 4 and r.samples == 400 and r.drifted == []
        assert max(r.psi.values()) == pytest.approx(0.0, abs=1e-9)
        jsonschema.validate(r.to_record(), json.loads((SCHEMAS / "kpi-drift.schema.json").read_text()))


def test_retrain_request_only_after_m_consecutive_evaluations_and_once_per_cooldown():
    dm = _monitor()
    periods = [_period(i) for i in range(4)] + [_period(i, x_shift=60.0) for i in range(4, 20)]
    out = _feed(dm, periods)
    reports = {o.window_start: o for o in out if isinstance(o, DriftReport)}
    requests = [o for o in out if isinstance(o, RetrainRequest)]
    start_of = {iso_ms(T0 + i * W): i for i in range(20)}
    # x is over the threshold from the first evaluation with shifted data in the horizon (period 4) on
    assert [start_of[ws] for ws, r in reports.items() if r.drifted] == list(range(4, 20))
    assert all(r.drifted in ([], ["x"]) for r in reports.values())  # y never drifts
    # 3rd evaluation in a row -> request; then one per cool-down (6 periods) while it lasts
    assert [start_of[r.window_start] for r in requests] == [6, 12, 18]
    req = requests[0]
    assert [f["feature"] for f in req.features] == ["x"] and req.features[0]["consecutive"] == 3
    assert req.features[0]["psi"] == pytest.approx(reports[req.window_start].psi["x"])
    assert req.features[0]["psi"] > 0.25
    assert req.model_version == "ae-drifttest" and req.reason == "feature_drift" and "x (PSI" in req.message
    assert reports[req.window_start].consecutive == {"x": 3}
    assert dm.stats["retrain_requests"] == 3 and dm.stats["retrain_suppressed"] == 14 - 3  # periods 6..19
    jsonschema.validate(req.to_record(), json.loads((SCHEMAS / "kpi-retrain-requests.schema.json").read_text()))


def test_a_drift_streak_that_breaks_does_not_request_retraining():
    dm = _monitor(horizon_windows=1, min_samples=10)
    shifts = [0, 60, 60, 0, 60, 60, 0, 60, 60, 0]  # never 3 evaluations in a row
    out = _feed(dm, [_period(i, x_shift=s) for i, s in enumerate(shifts)])
    assert [len(o.drifted) for o in out if isinstance(o, DriftReport)] == [1 if s else 0 for s in shifts]
    assert not [o for o in out if isinstance(o, RetrainRequest)]


def test_periods_are_evaluated_when_the_watermark_passes_and_late_records_are_counted():
    dm = _monitor(horizon_windows=2, min_samples=1)
    for r in _period(0) + _period(1):
        dm.add(r)
    assert dm.advance(T0 + 1 * W) == [] and dm.stats["skipped_insufficient"] == 1  # period 0: horizon not full
    [rep] = dm.advance(T0 + 2 * W)  # period 1 closed
    assert rep.window_start == iso_ms(T0 + W) and rep.samples == 200
    assert dm.advance(T0 + 2 * W) == []  # nothing new
    dm.add(feature_record(1, 500, x=1.0, y=1.0, event_count=10.0))  # late, still inside the horizon
    dm.add(feature_record(-5, 501, x=1.0, y=1.0, event_count=10.0))  # far too late
    assert dm.stats["late_dropped"] == 1
    for r in _period(2):
        dm.add(r)
    [rep2] = dm.flush()
    assert rep2.samples == 201
    with pytest.raises(InvalidRecord):
        dm.add({"window_start": iso_ms(T0 + 3 * W), "window_end": iso_ms(T0 + 4 * W), "device_id": "d", "x": "a"})

"""Champion/challenger retraining and the model registry."""

from __future__ import annotations

from model import registry
from model.features import FeatureSpec, compute_window_features
from model.retrain import retrain
from model.train import train_autoencoder
from netanomaly.config import JobConfig
from tests.integration.conftest import simulated_frame


def test_retrain_promotes_only_a_better_challenger(tmp_path):
    """Champion/challenger on a store written the way the job writes it (Parquet by dt)."""
    from netanomaly import simulate as sim

    cfg = JobConfig()
    spec = FeatureSpec.from_config(cfg.features)
    hist = sim.SimulationSpec(devices=8, duration_s=3 * 86400, seed=4, window_seconds=spec.window_seconds)
    feats = compute_window_features(simulated_frame(hist), spec)
    feats["score"], feats["threshold"], feats["is_anomaly"], feats["model_version"] = 0.0, 1.0, False, "x"
    store = tmp_path / "store"
    for day, part in feats.groupby(feats["window_start"].dt.strftime("%Y-%m-%d")):
        (store / f"dt={day}").mkdir(parents=True)
        part.to_parquet(store / f"dt={day}" / "part-0")
    reg = tmp_path / "registry"

    # a deliberately poor champion: trained on a tiny, different fleet for 1 epoch
    weak = sim.SimulationSpec(devices=2, duration_s=86400, seed=5, window_seconds=spec.window_seconds)
    poor = tmp_path / "poor"
    train_autoencoder(
        compute_window_features(simulated_frame(weak), spec),
        spec,
        cfg.training.model_copy(update={"epochs": 1}),
        wandb_mode="disabled",
        progress=False,
        out_dir=poor,
    )
    registry.promote(reg, registry.register(reg, poor))

    first = retrain(store, reg, spec, cfg.training)
    assert first.promoted, first.reason
    assert first.challenger.quality > first.champion.quality
    assert registry.production(reg).version == first.challenger.version

    again = retrain(store, reg, spec, cfg.training)  # same data and seed: the same model, nothing to promote
    assert not again.promoted
    assert registry.production(reg).version == first.challenger.version
    assert len((reg / "evaluations.jsonl").read_text().splitlines()) == 2

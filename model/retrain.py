"""Retraining with champion/challenger: train on the feature store, compare on recent data, promote if better.

The comparison needs no labels. Both models score the same *recent* windows, which the challenger
did not train on: their false-alarm rate there (share of windows over the model's own threshold) and
their AUROC at telling those windows from copies with one KPI's statistics scaled by a random factor
(synthetic incidents, seeded). Quality = AUROC - false-alarm rate; the challenger is promoted only
when its quality is higher than the champion's by ``min_gain``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from model import registry
from model.feature_store import read_feature_store
from model.features import FeatureSpec
from model.scoring import score_features
from model.train import train_detector
from netanomaly.config import TrainingConfig, WandbConfig


@dataclass(frozen=True)
class ModelCheck:
    """One model's numbers on the recent windows."""

    version: str
    false_alarm_rate: float
    synthetic_auroc: float

    @property
    def quality(self) -> float:
        """AUROC on synthetic incidents minus false-alarm rate on recent normal windows."""
        return self.synthetic_auroc - self.false_alarm_rate


@dataclass(frozen=True)
class RetrainResult:
    """What ``retrain`` decided, and why."""

    challenger: ModelCheck
    champion: ModelCheck | None
    promoted: bool
    reason: str
    n_train: int
    n_recent: int
    production: str

    def as_dict(self) -> dict:
        """JSON-friendly form (also appended to the registry's evaluations.jsonl)."""
        d = asdict(self)
        d["challenger"]["quality"] = self.challenger.quality
        if self.champion:
            d["champion"]["quality"] = self.champion.quality
        return d


def synthetic_incidents(recent: pd.DataFrame, spec: FeatureSpec, seed: int) -> pd.DataFrame:
    """Copies of ``recent`` windows with one random KPI's statistics scaled by 2-5x (std by the same)."""
    rng = np.random.default_rng(seed)
    out = recent.copy()
    kpi_idx = rng.integers(0, len(spec.kpis), size=len(out))
    factor = rng.uniform(2.0, 5.0, size=len(out))
    for j, kpi in enumerate(spec.kpis):
        rows = kpi_idx == j
        for stat in spec.stats:
            col = f"{kpi}__{stat}"
            out.loc[rows, col] = out.loc[rows, col].to_numpy() * factor[rows] + (stat != "std") * factor[rows]
    out["device_id"] = out["device_id"].astype(str) + "#synthetic"
    return out


def _auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    return float(roc_auc_score(y, np.r_[normal, anomalous]))


def check_model(
    model_dir: Path, recent: pd.DataFrame, incidents: pd.DataFrame, backend: str = "torchscript"
) -> ModelCheck:
    """False alarms on ``recent`` and AUROC of ``recent`` vs ``incidents`` for one exported model."""
    normal = score_features(recent, model_dir, backend=backend)
    anomalous = score_features(incidents, model_dir, backend=backend)
    return ModelCheck(
        version=str(normal["model_version"].iloc[0]),
        false_alarm_rate=float(normal["is_anomaly"].mean()),
        synthetic_auroc=_auroc(normal["score"].to_numpy(), anomalous["score"].to_numpy()),
    )


def retrain(
    feature_store: Path,
    registry_dir: Path,
    spec: FeatureSpec,
    cfg: TrainingConfig,
    *,
    recent_fraction: float = 0.2,
    min_gain: float = 0.0,
    wandb_cfg: WandbConfig | None = None,
    wandb_mode: str | None = "disabled",
    progress: bool = False,
) -> RetrainResult:
    """Train a challenger on the store's older normal windows; promote it if it beats production on the rest."""
    windows = read_feature_store(feature_store, spec, exclude_anomalies=True)
    cut = windows["window_start"].quantile(1.0 - recent_fraction)
    train_part = windows[windows["window_start"] < cut].reset_index(drop=True)
    recent = windows[windows["window_start"] >= cut].reset_index(drop=True)
    if len(train_part) < 50 or len(recent) < 10:
        from model.exceptions import TrainingError

        raise TrainingError(
            f"the feature store holds {len(train_part)} training and {len(recent)} recent normal windows; "
            "let the job run longer or lower --recent-fraction"
        )
    incidents = synthetic_incidents(recent, spec, seed=cfg.seed)
    with tempfile.TemporaryDirectory(prefix="challenger-") as tmp:
        out = Path(tmp) / "model"
        train_detector(
            train_part, spec, cfg, wandb_cfg=wandb_cfg, wandb_mode=wandb_mode, progress=progress, out_dir=out
        )
        challenger = check_model(out, recent, incidents)
        registry.register(registry_dir, out)
    current = registry.production(registry_dir)
    champion = check_model(current.path, recent, incidents) if current else None
    if champion is None:
        promoted, reason = True, "no production model yet"
    elif champion.version == challenger.version:
        promoted, reason = False, "the challenger is the production model"
    elif challenger.quality > champion.quality + min_gain:
        promoted, reason = True, f"quality {challenger.quality:.4f} > champion's {champion.quality:.4f} + {min_gain}"
    else:
        promoted, reason = False, f"quality {challenger.quality:.4f} <= champion's {champion.quality:.4f} + {min_gain}"
    if promoted:
        registry.promote(registry_dir, challenger.version)
        _alias_in_wandb(registry_dir, challenger.version, wandb_cfg, wandb_mode)
    result = RetrainResult(
        challenger=challenger,
        champion=champion,
        promoted=promoted,
        reason=reason,
        n_train=len(train_part),
        n_recent=len(recent),
        production=challenger.version if promoted else (current.version if current else ""),
    )
    record = {"at": datetime.now(UTC).isoformat(), **result.as_dict()}
    with open(Path(registry_dir) / "evaluations.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return result


def _alias_in_wandb(registry_dir: Path, version: str, wandb_cfg: WandbConfig | None, wandb_mode: str | None) -> None:
    """Log the promoted model as a W&B artifact with the aliases ``production`` and its version."""
    mode = wandb_mode or (wandb_cfg.resolved_mode() if wandb_cfg else "disabled")
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=wandb_cfg.project if wandb_cfg else "network-anomaly",
        entity=wandb_cfg.entity if wandb_cfg else None,
        mode=mode,
        job_type="promote",
        config={"version": version},
        dir=os.environ.get("WANDB_DIR"),
    )
    try:
        art = wandb.Artifact("netanomaly-model", type="model", metadata={"version": version})
        art.add_dir(str(Path(registry_dir) / "versions" / version))
        run.log_artifact(art, aliases=["production", version])
    finally:
        run.finish()

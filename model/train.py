"""Train a detector on normal windows, calibrate the threshold, export the model.

The input windows are taken to be normal history. The detector (``cfg.detector``, see
:mod:`model.detectors`) splits them (seeded) into a training and a validation part, fits the
scaler and the model on the training part (with early stopping on the validation loss where
training is iterative), and the threshold is a high quantile of the validation windows' scores
times a margin. The model is exported as TorchScript and ONNX with its metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.detectors import Detector, deterministic_torch, make_detector, split_windows
from model.exceptions import TrainingError
from model.export import METADATA_FILE, export_model, feature_baseline
from model.features import FeatureSpec, feature_matrix
from netanomaly.config import TrainingConfig, WandbConfig

MIN_WINDOWS = 50
# Smallest threshold exported (a perfectly reconstructed validation set would give 0).
MIN_THRESHOLD = 1e-12
# Training rows (after the validation ones) in the export check input.
CHECK_TRAIN_ROWS = 256
_WANDB_MODES = ("online", "offline", "disabled")

__all__ = ["MIN_THRESHOLD", "MIN_WINDOWS", "TrainResult", "split_windows", "train_autoencoder", "train_detector"]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_detector`. Epochs are numbered from 1.

    For detectors that are not trained iteratively (isolation_forest, pca) the loss histories
    are empty and ``best_epoch`` is 0.
    """

    model_dir: Path
    threshold: float
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    best_epoch: int
    n_train: int
    n_val: int
    wandb_run_dir: Path | None
    model_version: str
    detector: str = "autoencoder"


def _resolve_mode(wandb_cfg: WandbConfig | None, wandb_mode: str | None) -> str:
    if wandb_mode is not None:
        mode = wandb_mode
    elif wandb_cfg is not None:
        mode = wandb_cfg.resolved_mode()
    else:
        mode = "disabled"
    if mode not in _WANDB_MODES:
        raise TrainingError(f"W&B mode {mode!r} is not one of {list(_WANDB_MODES)}")
    return mode


def _input_matrix(features: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    names = spec.feature_names
    try:
        x = feature_matrix(features, names)
    except KeyError as e:
        raise TrainingError(
            f"{e.args[0]}; compute the features with the configured spec (`netanomaly features`)"
        ) from e
    except (TypeError, ValueError) as e:
        raise TrainingError(f"feature columns must be numeric: {e}") from e
    if x.shape[0] < MIN_WINDOWS:
        raise TrainingError(
            f"only {x.shape[0]} windows to train on; at least {MIN_WINDOWS} are needed. "
            "Provide a longer stretch of normal history or a shorter features.window_seconds"
        )
    bad = ~np.isfinite(x)
    if bad.any():
        per_feature = {names[j]: int(c) for j, c in enumerate(bad.sum(axis=0)) if c}
        raise TrainingError(
            f"{int(bad.any(axis=1).sum())} windows have non-finite features "
            f"(count per feature: {per_feature}); drop or repair them before training"
        )
    return x


def _ordered(
    features: pd.DataFrame, devices: np.ndarray | None, sequence_length: int
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The frame and devices to train on: devices from ``device_id`` unless given; sorted for sequences."""
    if devices is not None:
        devices = np.asarray(devices)
        if devices.shape != (len(features),):
            raise TrainingError(f"devices must have one entry per window ({len(features)}), got {devices.shape}")
    elif "device_id" in features.columns:
        devices = features["device_id"].astype(str).to_numpy()
    if sequence_length > 1 and devices is not None:
        keys = {"_device": devices}
        if "window_start" in features.columns:
            keys["_start"] = pd.to_datetime(features["window_start"], utc=True).to_numpy()
        order = pd.DataFrame(keys).sort_values(list(keys), kind="stable").index.to_numpy()
        features, devices = features.iloc[order], devices[order]
    return features, devices


def _check_input(detector: Detector, inputs: np.ndarray) -> np.ndarray:
    """Export check rows: validation inputs, some training inputs, and windows far outside the range."""
    far = np.stack([detector.data_min + 3.0 * detector.data_range, detector.data_min - 2.0 * detector.data_range])
    far = np.tile(far, (1, detector.sequence_length))
    parts = [inputs[detector.val_index], inputs[detector.train_index][:CHECK_TRAIN_ROWS], far]
    return np.concatenate(parts).astype(np.float32)


def train_detector(
    features: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainingConfig,
    *,
    devices: np.ndarray | None = None,
    wandb_cfg: WandbConfig | None = None,
    wandb_mode: str | None = None,
    progress: bool = True,
    out_dir: Path,
) -> TrainResult:
    """Fit ``cfg.detector`` on normal windows, calibrate the threshold, export TorchScript + ONNX to ``out_dir``.

    ``devices`` ([N], default: the ``device_id`` column) keeps sequences within a device; for
    sequence models the windows are first sorted by device and ``window_start``. The threshold is
    ``quantile(validation scores, cfg.threshold_quantile) * cfg.threshold_margin``.
    ``wandb_mode`` overrides ``wandb_cfg.resolved_mode()``; with neither, W&B is disabled (and
    never imported). Deterministic for a given ``cfg.seed`` on the same machine.
    """
    mode = _resolve_mode(wandb_cfg, wandb_mode)
    detector = make_detector(cfg, len(spec.feature_names))
    if not detector.exportable:
        raise TrainingError(f"the {detector.name} detector cannot be exported; choose another training.detector")
    features, devices = _ordered(features, devices, detector.sequence_length)
    x = _input_matrix(features, spec)
    names = spec.feature_names

    run = None
    if mode != "disabled":
        run = _wandb_init(mode, wandb_cfg, cfg, spec)
    try:
        on_epoch = None
        if run is not None:

            def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
                run.log({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}, step=epoch)

        with deterministic_torch(cfg.seed):
            detector.fit(x, devices=devices, progress=progress, on_epoch=on_epoch)
            val_scores = detector.validation_scores()
            quantile = float(np.quantile(val_scores, cfg.threshold_quantile))
            threshold = max(quantile * cfg.threshold_margin, MIN_THRESHOLD)
            hist = detector.history
            n_train, n_val = len(detector.train_index), len(detector.val_index)
            training = {
                "detector": detector.name,
                "epochs": len(hist.train_loss),
                "best_epoch": hist.best_epoch,
                "best_val_loss": hist.best_val_loss,
                "train_loss": list(hist.train_loss),
                "val_loss": list(hist.val_loss),
                "n_train": n_train,
                "n_val": n_val,
                "val_score_quantile": quantile,
                "config": cfg.model_dump(mode="json"),
            }
            model_dir = export_model(
                detector.scoring_module(),
                _check_input(detector, detector.inputs(x, devices)),
                spec,
                threshold,
                Path(out_dir),
                training=training,
                baseline=feature_baseline(x, names),
                detector=detector.name,
                sequence_length=detector.sequence_length,
                score_definition=detector.score_definition,
                onnx=True,
            )
        model_version = _model_version(model_dir)
        run_dir = None
        if run is not None:
            run_dir = _wandb_finish_ok(run, model_dir, threshold, training, model_version)
            run = None
    finally:
        if run is not None:
            run.finish(exit_code=1)
    return TrainResult(
        model_dir=model_dir,
        threshold=threshold,
        train_loss=hist.train_loss,
        val_loss=hist.val_loss,
        best_epoch=hist.best_epoch,
        n_train=n_train,
        n_val=n_val,
        wandb_run_dir=run_dir,
        model_version=model_version,
        detector=detector.name,
    )


def train_autoencoder(
    features: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainingConfig,
    *,
    wandb_cfg: WandbConfig | None = None,
    wandb_mode: str | None = None,
    progress: bool = True,
    out_dir: Path,
) -> TrainResult:
    """Train ``cfg.detector`` (the autoencoder by default) and export it; see :func:`train_detector`."""
    return train_detector(
        features, spec, cfg, wandb_cfg=wandb_cfg, wandb_mode=wandb_mode, progress=progress, out_dir=out_dir
    )


def _model_version(model_dir: Path) -> str:
    return str(json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))["model_version"])


def _wandb_init(mode: str, wandb_cfg: WandbConfig | None, cfg: TrainingConfig, spec: FeatureSpec) -> Any:
    import wandb  # lazily: a disabled run never imports wandb

    wcfg = wandb_cfg or WandbConfig()
    settings = None
    if mode == "online" and wcfg.api_key is not None:
        settings = wandb.Settings(api_key=wcfg.api_key.get_secret_value())
    try:
        return wandb.init(
            project=wcfg.project,
            entity=wcfg.entity,
            mode=mode,
            config={
                "detector": cfg.detector,
                "training": cfg.model_dump(mode="json"),
                "feature_spec": spec.to_dict(),
            },
            job_type="train",
            settings=settings,
            # read WANDB_DIR now: wandb keeps the settings of its first init in the process otherwise
            dir=os.environ.get("WANDB_DIR"),
        )
    except wandb.errors.Error as e:
        raise TrainingError(
            f"W&B run could not start in {mode} mode ({e}); check the API key and network, "
            "or set wandb.mode to offline or disabled"
        ) from e


def _wandb_finish_ok(run: Any, model_dir: Path, threshold: float, training: dict[str, Any], model_version: str) -> Path:
    import wandb

    metadata = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    run.log(
        {"threshold": threshold, "val_score_quantile": training["val_score_quantile"]},
        step=training["epochs"],
    )
    run.summary.update(
        {
            "detector": training["detector"],
            "threshold": threshold,
            "best_epoch": training["best_epoch"],
            "best_val_loss": training["best_val_loss"],
            "epochs_run": training["epochs"],
            "n_train": training["n_train"],
            "n_val": training["n_val"],
            "model_version": model_version,
        }
    )
    artifact = wandb.Artifact(name="netanomaly-model", type="model", metadata=metadata)
    artifact.add_dir(str(model_dir))
    run.log_artifact(artifact, aliases=["latest", model_version])
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir

"""Train the autoencoder on normal windows, calibrate the threshold, export the model.

The input windows are taken to be normal history. They are split (seeded) into a training and a
validation part; the scaler is fitted on the training part, the autoencoder is trained with Adam
and early stopping on the validation loss, and the threshold is a high quantile of the
validation windows' scores times a margin.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from model.autoencoder import Autoencoder, ScoringModule, fit_min_max
from model.exceptions import TrainingError
from model.export import METADATA_FILE, export_model, feature_baseline
from model.features import FeatureSpec, feature_matrix
from netanomaly.config import TrainingConfig, WandbConfig

MIN_WINDOWS = 50
# Early stopping: a validation loss counts as better only if it beats the best by this fraction.
MIN_RELATIVE_IMPROVEMENT = 1e-3
# Smallest threshold exported (a perfectly reconstructed validation set would give 0).
MIN_THRESHOLD = 1e-12
# Intra-op threads while training. The MLP's ops are far too small to gain from threads, and on a
# 2-core machine with one other busy process, 2 OpenMP threads made each step ~100x slower
# (measured: ~100 ms vs ~1 ms per batch). One thread also gives the same results on every machine.
TRAIN_THREADS = 1
_WANDB_MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_autoencoder`. Epochs are numbered from 1."""

    model_dir: Path
    threshold: float
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    best_epoch: int
    n_train: int
    n_val: int
    wandb_run_dir: Path | None
    model_version: str


@contextlib.contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Seeded torch with TRAIN_THREADS intra-op threads; restores the RNG and thread count on exit.

    ``torch.use_deterministic_algorithms`` is not switched on: the CPU ops used here (linear,
    GELU, MSE, Adam) are deterministic already, and the switch imports torch._dynamo (~2 s).
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(TRAIN_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


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


def split_windows(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` window indices into (train, validation); both non-empty for n >= 2."""
    if n < 2:
        raise TrainingError(f"cannot split {n} windows into a training and a validation part")
    n_val = min(n - 1, max(1, round(n * validation_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _window_errors(module: ScoringModule, x: np.ndarray) -> np.ndarray:
    """Anomaly scores (mean squared error per window, float64) of raw features ``x``."""
    with torch.inference_mode():
        err = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return err.double().mean(dim=1).numpy()


def _mean_loss(model: Autoencoder, xs: torch.Tensor) -> float:
    with torch.inference_mode():
        return float(torch.mean((model(xs) - xs) ** 2))


def _fit(
    model: Autoencoder,
    xs_train: torch.Tensor,
    xs_val: torch.Tensor,
    cfg: TrainingConfig,
    progress: bool,
    run: Any,
) -> tuple[list[float], list[float], int, float]:
    """Adam with early stopping on the validation loss; leaves the best weights in ``model``.

    Returns the train and validation loss per epoch, the best epoch (from 1) and its loss.
    """
    n_train = xs_train.shape[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    train_hist: list[float] = []
    val_hist: list[float] = []
    best_val, best_epoch, since_best = math.inf, 0, 0
    best_state = copy.deepcopy(model.state_dict())
    epochs = range(1, cfg.epochs + 1)
    with tqdm(epochs, desc="train", unit="epoch", disable=not progress, leave=False) as bar:
        for epoch in bar:
            model.train()
            total = 0.0
            for idx in torch.randperm(n_train, generator=gen).split(cfg.batch_size):
                batch = xs_train[idx]
                loss = torch.mean((model(batch) - batch) ** 2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            model.eval()
            train_loss = total / n_train
            val_loss = _mean_loss(model, xs_val)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise TrainingError(
                    f"training diverged at epoch {epoch} (train loss {train_loss}, val loss {val_loss}); "
                    "lower training.learning_rate"
                )
            train_hist.append(train_loss)
            val_hist.append(val_loss)
            bar.set_postfix(train=f"{train_loss:.3g}", val=f"{val_loss:.3g}")
            if run is not None:
                run.log({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}, step=epoch)
            if val_loss < best_val * (1.0 - MIN_RELATIVE_IMPROVEMENT):
                best_val, best_epoch, since_best = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return train_hist, val_hist, best_epoch, best_val


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
    """Train on normal windows, calibrate the threshold and export the model to ``out_dir``.

    ``wandb_mode`` overrides ``wandb_cfg.resolved_mode()``; with neither, W&B is disabled (and
    never imported). Deterministic for a given ``cfg.seed`` on the same machine.
    """
    mode = _resolve_mode(wandb_cfg, wandb_mode)
    x = _input_matrix(features, spec)
    names = spec.feature_names
    train_idx, val_idx = split_windows(x.shape[0], cfg.validation_fraction, cfg.seed)
    x_train, x_val = x[train_idx], x[val_idx]
    n_val = len(val_idx)
    n_train = x_train.shape[0]
    data_min, data_range = fit_min_max(x_train)

    run = None
    if mode != "disabled":
        run = _wandb_init(mode, wandb_cfg, cfg, spec)
    try:
        with _deterministic_torch(cfg.seed):
            model = Autoencoder(len(names), hidden=cfg.hidden, latent=cfg.latent)
            xs_train = torch.from_numpy((x_train - data_min) / data_range)
            xs_val = torch.from_numpy((x_val - data_min) / data_range)
            train_hist, val_hist, best_epoch, best_val = _fit(model, xs_train, xs_val, cfg, progress, run)
            scoring = ScoringModule(model, data_min, data_range).eval()
            val_scores = _window_errors(scoring, x_val)
            quantile = float(np.quantile(val_scores, cfg.threshold_quantile))
            threshold = max(quantile * cfg.threshold_margin, MIN_THRESHOLD)

            training = {
                "epochs": len(train_hist),
                "best_epoch": best_epoch,
                "best_val_loss": best_val,
                "train_loss": train_hist,
                "val_loss": val_hist,
                "n_train": n_train,
                "n_val": n_val,
                "val_score_quantile": quantile,
                "config": cfg.model_dump(mode="json"),
            }
            # The check input covers the training range and values far outside it.
            far = np.stack([data_min + 3.0 * data_range, data_min - 2.0 * data_range])
            check = np.concatenate([x_val, x_train[:256], far])
            model_dir = export_model(
                scoring,
                check,
                spec,
                threshold,
                Path(out_dir),
                training=training,
                baseline=feature_baseline(x, names),
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
        train_loss=tuple(train_hist),
        val_loss=tuple(val_hist),
        best_epoch=best_epoch,
        n_train=n_train,
        n_val=n_val,
        wandb_run_dir=run_dir,
        model_version=model_version,
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
            config={"training": cfg.model_dump(mode="json"), "feature_spec": spec.to_dict()},
            job_type="train",
            settings=settings,
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

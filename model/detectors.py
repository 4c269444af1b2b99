"""Anomaly detectors behind one interface, each exportable to the same scoring-module contract.

The contract (what :mod:`model.export` saves and the Flink job runs): a ``torch.nn.Module``
scriptable with ``torch.jit.script`` whose ``forward(x: Tensor[N, D]) -> Tensor[N, F]`` maps raw
float32 input to non-negative per-feature error terms. A window's anomaly score is the mean of
its row; its contributions are the row normalised to sum 1. ``D = F`` for window models; for
sequence models ``D = L * F`` and a row is the ``L`` most recent windows of one device, oldest
first, flattened (:func:`build_sequences`). Every module carries the min-max scaler of the
training part as buffers ``data_min`` / ``data_range`` of length ``F``.

Every detector splits the normal windows it is given with :func:`split_windows` (seeded) into a
training part (scaler, model) and a validation part (early stopping where training is
iterative, and :meth:`Detector.validation_scores` for the label-free threshold).
"""

from __future__ import annotations

import abc
import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from torch import Tensor, nn
from tqdm.auto import tqdm

from model.autoencoder import (
    Autoencoder,
    LSTMAutoencoder,
    ScoringModule,
    SequenceScoringModule,
    fit_min_max,
    scaler_tensors,
)
from model.exceptions import ModelError, TrainingError
from model.export import SCORE_DEFINITION
from netanomaly.config import TrainingConfig

# Early stopping: a validation loss counts as better only if it beats the best by this fraction.
MIN_RELATIVE_IMPROVEMENT = 1e-3
# Intra-op threads while training. The networks' ops are far too small to gain from threads, and on a
# 2-core machine with one other busy process, 2 OpenMP threads made each step ~100x slower
# (measured: ~100 ms vs ~1 ms per batch). One thread also gives the same results on every machine.
TRAIN_THREADS = 1
# Rows per forward pass when a detector scores in-process.
SCORE_CHUNK_ROWS = 4096

EpochCallback = Callable[[int, float, float], None]
"""Called after every epoch of iterative training with (epoch from 1, train loss, validation loss)."""


@dataclass(frozen=True)
class FitHistory:
    """Loss per epoch of iterative training (empty for IsolationForest, PCA and the random baseline).

    ``best_epoch`` counts from 1 (0: not iterative); ``best_val_loss`` is None when not iterative.
    """

    train_loss: tuple[float, ...] = ()
    val_loss: tuple[float, ...] = ()
    best_epoch: int = 0
    best_val_loss: float | None = None


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Seeded torch with TRAIN_THREADS intra-op threads; restores the RNG and thread count on exit.

    ``torch.use_deterministic_algorithms`` is not switched on: the CPU ops used here (linear,
    GELU, LSTM, MSE, Adam) are deterministic already, and the switch imports torch._dynamo (~2 s).
    """
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(TRAIN_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def split_windows(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` window indices into (train, validation); both non-empty for n >= 2."""
    if n < 2:
        raise TrainingError(f"cannot split {n} windows into a training and a validation part")
    n_val = min(n - 1, max(1, round(n * validation_fraction)))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def build_sequences(x: np.ndarray, devices: np.ndarray | None, sequence_length: int) -> np.ndarray:
    """Rows ``[N, L*F]``: for each window, the ``L`` most recent windows of its device, oldest first.

    ``x`` is ``[N, F]``, rows in time order within each device (devices may interleave);
    ``devices`` is ``[N]`` (None: a single device). Row ``i`` of the result is
    ``[x[i-(L-1)], ..., x[i-1], x[i]]`` counted over the rows of the same device only; the first
    ``L - 1`` windows of a device are padded by repeating its first window. Gaps in time are not
    filled: the "previous window" is the previous row of that device.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected windows of shape [N, F], got {x.shape}")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be at least 1, got {sequence_length}")
    n, f = x.shape
    if devices is None:
        codes = np.zeros(n, dtype=np.int64)
    else:
        devices = np.asarray(devices)
        if devices.shape != (n,):
            raise ValueError(f"devices must have shape ({n},), got {devices.shape}")
        codes, _ = pd.factorize(pd.Series(devices, dtype=object), use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")  # rows grouped by device, time order kept
    sorted_codes = codes[order]
    pos = np.arange(n)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_codes)) + 1] if n else np.zeros(0, dtype=np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, n])) if n else pos
    out = np.empty((n, sequence_length, f), dtype=x.dtype)
    for k in range(sequence_length):
        lag = sequence_length - 1 - k
        src_sorted = np.maximum(pos - lag, group_start)
        out[order, k, :] = x[order[src_sorted]]
    return out.reshape(n, sequence_length * f)


def _as_windows(x: np.ndarray, n_features: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"expected windows of shape [N, {n_features}], got {x.shape}")
    return x


class Detector(abc.ABC):
    """A detector trained on normal windows; see the module docstring for the scoring contract."""

    name: str = ""
    sequence_length: int = 1
    exportable: bool = True
    score_definition: str = ""

    def __init__(self, cfg: TrainingConfig, n_features: int) -> None:
        if n_features < 1:
            raise ValueError(f"n_features must be positive, got {n_features}")
        self.cfg = cfg
        self.n_features = n_features
        self.history = FitHistory()
        self.data_min: np.ndarray | None = None
        self.data_range: np.ndarray | None = None
        self.train_index = np.zeros(0, dtype=np.int64)
        self.val_index = np.zeros(0, dtype=np.int64)
        self._module: nn.Module | None = None
        self._val_scores: np.ndarray | None = None

    @property
    def input_dim(self) -> int:
        """Width ``D`` of the scoring module's input."""
        return self.sequence_length * self.n_features

    def inputs(self, x: np.ndarray, devices: np.ndarray | None = None) -> np.ndarray:
        """Model input ``[N, D]`` (float32) of windows ``x`` [N, F]: sequences for sequence models."""
        x = _as_windows(x, self.n_features)
        if self.sequence_length == 1:
            return x
        return build_sequences(x, devices, self.sequence_length)

    def fit(
        self,
        X: np.ndarray,
        *,
        devices: np.ndarray | None = None,
        progress: bool = False,
        on_epoch: EpochCallback | None = None,
    ) -> Detector:
        """Fit on normal windows ``X`` [N, F] in time order (``devices``: [N] ids); returns self.

        Deterministic for ``cfg.seed``. Sequences never cross devices.
        """
        x = _as_windows(X, self.n_features)
        if not np.isfinite(x).all():
            raise TrainingError("windows must be finite to train on; drop or repair the non-finite ones")
        inputs = self.inputs(x, devices)
        train_idx, val_idx = split_windows(len(x), self.cfg.validation_fraction, self.cfg.seed)
        self.train_index, self.val_index = train_idx, val_idx
        self.data_min, self.data_range = fit_min_max(x[train_idx])
        self._module = None
        self._fit(inputs[train_idx], inputs[val_idx], progress=progress, on_epoch=on_epoch)
        self._val_scores = self._score_inputs(inputs[val_idx])
        return self

    @abc.abstractmethod
    def _fit(self, train: np.ndarray, val: np.ndarray, *, progress: bool, on_epoch: EpochCallback | None) -> None:
        """Fit on raw inputs ``[n, D]`` (the scaler is set); set ``self._module`` (eager, eval mode)."""

    def _require_fitted(self) -> nn.Module:
        if self._module is None:
            raise ModelError(f"the {self.name} detector is not fitted; call fit() first")
        return self._module

    def scoring_module(self) -> nn.Module:
        """The eager scoring module (contract in the module docstring), in eval mode."""
        return self._require_fitted().eval()

    def _errors_inputs(self, inputs: np.ndarray) -> np.ndarray:
        module = self._require_fitted()
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        out = np.empty((inputs.shape[0], self.n_features), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, inputs.shape[0], SCORE_CHUNK_ROWS):
                stop = min(start + SCORE_CHUNK_ROWS, inputs.shape[0])
                out[start:stop] = module(torch.from_numpy(inputs[start:stop])).numpy()
        return out

    def _score_inputs(self, inputs: np.ndarray) -> np.ndarray:
        err = self._errors_inputs(inputs).astype(np.float64)
        return err.sum(axis=1) / self.n_features

    def errors(self, X: np.ndarray, *, devices: np.ndarray | None = None) -> np.ndarray:
        """Per-feature error terms ``[N, F]`` (float32) of windows ``X`` [N, F]."""
        return self._errors_inputs(self.inputs(X, devices))

    def score(self, X: np.ndarray, *, devices: np.ndarray | None = None) -> np.ndarray:
        """Anomaly scores ``[N]`` (float64, mean of the error terms) of windows ``X`` [N, F]."""
        return self._score_inputs(self.inputs(X, devices))

    def validation_scores(self) -> np.ndarray:
        """Scores of the held-out normal validation part (for the label-free threshold)."""
        if self._val_scores is None:
            raise ModelError(f"the {self.name} detector is not fitted; call fit() first")
        return self._val_scores.copy()


# --- neural detectors ------------------------------------------------------------------------


def _mean_loss(model: nn.Module, xs: Tensor) -> float:
    with torch.inference_mode():
        return float(torch.mean((model(xs) - xs) ** 2))


def _train_reconstruction(
    model: nn.Module,
    xs_train: Tensor,
    xs_val: Tensor,
    cfg: TrainingConfig,
    progress: bool,
    on_epoch: EpochCallback | None,
) -> FitHistory:
    """Adam on the mean squared reconstruction error with early stopping on the validation loss.

    Leaves the best epoch's weights in ``model`` (eval mode).
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
            if on_epoch is not None:
                on_epoch(epoch, train_loss, val_loss)
            if val_loss < best_val * (1.0 - MIN_RELATIVE_IMPROVEMENT):
                best_val, best_epoch, since_best = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return FitHistory(tuple(train_hist), tuple(val_hist), best_epoch, best_val)


class AutoencoderDetector(Detector):
    """MLP autoencoder over one window; terms are squared reconstruction errors (scaled space)."""

    name = "autoencoder"
    score_definition = SCORE_DEFINITION

    def _fit(self, train: np.ndarray, val: np.ndarray, *, progress: bool, on_epoch: EpochCallback | None) -> None:
        cfg = self.cfg
        with deterministic_torch(cfg.seed):
            model = Autoencoder(self.n_features, hidden=cfg.hidden, latent=cfg.latent)
            xs_train = torch.from_numpy((train - self.data_min) / self.data_range)
            xs_val = torch.from_numpy((val - self.data_min) / self.data_range)
            self.history = _train_reconstruction(model, xs_train, xs_val, cfg, progress, on_epoch)
        self._module = ScoringModule(model, self.data_min, self.data_range).eval()


class LSTMAutoencoderDetector(Detector):
    """LSTM sequence autoencoder over the last ``cfg.sequence_length`` windows of a device.

    Trained to reconstruct the whole sequence; the exported error terms are those of the LAST
    window only (so an anomaly raises its own window's score, not those of the windows after it).
    Validation windows may appear as context in training sequences (the split is over windows).
    """

    name = "lstm_autoencoder"
    score_definition = (
        "input = the L most recent windows of the device, oldest first, flattened [N, L*F]; "
        "score = mean over features f of (lstm_autoencoder(seq_scaled)[L-1, f] - seq_scaled[L-1, f])^2 "
        "(error of the last window) with seq_scaled = (seq - scaler.min) / scaler.range per window; "
        "is_anomaly = score > threshold; contribution[f] = squared error of f / sum of squared errors"
    )

    def __init__(self, cfg: TrainingConfig, n_features: int) -> None:
        super().__init__(cfg, n_features)
        self.sequence_length = int(cfg.sequence_length)

    def _scaled_sequences(self, rows: np.ndarray) -> Tensor:
        seq = rows.reshape(rows.shape[0], self.sequence_length, self.n_features)
        return torch.from_numpy(np.ascontiguousarray((seq - self.data_min) / self.data_range, dtype=np.float32))

    def _fit(self, train: np.ndarray, val: np.ndarray, *, progress: bool, on_epoch: EpochCallback | None) -> None:
        cfg = self.cfg
        with deterministic_torch(cfg.seed):
            model = LSTMAutoencoder(self.n_features, self.sequence_length, hidden=cfg.hidden, latent=cfg.latent)
            xs_train, xs_val = self._scaled_sequences(train), self._scaled_sequences(val)
            self.history = _train_reconstruction(model, xs_train, xs_val, cfg, progress, on_epoch)
        self._module = SequenceScoringModule(model, self.data_min, self.data_range).eval()


# --- isolation forest ------------------------------------------------------------------------


def average_path_length(n: np.ndarray) -> np.ndarray:
    """``c(n)``: average path length of an unsuccessful BST search in ``n`` samples (0 for n <= 1)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def float32_at_most(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 in ``t``: for float32 ``x``, ``x <= t`` iff ``x <= float32_at_most(t)``."""
    t = np.asarray(t, dtype=np.float64)
    down = t.astype(np.float32)
    above = down.astype(np.float64) > t
    down[above] = np.nextafter(down[above], np.float32(-np.inf))
    return down


class IsolationForestModule(nn.Module):
    """A fitted IsolationForest as tensors, scored by walking all trees at once.

    Nodes of all trees are numbered globally and each node has two slots (``2 * node``: the
    sample goes left, ``+ 1``: right) holding the child and the split's weight; leaves (and
    padding) are their own children, so ``max_depth`` gather steps bring every sample to its leaf
    in every tree. The score is ``2 ** (-mean path length / c(max_samples))``, i.e. sklearn's
    ``-score_samples``. The per-feature terms are ``F * score * share_f``, so the row mean is the
    score; ``share_f`` is the share of feature ``f`` among the splits along the sample's paths,
    each split weighted by the fraction of its node's training samples that it separates from the
    sample (``1 - n_child / n_node``; uniform without any split). Unweighted split counts were
    tried first: on the unit tests' data they did not tell the shifted features apart (their share
    was 0.45 for anomalies and normals alike; weighted 0.61 vs 0.46). sklearn compares float32
    features with float64 thresholds; the thresholds here are the largest float32 not above them,
    which gives the same decisions in float32 arithmetic.
    """

    def __init__(self, forest: IsolationForest, data_min: np.ndarray, data_range: np.ndarray) -> None:
        super().__init__()
        n_features = int(forest.n_features_in_)
        dmin, drange = scaler_tensors(data_min, data_range, n_features)
        trees = forest.estimators_
        width = max(t.tree_.node_count for t in trees)
        n_trees = len(trees)
        ids = np.arange(n_trees * width, dtype=np.int64).reshape(n_trees, width)
        child = np.repeat(ids[:, :, None], 2, axis=2)  # self loops: leaves and padding stay put
        gain = np.zeros((n_trees, width, 2), dtype=np.float32)
        feature = np.zeros((n_trees, width), dtype=np.int64)
        threshold = np.zeros((n_trees, width), dtype=np.float32)
        leaf_value = np.zeros((n_trees, width), dtype=np.float64)
        max_depth = 0
        for t, (est, feats) in enumerate(zip(trees, forest.estimators_features_, strict=True)):
            tree = est.tree_
            n = tree.node_count
            cl, cr = tree.children_left, tree.children_right
            split = cl >= 0
            depth = np.zeros(n, dtype=np.int64)
            for node in range(n):  # children have larger ids than their parent
                if split[node]:
                    depth[cl[node]] = depth[cr[node]] = depth[node] + 1
            feat = tree.feature.astype(np.int64)
            if len(feats) != n_features:  # trees fitted on a feature subset: map back to input columns
                feat = np.where(split, np.asarray(feats, dtype=np.int64)[np.maximum(feat, 0)], 0)
            n_node = tree.n_node_samples.astype(np.float64)
            for side, kids in enumerate((cl, cr)):
                child[t, :n, side] = np.where(split, t * width + kids, ids[t, :n])
                gain[t, :n, side] = np.where(split, 1.0 - n_node[np.maximum(kids, 0)] / n_node, 0.0)
            feature[t, :n] = np.where(split, feat, 0)
            threshold[t, :n] = np.where(split, float32_at_most(tree.threshold), 0.0)
            leaf_value[t, :n] = np.where(split, 0.0, depth + average_path_length(tree.n_node_samples))
            max_depth = max(max_depth, int(depth.max()))
        self.max_depth = max_depth
        self.n_features = n_features
        self.register_buffer("data_min", dmin)
        self.register_buffer("data_range", drange)
        self.register_buffer("roots", torch.from_numpy(ids[:, 0].copy()))
        # Packed float32 tables, one gather per step each (ONNX Runtime's Gather costs per index):
        # per node (feature, threshold) and per slot (child, weight); ids are exact in float32.
        if n_trees * width >= 2**24:
            raise ValueError(f"the forest has too many nodes ({n_trees * width}) to index in float32")
        nodes = np.stack([feature.reshape(-1).astype(np.float32), threshold.reshape(-1)], axis=1)
        slots = np.stack([child.reshape(-1).astype(np.float32), gain.reshape(-1)], axis=1)
        self.register_buffer("nodes", torch.from_numpy(nodes))
        self.register_buffer("slots", torch.from_numpy(slots))
        self.register_buffer("leaf_value", torch.from_numpy(leaf_value.reshape(-1)))
        denominator = n_trees * float(average_path_length(np.array([forest.max_samples_]))[0])
        self.register_buffer("denominator", torch.tensor(denominator, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        """Raw windows [N, F] -> terms [N, F] whose row mean is the isolation score."""
        xs = (x - self.data_min) / self.data_range
        node = self.roots.unsqueeze(0).expand(x.shape[0], -1)
        credit = torch.zeros_like(xs)
        for _ in range(self.max_depth):
            split = self.nodes[node]  # [N, T, 2]: feature, threshold
            feat = split[:, :, 0].to(torch.int64)
            # sklearn goes left when x <= threshold, else right (NaN too).
            go_right = torch.logical_not(torch.gather(xs, 1, feat) <= split[:, :, 1])
            step = self.slots[node * 2 + go_right.to(torch.int64)]  # [N, T, 2]: child, weight
            credit = credit.scatter_add(1, feat, step[:, :, 1])
            node = step[:, :, 0].to(torch.int64)
        path = self.leaf_value[node].sum(dim=1, keepdim=True)
        score = torch.pow(2.0, -path / self.denominator)
        total = credit.sum(dim=1, keepdim=True)
        share = torch.where(
            total > 0,
            credit / torch.where(total > 0, total, torch.ones_like(total)),
            torch.full_like(credit, 1.0 / self.n_features),
        )
        return (self.n_features * score * share.double()).to(x.dtype)


class IsolationForestDetector(Detector):
    """sklearn IsolationForest on scaled windows, exported as a tensorised tree walk."""

    name = "isolation_forest"
    score_definition = (
        "score = 2^(-E[h(x_scaled)] / c(max_samples)) of the isolation forest (sklearn's -score_samples) "
        "with x_scaled = (x - scaler.min) / scaler.range; term[f] = F * score * share of f among the splits "
        "along the sample's paths, each weighted by the fraction of the node's training samples it separates "
        "from the sample; is_anomaly = score > threshold; contribution[f] = that share"
    )

    def _fit(self, train: np.ndarray, val: np.ndarray, *, progress: bool, on_epoch: EpochCallback | None) -> None:
        xs = ((train - self.data_min) / self.data_range).astype(np.float32)
        self.forest = IsolationForest(
            n_estimators=self.cfg.n_estimators,
            max_samples=min(self.cfg.max_samples, xs.shape[0]),
            random_state=self.cfg.seed,
        ).fit(xs)
        self._module = IsolationForestModule(self.forest, self.data_min, self.data_range).eval()


# --- PCA -------------------------------------------------------------------------------------


class PCAModule(nn.Module):
    """Raw windows [N, F] -> squared PCA reconstruction error per feature (scaled space)."""

    def __init__(self, pca: PCA, data_min: np.ndarray, data_range: np.ndarray) -> None:
        super().__init__()
        dmin, drange = scaler_tensors(data_min, data_range, int(pca.n_features_in_))
        self.register_buffer("data_min", dmin)
        self.register_buffer("data_range", drange)
        self.register_buffer("mean", torch.from_numpy(np.asarray(pca.mean_, dtype=np.float32).copy()))
        self.register_buffer("components", torch.from_numpy(np.asarray(pca.components_, dtype=np.float32).copy()))

    def forward(self, x: Tensor) -> Tensor:
        """Per-feature squared error of the projection onto the kept components."""
        centered = (x - self.data_min) / self.data_range - self.mean
        diff = torch.matmul(torch.matmul(centered, self.components.t()), self.components) - centered
        return diff * diff


class PCADetector(Detector):
    """Baseline: PCA keeping ``cfg.pca_variance`` of the variance of the scaled training windows."""

    name = "pca"
    score_definition = (
        "score = mean over features f of (reconstruction[f] - x_scaled[f])^2, reconstruction = projection of "
        "x_scaled = (x - scaler.min) / scaler.range onto the PCA components kept; is_anomaly = score > "
        "threshold; contribution[f] = squared error of f / sum of squared errors"
    )

    def _fit(self, train: np.ndarray, val: np.ndarray, *, progress: bool, on_epoch: EpochCallback | None) -> None:
        xs = (train.astype(np.float64) - self.data_min) / self.data_range
        self.pca = PCA(n_components=self.cfg.pca_variance, svd_solver="full").fit(xs)
        self._module = PCAModule(self.pca, self.data_min, self.data_range).eval()


# --- random baseline -------------------------------------------------------------------------


class RandomDetector(Detector):
    """Evaluation baseline: uniform random scores from a generator seeded with ``cfg.seed``; not exportable."""

    name = "random"
    exportable = False
    score_definition = "uniform random score in [0, 1) (evaluation baseline)"

    def _fit(self, train: np.ndarray, val: np.ndarray, *, progress: bool, on_epoch: EpochCallback | None) -> None:
        self._module = None

    def _errors_inputs(self, inputs: np.ndarray) -> np.ndarray:
        if self.data_min is None:
            raise ModelError("the random detector is not fitted; call fit() first")
        score = np.random.default_rng(self.cfg.seed).random(inputs.shape[0]).astype(np.float32)
        return np.repeat(score[:, None], self.n_features, axis=1)

    def scoring_module(self) -> nn.Module:
        """Always raises: the random baseline has no scoring module to export."""
        raise ModelError(
            "the random detector is an evaluation baseline and cannot be exported; "
            "set training.detector to autoencoder, lstm_autoencoder, isolation_forest or pca"
        )


DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (AutoencoderDetector, LSTMAutoencoderDetector, IsolationForestDetector, PCADetector, RandomDetector)
}
EXPORTABLE_DETECTORS = tuple(name for name, cls in DETECTORS.items() if cls.exportable)


def make_detector(cfg: TrainingConfig, n_features: int, *, name: str | None = None) -> Detector:
    """The detector ``cfg.detector`` (or ``name``, e.g. ``"random"``) for ``n_features`` window features."""
    key = name if name is not None else cfg.detector
    try:
        cls = DETECTORS[key]
    except KeyError:
        raise ValueError(f"unknown detector {key!r}; choose one of {sorted(DETECTORS)}") from None
    return cls(cfg, n_features)

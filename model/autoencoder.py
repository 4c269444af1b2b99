"""The autoencoders and their scoring modules shipped as TorchScript.

:class:`ScoringModule` (window MLP) and :class:`SequenceScoringModule` (LSTM over the last ``L``
windows) carry the min-max scaler as buffers, so the exported file maps raw inputs straight to
per-feature squared reconstruction errors; nothing else is needed to score.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn


class Autoencoder(nn.Module):
    """MLP autoencoder ``n_features -> hidden -> latent -> hidden -> n_features`` (linear output)."""

    def __init__(self, n_features: int, hidden: int = 32, latent: int = 8) -> None:
        super().__init__()
        if n_features < 1 or hidden < 1 or latent < 1:
            raise ValueError(f"sizes must be positive, got n_features={n_features} hidden={hidden} latent={latent}")
        self.n_features = n_features
        self.encoder = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.GELU(), nn.Linear(latent, hidden), nn.GELU(), nn.Linear(hidden, n_features))

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (scaled features, shape [N, F])."""
        return self.decoder(self.encoder(x))


class ScoringModule(nn.Module):
    """Raw features ``[N, F]`` (float32) -> per-feature squared reconstruction error ``[N, F]``.

    Inputs are min-max scaled with the training scaler (``data_min``, ``data_range``; zero
    ranges replaced by 1) and deliberately not clipped: values outside the training range give
    large errors. The anomaly score of a window is the mean of its row.
    """

    def __init__(
        self, autoencoder: Autoencoder, data_min: np.ndarray | Tensor, data_range: np.ndarray | Tensor
    ) -> None:
        super().__init__()
        dmin, drange = scaler_tensors(data_min, data_range, autoencoder.n_features)
        self.autoencoder = autoencoder
        self.register_buffer("data_min", dmin)
        self.register_buffer("data_range", drange)

    def scale(self, x: Tensor) -> Tensor:
        """Min-max scaled features (no clipping)."""
        return (x - self.data_min) / self.data_range

    def forward(self, x: Tensor) -> Tensor:
        """Per-feature squared reconstruction error in scaled space."""
        xs = self.scale(x)
        diff = self.autoencoder(xs) - xs
        return diff * diff


def fit_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min and range of ``x`` (float32); zero ranges become 1."""
    x = np.asarray(x, dtype=np.float64)
    dmin = x.min(axis=0)
    drange = x.max(axis=0) - dmin
    drange = np.where(drange > 0, drange, 1.0)
    return dmin.astype(np.float32), drange.astype(np.float32)


class LSTMAutoencoder(nn.Module):
    """Sequence autoencoder over ``L`` windows of ``F`` scaled features.

    An LSTM encoder reads the windows oldest first; its last hidden state is projected to a
    latent vector, which is expanded back to ``hidden`` units, repeated over the ``L`` steps and
    decoded by a second LSTM and a linear layer into the reconstructed sequence ``[N, L, F]``.
    """

    def __init__(self, n_features: int, sequence_length: int, hidden: int = 32, latent: int = 8) -> None:
        super().__init__()
        if n_features < 1 or sequence_length < 1 or hidden < 1 or latent < 1:
            raise ValueError(
                f"sizes must be positive, got n_features={n_features} sequence_length={sequence_length} "
                f"hidden={hidden} latent={latent}"
            )
        self.n_features = n_features
        self.sequence_length = sequence_length
        self.encoder = nn.LSTM(n_features, hidden, batch_first=True)
        self.to_latent = nn.Linear(hidden, latent)
        self.from_latent = nn.Linear(latent, hidden)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.output = nn.Linear(hidden, n_features)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of ``x`` (scaled sequences, shape [N, L, F])."""
        _, (h, _) = self.encoder(x)
        z = self.to_latent(h[-1])
        seed = torch.tanh(self.from_latent(z))
        steps = seed.unsqueeze(1).expand(-1, self.sequence_length, -1).contiguous()
        decoded, _ = self.decoder(steps)
        return self.output(decoded)


class SequenceScoringModule(nn.Module):
    """Raw flattened sequences ``[N, L*F]`` (oldest window first) -> error terms of the last window ``[N, F]``.

    The terms are the squared reconstruction errors of the most recent window only, so an
    anomalous window raises its own score rather than the scores of the ``L - 1`` windows after
    it. Scaling is the per-feature min-max scaler of the training part, applied to every window.
    """

    def __init__(
        self, autoencoder: LSTMAutoencoder, data_min: np.ndarray | Tensor, data_range: np.ndarray | Tensor
    ) -> None:
        super().__init__()
        dmin, drange = scaler_tensors(data_min, data_range, autoencoder.n_features)
        self.autoencoder = autoencoder
        self.sequence_length = autoencoder.sequence_length
        self.n_features = autoencoder.n_features
        self.register_buffer("data_min", dmin)
        self.register_buffer("data_range", drange)

    def scale(self, x: Tensor) -> Tensor:
        """``[N, L*F]`` raw -> ``[N, L, F]`` min-max scaled (no clipping)."""
        seq = x.reshape(x.shape[0], self.sequence_length, self.n_features)
        return (seq - self.data_min) / self.data_range

    def forward(self, x: Tensor) -> Tensor:
        """Per-feature squared reconstruction error of the last window, in scaled space."""
        xs = self.scale(x)
        diff = self.autoencoder(xs)[:, -1, :] - xs[:, -1, :]
        return diff * diff


def scaler_tensors(data_min: np.ndarray | Tensor, data_range: np.ndarray | Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Validated float32 scaler tensors of length ``n``; zero ranges become 1."""
    dmin = torch.as_tensor(np.asarray(data_min, dtype=np.float32)).reshape(-1).clone()
    drange = torch.as_tensor(np.asarray(data_range, dtype=np.float32)).reshape(-1).clone()
    if dmin.shape != drange.shape or dmin.numel() != n:
        raise ValueError(f"scaler sizes {tuple(dmin.shape)}/{tuple(drange.shape)} do not match the {n} features")
    if not (torch.isfinite(dmin).all() and torch.isfinite(drange).all()):
        raise ValueError("scaler min/range must be finite")
    return dmin, torch.where(drange > 0, drange, torch.ones_like(drange))

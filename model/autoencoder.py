"""The autoencoder and the scoring module shipped as TorchScript.

:class:`ScoringModule` carries the min-max scaler as buffers, so the exported file maps raw
window features straight to per-feature squared reconstruction errors; nothing else is needed
to score.
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
        dmin = torch.as_tensor(np.asarray(data_min, dtype=np.float32)).reshape(-1).clone()
        drange = torch.as_tensor(np.asarray(data_range, dtype=np.float32)).reshape(-1).clone()
        if dmin.shape != drange.shape or dmin.numel() != autoencoder.n_features:
            raise ValueError(
                f"scaler sizes {tuple(dmin.shape)}/{tuple(drange.shape)} do not match "
                f"the autoencoder's {autoencoder.n_features} features"
            )
        if not (torch.isfinite(dmin).all() and torch.isfinite(drange).all()):
            raise ValueError("scaler min/range must be finite")
        drange = torch.where(drange > 0, drange, torch.ones_like(drange))
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

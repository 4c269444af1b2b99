"""Typed errors of the model package. Each message says what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path

from netanomaly.exceptions import NetAnomalyError


class ModelError(NetAnomalyError):
    """Base class of model errors (training, export, loading, scoring)."""


class ModelFileError(ModelError):
    """A model directory is missing, corrupt, tampered with or made for another feature spec.

    ``path`` is the file or directory at fault.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        text = str(path)
        super().__init__(message if path is None or text in message else f"{text}: {message}")


class TrainingError(ModelError):
    """The model cannot be trained on the given data (too few windows, non-finite features, ...)."""

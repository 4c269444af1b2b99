"""Typed errors of the monitor. Each says what is wrong and what to do about it."""

from __future__ import annotations

from pathlib import Path

from netanomaly.exceptions import ConfigError, NetAnomalyError


class MonitorError(NetAnomalyError):
    """Base class of the errors the monitor raises on purpose."""


class MonitorConfigError(ConfigError, MonitorError):
    """The monitor configuration is invalid; ``field`` names the dotted key at fault."""


class BaselineError(MonitorError):
    """The model folder's metadata.json cannot serve as a drift baseline."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class InvalidRecord(ValueError):
    """A consumed record lacks a field or has a value of the wrong type (counted, then skipped)."""

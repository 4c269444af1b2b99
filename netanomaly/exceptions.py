"""Typed errors of the netanomaly package. Each says what is wrong and what to do about it."""

from __future__ import annotations


class NetAnomalyError(Exception):
    """Base class: every error this package raises on purpose."""


class ConfigError(NetAnomalyError):
    """The configuration is invalid. ``field`` names the dotted path at fault, if known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message if field is None or field in message else f"{field}: {message}")


class InfraError(NetAnomalyError):
    """A local service (Kafka broker, Maven fetch, Flink cluster) could not be set up."""


class EventFileError(NetAnomalyError):
    """An events or features file cannot be read (unknown format, missing columns)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)

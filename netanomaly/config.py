"""Job configuration: frozen, validated pydantic models built in main(), never at import.

Every section rejects unknown keys (a typo fails loudly). Values come from, in order:
the model defaults, the YAML file (``--config``, default ``conf/job.yaml``), then command-line
overrides (``--set section.key=value`` and the dedicated flags of each command).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from netanomaly.exceptions import ConfigError

DEFAULT_CONFIG_PATH = Path("conf/job.yaml")
CACHE_DIR = Path(os.environ.get("NETANOMALY_CACHE", Path.home() / ".cache" / "network-anomaly"))

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


Frozen = _Frozen  # the base of every config section (monitor config too)


def check_topic_name(v: str) -> str:
    """A legal Kafka topic name, or ValueError saying what is allowed."""
    if not _TOPIC.match(v):
        raise ValueError(f"{v!r} is not a legal Kafka topic name (letters, digits, '.', '_', '-')")
    return v


def check_bootstrap_servers(v: str) -> str:
    """Comma-separated host:port pairs, or ValueError with an example."""
    for part in v.split(","):
        if not _HOSTPORT.match(part.strip()):
            raise ValueError(f"{part!r} is not host:port; expected e.g. 127.0.0.1:9092")
    return v


class Topics(_Frozen):
    """Kafka topic names used by the job."""

    events: str = "kpi-events"
    anomalies: str = "kpi-anomalies"
    metrics: str = "kpi-metrics"
    dlq: str = "kpi-dlq"
    features: str = "kpi-features"

    @field_validator("*")
    @classmethod
    def _topic_name(cls, v: str) -> str:
        return check_topic_name(v)


class LocalBroker(_Frozen):
    """The development broker started by ``netanomaly kafka start`` (127.0.0.1 only)."""

    port: int = Field(9092, ge=1024, le=65535)
    controller_port: int = Field(9093, ge=1024, le=65535)
    data_dir: Path = CACHE_DIR / "kafka-data"
    heap: str = "512m"
    start_timeout_s: float = Field(60.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser()

    @model_validator(mode="after")
    def _distinct_ports(self) -> LocalBroker:
        if self.port == self.controller_port:
            raise ValueError("port and controller_port must differ")
        return self


class KafkaConfig(_Frozen):
    """Where the job reads and writes."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: Topics = Topics()
    group_id: str = "netanomaly"
    startup_mode: Literal["earliest-offset", "latest-offset", "group-offsets"] = "earliest-offset"
    bounded: bool = Field(
        False,
        description="stop at the latest offsets seen at start (backfills, tests); all windows then close",
    )
    partitions: int = Field(1, ge=1, description="partitions of topics created by netanomaly")
    local: LocalBroker = LocalBroker()

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str) -> str:
        return check_bootstrap_servers(v)


class Bounds(_Frozen):
    """Physically possible range of a KPI; values outside go to the dead-letter topic."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


Stat = Literal["mean", "std", "min", "max"]


class FeaturesConfig(_Frozen):
    """The window feature spec, shared by the Flink job and the offline path."""

    kpis: tuple[str, ...] = ("latency_ms", "throughput_mbps", "packet_loss_pct", "jitter_ms")
    stats: tuple[Stat, ...] = ("mean", "std", "min", "max")
    include_count: bool = True
    window_seconds: int = Field(600, ge=1, le=86400 * 7)
    bounds: dict[str, Bounds] = Field(
        default_factory=lambda: {
            "latency_ms": Bounds(min=0.0),
            "throughput_mbps": Bounds(min=0.0),
            "packet_loss_pct": Bounds(min=0.0, max=100.0),
            "jitter_ms": Bounds(min=0.0),
        }
    )

    @field_validator("kpis")
    @classmethod
    def _kpi_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one KPI is needed")
        for k in v:
            if not _IDENT.match(k) or "__" in k:
                raise ValueError(f"KPI name {k!r} must be an identifier without '__' (letters, digits, _)")
            if k in ("timestamp", "device_id"):
                raise ValueError(f"KPI name {k!r} is reserved")
        if len(set(v)) != len(v):
            raise ValueError("KPI names must be unique")
        return v

    @field_validator("stats")
    @classmethod
    def _stats(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError("stats must be a non-empty list without repeats")
        return v

    @model_validator(mode="after")
    def _bounds_name_kpis(self) -> FeaturesConfig:
        unknown = sorted(set(self.bounds) - set(self.kpis))
        if unknown:
            raise ValueError(f"bounds given for {unknown}, which are not in kpis {list(self.kpis)}")
        return self


class StreamConfig(_Frozen):
    """Event time, watermarks and runtime knobs of the Flink job."""

    watermark_delay_seconds: int = Field(30, ge=0)
    idle_timeout_seconds: int = Field(30, ge=0, description="0 disables idleness detection")
    parallelism: int = Field(1, ge=1, le=64)
    checkpoint_interval_seconds: int = Field(10, ge=0, description="0 disables checkpointing")
    arrow_batch_size: int = Field(1000, ge=1, description="windows per Arrow batch into the scorer")
    bundle_time_ms: int = Field(200, ge=1, description="longest a window waits for its batch")
    python_executable: Path | None = Field(None, description="worker interpreter; default: this one")
    jars: tuple[Path, ...] = Field((), description="extra jars; the Kafka connector is added itself")
    job_name: str = "network-anomaly"
    emit_features: bool = Field(False, description="also write every window's features to topics.features")
    feature_store: Path | None = Field(
        None, description="folder of the Parquet feature store (partitioned by dt=YYYY-MM-DD); None: off"
    )

    @model_validator(mode="after")
    def _store_needs_checkpoints(self) -> StreamConfig:
        if self.feature_store is not None and self.checkpoint_interval_seconds == 0:
            raise ValueError(
                "feature_store needs checkpointing (files are committed on checkpoints); "
                "set checkpoint_interval_seconds > 0"
            )
        return self


class ModelConfig(_Frozen):
    """The exported model the job scores with: a model folder, or a registry (its production version)."""

    dir: Path = Path("models/current")
    top_k: int = Field(3, ge=1, le=20)
    torch_threads: int = Field(1, ge=1)
    reload_check_seconds: float = Field(
        10.0, gt=0, description="with a registry as dir: how often the job checks its production pointer"
    )
    drift_horizon_windows: int = Field(
        2000, ge=40, description="device windows per scoring worker behind the job's drift gauges"
    )
    backend: Literal["torchscript", "onnxruntime"] = Field(
        "torchscript", description="runtime of the scorer; onnxruntime needs the model's model.onnx"
    )


class TrainingConfig(_Frozen):
    """Detector training and threshold calibration."""

    detector: Literal["autoencoder", "lstm_autoencoder", "isolation_forest", "pca"] = "autoencoder"
    sequence_length: int = Field(6, ge=2, le=48, description="lstm_autoencoder: windows per sequence")
    n_estimators: int = Field(100, ge=1, description="isolation_forest: trees")
    max_samples: int = Field(256, ge=2, description="isolation_forest: samples per tree")
    pca_variance: float = Field(0.95, gt=0, lt=1, description="pca: explained variance kept")
    hidden: int = Field(32, ge=2)
    latent: int = Field(8, ge=1)
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    patience: int = Field(8, ge=1, description="early stopping: epochs without validation gain")
    threshold_quantile: float = Field(0.999, gt=0.5, lt=1)
    threshold_margin: float = Field(1.5, ge=1.0, description="threshold = quantile x margin")
    seed: int = 7


class WandbConfig(_Frozen):
    """Weights & Biases. ``mode=None`` means online if an API key is set, else offline."""

    mode: Literal["online", "offline", "disabled"] | None = None
    project: str = "network-anomaly"
    entity: str | None = None
    api_key: SecretStr | None = None

    def resolved_mode(self) -> str:
        """The mode to use: explicit, or online only when an API key is available."""
        if self.mode:
            return self.mode
        has_key = self.api_key is not None or bool(os.environ.get("WANDB_API_KEY"))
        return "online" if has_key else "offline"


class JobConfig(_Frozen):
    """Everything the pipeline needs; built once in main() and passed down."""

    kafka: KafkaConfig = KafkaConfig()
    features: FeaturesConfig = FeaturesConfig()
    stream: StreamConfig = StreamConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    wandb: WandbConfig = WandbConfig()

    @model_validator(mode="after")
    def _window_vs_watermark(self) -> JobConfig:
        if self.stream.watermark_delay_seconds >= self.features.window_seconds * 100:
            raise ValueError(
                "stream.watermark_delay_seconds is over 100 windows: windows would wait for hours; lower it"
            )
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a section", field=dotted)
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ConfigError(
            f"override {text!r} must look like section.key=value, e.g. kafka.bootstrap_servers=127.0.0.1:9092"
        )
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or not all(_IDENT.match(p) for p in key.split(".")):
        raise ConfigError(f"override key {key!r} is not a dotted name like stream.parallelism")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"value of {key} is not valid YAML: {e}", field=key) from e
    return key, value


def read_yaml_mapping(
    path: str | os.PathLike[str] | None,
    default_path: Path,
    error: type[ConfigError],
    sections: str,
) -> dict[str, Any]:
    """The YAML mapping at ``path`` (or at ``default_path`` when that exists), else ``{}``.

    An explicit path that does not exist, invalid YAML, or a document that is not a mapping raise
    ``error`` saying what to fix.
    """
    if path is None and not default_path.exists():
        return {}
    p = Path(path) if path is not None else default_path
    if not p.is_file():
        raise error(f"config file {p} not found; pass --config with an existing YAML file")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise error(f"{p} is not valid YAML: {e}") from e
    if loaded is not None and not isinstance(loaded, dict):
        raise error(f"{p} must hold a mapping of sections ({sections})")
    return loaded or {}


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> JobConfig:
    """Build the validated config from defaults, a YAML file and overrides.

    ``path=None`` reads ``conf/job.yaml`` when it exists in the working directory, else uses
    the defaults. An explicit path that does not exist is an error.
    """
    tree = read_yaml_mapping(path, DEFAULT_CONFIG_PATH, ConfigError, "kafka:, features:, ...")
    items: list[tuple[str, Any]]
    if overrides is None:
        items = []
    elif isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = [parse_override(o) for o in overrides]
    for key, value in items:
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return JobConfig.model_validate(tree)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or None
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?); remove it or check the spelling against conf/job.yaml"
            lines.append(f"  {loc or '(top level)'}: {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines), field=field) from None

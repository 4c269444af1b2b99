"""Export a trained :class:`ScoringModule` as TorchScript + metadata, and load it back safely.

A model directory holds ``model.pt`` (TorchScript) and ``metadata.json`` (format version, model
version, feature spec and order, scaler, threshold, score definition, training history and
config, training baseline for drift, sha256 of ``model.pt``, library versions).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import netanomaly
from model.autoencoder import ScoringModule
from model.exceptions import ModelError, ModelFileError
from model.features import FeatureSpec

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
SCORE_DEFINITION = (
    "score = mean over features f of (autoencoder(x_scaled)[f] - x_scaled[f])^2 with "
    "x_scaled = (x - scaler.min) / scaler.range (no clipping); is_anomaly = score > threshold; "
    "contribution[f] = squared error of f / sum of squared errors"
)
BASELINE_QUANTILES = {
    "p01": 0.01,
    "p05": 0.05,
    "p25": 0.25,
    "p50": 0.50,
    "p75": 0.75,
    "p95": 0.95,
    "p99": 0.99,
}
REQUIRED_KEYS = (
    "format_version",
    "model_version",
    "feature_spec",
    "feature_names",
    "scaler",
    "threshold",
    "sha256",
)
_RETRAIN_HINT = "re-export the model with `netanomaly train --features F --out DIR`"
# Tolerance between the eager module and the TorchScript file it was exported to.
_ATOL = 1e-6
_RTOL = 1e-6


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence TorchScript's deprecation warnings (TorchScript is the shipped format on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        yield


@dataclass(frozen=True)
class LoadedModel:
    """A verified model directory, ready to score."""

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]
    feature_names: list[str]
    threshold: float
    model_version: str
    spec: FeatureSpec


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def feature_baseline(x: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    """Per-feature distribution of training windows: count, mean, std, min, max, p01..p99."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names) or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty [N, {len(names)}] matrix, got shape {x.shape}")
    qs = np.quantile(x, list(BASELINE_QUANTILES.values()), axis=0)
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(names):
        col = x[:, j]
        stats = {
            "count": int(col.size),
            "mean": float(col.mean()),
            "std": float(col.std()),
            "min": float(col.min()),
            "max": float(col.max()),
        }
        stats.update({key: float(qs[i, j]) for i, key in enumerate(BASELINE_QUANTILES)})
        out[name] = stats
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _outputs_match(reference: torch.Tensor, other: torch.Tensor, what: str) -> None:
    try:
        torch.testing.assert_close(other, reference, atol=_ATOL, rtol=_RTOL, equal_nan=True)
    except AssertionError as e:
        raise ModelError(
            f"{what} does not reproduce the eager model's output; the model was not exported. "
            f"Check the module for TorchScript-incompatible code. Detail: {e}"
        ) from e


def export_model(
    module: ScoringModule,
    eager_check_input: np.ndarray,
    spec: FeatureSpec,
    threshold: float,
    out_dir: Path,
    *,
    training: dict[str, Any],
    baseline: dict[str, Any],
) -> Path:
    """Write ``out_dir/model.pt`` (TorchScript) and ``out_dir/metadata.json``; return ``out_dir``.

    The saved file is reloaded and its output compared with the eager module's on
    ``eager_check_input`` (raw features ``[N, F]``); a mismatch raises :class:`ModelError`.
    Files are written atomically (temp file + rename).
    """
    out_dir = Path(out_dir)
    names = spec.feature_names
    n_features = len(names)
    if int(module.data_min.numel()) != n_features:
        raise ModelError(
            f"the module has {int(module.data_min.numel())} input features but the spec has {n_features} "
            f"({names}); export the module with the spec it was trained on"
        )
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold <= 0:
        raise ModelError(f"threshold must be a positive finite number, got {threshold}")
    check = np.asarray(eager_check_input, dtype=np.float32)
    if check.ndim != 2 or check.shape[1] != n_features or check.shape[0] == 0:
        raise ModelError(f"eager_check_input must be a non-empty [N, {n_features}] array, got shape {check.shape}")

    module = module.eval()
    x = torch.from_numpy(np.ascontiguousarray(check))
    out_dir.mkdir(parents=True, exist_ok=True)
    with quiet_torchscript():
        try:
            scripted = torch.jit.script(module)
        except (RuntimeError, torch.jit.Error) as e:  # type: ignore[attr-defined]
            raise ModelError(f"the model cannot be compiled to TorchScript: {e}") from e
        with torch.inference_mode():
            eager_out = module(x)
            _outputs_match(eager_out, scripted(x), "the TorchScript module")
        fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{MODEL_FILE}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            torch.jit.save(scripted, str(tmp))
            reloaded = torch.jit.load(str(tmp), map_location="cpu")
            with torch.inference_mode():
                _outputs_match(eager_out, reloaded(x), "the saved TorchScript file")
            digest = sha256_file(tmp)
            os.replace(tmp, out_dir / MODEL_FILE)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_version": "ae-" + digest[:12],
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "feature_spec": spec.to_dict(),
        "feature_names": names,
        "scaler": {
            "min": [float(v) for v in module.data_min.tolist()],
            "range": [float(v) for v in module.data_range.tolist()],
        },
        "threshold": threshold,
        "score": SCORE_DEFINITION,
        "training": training,
        "baseline": baseline,
        "sha256": digest,
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "netanomaly": netanomaly.__version__,
        },
    }
    try:
        text = json.dumps(metadata, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model metadata is not JSON-serialisable with finite numbers: {e}") from e
    _atomic_write_bytes(out_dir / METADATA_FILE, (text + "\n").encode("utf-8"))
    return out_dir


def _read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    if not path.is_file():
        raise ModelFileError(f"{path} not found; the model directory is incomplete: {_RETRAIN_HINT}", path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not valid JSON ({e}); {_RETRAIN_HINT}", path) from e
    except OSError as e:
        raise ModelFileError(f"{path} cannot be read ({e}); check its permissions", path) from e
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path} must hold a JSON object; {_RETRAIN_HINT}", path)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelFileError(f"{path} lacks required keys {missing}; {_RETRAIN_HINT}", path)
    if meta["format_version"] != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format_version {meta['format_version']!r}; this netanomaly reads version "
            f"{FORMAT_VERSION}: {_RETRAIN_HINT}",
            path,
        )
    return meta


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no detail"


def _describe_difference(expected: list[str], actual: list[str]) -> str:
    missing = [n for n in expected if n not in actual]
    extra = [n for n in actual if n not in expected]
    parts = []
    if missing:
        parts.append(f"missing from the model: {missing}")
    if extra:
        parts.append(f"only in the model: {extra}")
    if not parts:
        parts.append(f"same names in another order: model {actual} vs expected {expected}")
    return "; ".join(parts)


def load_model(model_dir: Path, *, expected_feature_names: list[str] | None = None) -> LoadedModel:
    """Load and verify a model directory (metadata, sha256, TorchScript, feature order, smoke test).

    Every problem raises :class:`ModelFileError` naming the file and what to do.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(
            f"model directory {model_dir} not found; train one with `netanomaly train --features F --out DIR`",
            model_dir,
        )
    meta = _read_metadata(model_dir)
    meta_path = model_dir / METADATA_FILE
    try:
        spec = FeatureSpec.from_dict(meta["feature_spec"])
        names = [str(n) for n in meta["feature_names"]]
        threshold = float(meta["threshold"])
        scaler_min = [float(v) for v in meta["scaler"]["min"]]
        scaler_range = [float(v) for v in meta["scaler"]["range"]]
        model_version = str(meta["model_version"])
        expected_sha = str(meta["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{meta_path} has a malformed entry ({e!r}); {_RETRAIN_HINT}", meta_path) from e
    if spec.feature_names != names:
        raise ModelFileError(
            f"{meta_path}: feature_names disagree with feature_spec "
            f"({_describe_difference(spec.feature_names, names)}); the file was edited: {_RETRAIN_HINT}",
            meta_path,
        )
    if len(scaler_min) != len(names) or len(scaler_range) != len(names):
        raise ModelFileError(
            f"{meta_path}: scaler length does not match {len(names)} features; {_RETRAIN_HINT}", meta_path
        )
    if not np.isfinite(threshold) or threshold <= 0:
        raise ModelFileError(f"{meta_path}: threshold {threshold} is not a positive number; {_RETRAIN_HINT}", meta_path)

    model_path = model_dir / MODEL_FILE
    if not model_path.is_file():
        raise ModelFileError(f"{model_path} not found; the model directory is incomplete: {_RETRAIN_HINT}", model_path)
    actual_sha = sha256_file(model_path)
    if actual_sha != expected_sha:
        raise ModelFileError(
            f"{model_path} does not match {METADATA_FILE} (sha256 {actual_sha[:16]}... vs expected "
            f"{expected_sha[:16]}...); the file is corrupted or was replaced: {_RETRAIN_HINT}",
            model_path,
        )
    with quiet_torchscript():
        try:
            module = torch.jit.load(str(model_path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as e:
            raise ModelFileError(
                f"{model_path} cannot be loaded as TorchScript ({type(e).__name__}: {_first_line(e)}); {_RETRAIN_HINT}",
                model_path,
            ) from e
    module.eval()

    if expected_feature_names is not None and list(expected_feature_names) != names:
        raise ModelFileError(
            f"the model in {model_dir} was trained on another feature spec: "
            f"{_describe_difference(list(expected_feature_names), names)}. Retrain it with the current "
            f"features config, or point the job at a model made for it",
            model_dir,
        )

    probe = torch.tensor(
        [scaler_min, [m + r for m, r in zip(scaler_min, scaler_range, strict=True)]], dtype=torch.float32
    )
    try:
        with torch.inference_mode():
            out = module(probe)
    except RuntimeError as e:
        raise ModelFileError(f"{model_path} fails a test forward pass ({e}); {_RETRAIN_HINT}", model_path) from e
    if (
        not isinstance(out, torch.Tensor)
        or tuple(out.shape) != tuple(probe.shape)
        or not bool(torch.isfinite(out).all())
    ):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFileError(
            f"{model_path} returns {shape} for input {tuple(probe.shape)} (expected the same shape, finite); "
            f"{_RETRAIN_HINT}",
            model_path,
        )
    return LoadedModel(
        module=module,
        metadata=meta,
        feature_names=names,
        threshold=threshold,
        model_version=model_version,
        spec=spec,
    )

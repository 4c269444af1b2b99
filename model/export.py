"""Export a detector's scoring module as TorchScript (+ ONNX) + metadata, and load it back safely.

A model directory holds ``model.pt`` (TorchScript), usually ``model.onnx`` (the same module for
ONNX Runtime) and ``metadata.json`` (format version, model version, detector, sequence length,
input width, feature spec and order, scaler, threshold, score definition, training history and
config, training baseline for drift, sha256 of ``model.pt`` and of ``model.onnx``, library
versions). The module contract is described in :mod:`model.detectors`.

ONNX export uses torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it needs only the ``onnx`` package (the torch.export-based one also needs onnxscript), it
exports all four detectors' modules here (the tree walk of the isolation forest is unrolled to
its fixed depth), and every export is checked against the TorchScript output with ONNX Runtime.
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
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

import netanomaly
from model.exceptions import ModelError, ModelFileError
from model.features import FeatureSpec

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
ONNX_OPSET = 17
BACKENDS = ("torchscript", "onnxruntime")
DEFAULT_DETECTOR = "autoencoder"
# model_version = prefix + "-" + first 12 hex digits of model.pt's sha256.
MODEL_VERSION_PREFIX = {"autoencoder": "ae", "lstm_autoencoder": "lstm", "isolation_forest": "if", "pca": "pca"}
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
# Tolerance between ONNX Runtime and TorchScript on the same input.
ONNX_ATOL = 1e-5
ONNX_RTOL = 1e-5


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence TorchScript's deprecation warnings (TorchScript is the shipped format on purpose)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        yield


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """Silence the legacy ONNX exporter's deprecation notice and tracer/LSTM batch-size warnings.

    The traced graph is checked with ONNX Runtime on several batch sizes instead.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*batch_size other than 1.*LSTM", category=UserWarning)
        yield


@dataclass(frozen=True)
class LoadedModel:
    """A verified model directory, ready to score.

    ``input_dim`` is the width ``D`` of the module's input (None: ``len(feature_names) *
    sequence_length``). ``onnx_path``/``onnx_sha256`` are set when the directory has an ONNX
    export; its hash is checked by :func:`load_model` with ``backend="onnxruntime"`` and again by
    the ONNX Runtime scorer.
    """

    module: torch.jit.ScriptModule
    metadata: dict[str, Any]
    feature_names: list[str]
    threshold: float
    model_version: str
    spec: FeatureSpec
    detector: str = DEFAULT_DETECTOR
    sequence_length: int = 1
    input_dim: int | None = None
    onnx_path: Path | None = None
    onnx_sha256: str | None = None
    model_dir: Path | None = None

    @property
    def n_inputs(self) -> int:
        """Width ``D`` of the model input."""
        return self.input_dim if self.input_dim is not None else len(self.feature_names) * self.sequence_length


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


def import_onnxruntime() -> ModuleType:
    """``onnxruntime``, imported on first use; a clear :class:`ModelError` if it is not installed."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ModelError(
            "the onnxruntime backend needs the onnxruntime package, which is not installed: "
            "`pip install onnxruntime==1.32.0` (pinned in setup.py), or set model.backend: torchscript"
        ) from e
    return onnxruntime


def onnxruntime_errors(ort: ModuleType) -> tuple[type[BaseException], ...]:
    """Exception types ONNX Runtime raises for bad models or inputs (they derive from Exception only)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented")
    found = tuple(getattr(state, n) for n in (*names, "RuntimeException") if hasattr(state, n))
    return (*found, RuntimeError, ValueError)


def onnx_session(model: bytes, threads: int | None = 1) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` of serialized ``model``; ``threads``: intra-op (None: ORT's default)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _onnx_matches(session: Any, x: np.ndarray, reference: np.ndarray, what: str) -> None:
    """Compare ONNX Runtime's output with ``reference`` on the whole batch, one row and a 3-row slice."""
    for rows in (slice(None), slice(0, 1), slice(1, 4)):
        xi = np.ascontiguousarray(x[rows])
        if xi.shape[0] == 0:
            continue
        got = session.run(None, {"x": xi})[0]
        try:
            np.testing.assert_allclose(got, reference[rows], atol=ONNX_ATOL, rtol=ONNX_RTOL, equal_nan=True)
        except AssertionError as e:
            raise ModelError(
                f"{what} does not reproduce the TorchScript output on {xi.shape[0]} rows (tolerance "
                f"{ONNX_ATOL:g}); the model was not exported. Detail: {e}"
            ) from e


def _write_onnx(module: nn.Module, x: torch.Tensor, path: Path, reference: np.ndarray, opset: int) -> str:
    """Export ``module`` to ``path`` (ONNX, dynamic batch), check it with ONNX Runtime; return its sha256."""
    ort = import_onnxruntime()
    try:
        with quiet_onnx_export(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module,
                (x,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["errors"],
                dynamic_axes={"x": {0: "batch"}, "errors": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
            )
    except (RuntimeError, ValueError, TypeError, torch.onnx.OnnxExporterError) as e:
        raise ModelError(f"the model cannot be exported to ONNX (opset {opset}): {_first_line(e)}") from e
    data = path.read_bytes()
    try:
        session = onnx_session(data, threads=1)
    except onnxruntime_errors(ort) as e:
        raise ModelError(f"ONNX Runtime cannot load the exported model: {_first_line(e)}") from e
    _onnx_matches(session, x.numpy(), reference, "the ONNX export")
    return hashlib.sha256(data).hexdigest()


def export_onnx(
    module: nn.Module,
    example_input: np.ndarray,
    path: Path,
    *,
    reference: np.ndarray | None = None,
    opset: int = ONNX_OPSET,
) -> dict[str, Any]:
    """Export a scoring module to ONNX at ``path`` (input ``x`` [batch, D], output ``errors`` [batch, F]).

    The file is checked with ONNX Runtime on ``example_input`` against ``reference`` (default: the
    module's own output) to 1e-5, also on 1- and 3-row batches; a mismatch raises
    :class:`ModelError` and leaves no file. Returns the metadata entry
    ``{"file", "sha256", "opset"}``.
    """
    path = Path(path)
    module = module.eval()
    x = torch.from_numpy(np.ascontiguousarray(example_input, dtype=np.float32))
    if reference is None:
        with torch.inference_mode():
            reference = module(x).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        digest = _write_onnx(module, x, tmp, np.asarray(reference), opset)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return {"file": path.name, "sha256": digest, "opset": opset}


def export_model(
    module: nn.Module,
    eager_check_input: np.ndarray,
    spec: FeatureSpec,
    threshold: float,
    out_dir: Path,
    *,
    training: dict[str, Any],
    baseline: dict[str, Any],
    detector: str = DEFAULT_DETECTOR,
    sequence_length: int = 1,
    score_definition: str | None = None,
    onnx: bool = True,
) -> Path:
    """Write ``out_dir/model.pt`` (TorchScript), ``model.onnx`` (if ``onnx``) and ``metadata.json``.

    ``module`` follows the scoring-module contract (buffers ``data_min``/``data_range`` of length
    F, input ``[N, sequence_length * F]``, non-negative output ``[N, F]``). The saved TorchScript
    file is reloaded and compared with the eager module on ``eager_check_input`` (raw inputs
    ``[N, D]``) to 1e-6, and the ONNX file with the TorchScript output to 1e-5; a mismatch raises
    :class:`ModelError`. Files are written atomically (temp file + rename); returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    names = spec.feature_names
    n_features = len(names)
    data_min, data_range = getattr(module, "data_min", None), getattr(module, "data_range", None)
    if not isinstance(data_min, torch.Tensor) or not isinstance(data_range, torch.Tensor):
        raise ModelError("the module carries no scaler (buffers data_min and data_range); see model.detectors")
    if int(data_min.numel()) != n_features:
        raise ModelError(
            f"the module has {int(data_min.numel())} input features but the spec has {n_features} "
            f"({names}); export the module with the spec it was trained on"
        )
    sequence_length = int(sequence_length)
    if sequence_length < 1:
        raise ModelError(f"sequence_length must be at least 1, got {sequence_length}")
    input_dim = sequence_length * n_features
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold <= 0:
        raise ModelError(f"threshold must be a positive finite number, got {threshold}")
    check = np.asarray(eager_check_input, dtype=np.float32)
    if check.ndim != 2 or check.shape[1] != input_dim or check.shape[0] == 0:
        raise ModelError(f"eager_check_input must be a non-empty [N, {input_dim}] array, got shape {check.shape}")

    module = module.eval()
    x = torch.from_numpy(np.ascontiguousarray(check))
    with torch.inference_mode():
        eager_out = module(x)
    if not isinstance(eager_out, torch.Tensor) or tuple(eager_out.shape) != (check.shape[0], n_features):
        shape = tuple(eager_out.shape) if isinstance(eager_out, torch.Tensor) else type(eager_out).__name__
        raise ModelError(f"the module returns {shape} for input {check.shape}; expected [N, {n_features}]")
    if bool((eager_out < 0).any()):
        raise ModelError("the module returns negative error terms; the scoring contract needs them non-negative")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmps: list[Path] = []
    try:
        with quiet_torchscript():
            try:
                scripted = torch.jit.script(module)
            except (RuntimeError, torch.jit.Error) as e:  # type: ignore[attr-defined]
                raise ModelError(f"the model cannot be compiled to TorchScript: {e}") from e
            with torch.inference_mode():
                _outputs_match(eager_out, scripted(x), "the TorchScript module")
            tmp = _temp_path(out_dir, MODEL_FILE, tmps)
            torch.jit.save(scripted, str(tmp))
            reloaded = torch.jit.load(str(tmp), map_location="cpu")
            with torch.inference_mode():
                script_out = reloaded(x)
            _outputs_match(eager_out, script_out, "the saved TorchScript file")
            digest = sha256_file(tmp)
        onnx_entry: dict[str, Any] | None = None
        if onnx:
            onnx_tmp = _temp_path(out_dir, ONNX_FILE, tmps)
            onnx_digest = _write_onnx(module, x, onnx_tmp, script_out.numpy(), ONNX_OPSET)
            onnx_entry = {"file": ONNX_FILE, "sha256": onnx_digest, "opset": ONNX_OPSET}
            os.replace(onnx_tmp, out_dir / ONNX_FILE)
        else:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / ONNX_FILE).unlink()  # a stale export must not pass for this model's
        os.replace(tmp, out_dir / MODEL_FILE)
    finally:
        for t in tmps:
            with contextlib.suppress(FileNotFoundError):
                t.unlink()

    prefix = MODEL_VERSION_PREFIX.get(detector, detector)
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_version": f"{prefix}-{digest[:12]}",
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "detector": detector,
        "sequence_length": sequence_length,
        "input_dim": input_dim,
        "feature_spec": spec.to_dict(),
        "feature_names": names,
        "scaler": {
            "min": [float(v) for v in data_min.tolist()],
            "range": [float(v) for v in data_range.tolist()],
        },
        "threshold": threshold,
        "score": score_definition or SCORE_DEFINITION,
        "training": training,
        "baseline": baseline,
        "sha256": digest,
        "versions": _versions(onnx),
    }
    if onnx_entry is not None:
        metadata["onnx"] = onnx_entry
    try:
        text = json.dumps(metadata, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model metadata is not JSON-serialisable with finite numbers: {e}") from e
    _atomic_write_bytes(out_dir / METADATA_FILE, (text + "\n").encode("utf-8"))
    return out_dir


def _temp_path(out_dir: Path, name: str, registry: list[Path]) -> Path:
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    registry.append(Path(tmp_name))
    return registry[-1]


def _versions(onnx: bool) -> dict[str, str]:
    versions = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "netanomaly": netanomaly.__version__,
    }
    if onnx:
        versions["onnxruntime"] = import_onnxruntime().__version__
    return versions


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


def _sequence_fields(meta: dict[str, Any], n_features: int, meta_path: Path) -> tuple[str, int, int]:
    """(detector, sequence_length, input_dim) with the defaults of models exported before they existed."""
    try:
        detector = str(meta.get("detector", DEFAULT_DETECTOR))
        sequence_length = int(meta.get("sequence_length", 1))
        input_dim = int(meta.get("input_dim", sequence_length * n_features))
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{meta_path} has a malformed entry ({e!r}); {_RETRAIN_HINT}", meta_path) from e
    if sequence_length < 1 or input_dim != sequence_length * n_features:
        raise ModelFileError(
            f"{meta_path}: input_dim {input_dim} is not sequence_length {sequence_length} x {n_features} features; "
            f"{_RETRAIN_HINT}",
            meta_path,
        )
    return detector, sequence_length, input_dim


def _onnx_entry(meta: dict[str, Any], model_dir: Path, meta_path: Path) -> tuple[Path | None, str | None]:
    """(path, sha256) of the ONNX export named in the metadata, or (None, None) without one."""
    entry = meta.get("onnx")
    if entry is None:
        return None, None
    try:
        name, sha = str(entry["file"]), str(entry["sha256"])
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{meta_path} has a malformed onnx entry ({e!r}); {_RETRAIN_HINT}", meta_path) from e
    if Path(name).name != name or name in ("", ".", ".."):
        raise ModelFileError(f"{meta_path}: onnx file {name!r} must be a file name in the model directory", meta_path)
    return model_dir / name, sha


def read_onnx_verified(path: Path | None, expected_sha: str | None, model_dir: Path | None) -> bytes:
    """The bytes of a model's ONNX file after checking its sha256; :class:`ModelFileError` otherwise."""
    if path is None or expected_sha is None:
        raise ModelFileError(
            f"the model in {model_dir or 'this directory'} has no ONNX export ({ONNX_FILE}) in its metadata, so it "
            f"cannot run on ONNX Runtime: re-export it with `netanomaly train --features F --out DIR`, or set "
            f"model.backend: torchscript",
            model_dir,
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ModelFileError(
            f"{path} not found; the backend onnxruntime needs it: re-export the model with "
            f"`netanomaly train --features F --out DIR`, or set model.backend: torchscript",
            path,
        ) from e
    except OSError as e:
        raise ModelFileError(f"{path} cannot be read ({e}); check its permissions", path) from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha:
        raise ModelFileError(
            f"{path} does not match {METADATA_FILE} (sha256 {actual[:16]}... vs expected {expected_sha[:16]}...); "
            f"the file is corrupted or was replaced: {_RETRAIN_HINT}",
            path,
        )
    return data


def load_model(
    model_dir: Path, *, expected_feature_names: list[str] | None = None, backend: str = "torchscript"
) -> LoadedModel:
    """Load and verify a model directory (metadata, sha256, TorchScript, feature order, smoke test).

    With ``backend="onnxruntime"`` the ONNX export is verified too (present, sha256, loads in ONNX
    Runtime, agrees with TorchScript on a probe). Metadata written before detectors existed reads
    as detector ``autoencoder`` with sequence length 1. Every problem raises
    :class:`ModelFileError` naming the file and what to do.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
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
    detector, sequence_length, input_dim = _sequence_fields(meta, len(names), meta_path)
    onnx_path, onnx_sha = _onnx_entry(meta, model_dir, meta_path)

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

    window_probe = [scaler_min, [m + r for m, r in zip(scaler_min, scaler_range, strict=True)]]
    probe = torch.tensor(window_probe, dtype=torch.float32).repeat(1, sequence_length)
    try:
        with torch.inference_mode():
            out = module(probe)
    except RuntimeError as e:
        raise ModelFileError(f"{model_path} fails a test forward pass ({e}); {_RETRAIN_HINT}", model_path) from e
    expected_shape = (probe.shape[0], len(names))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected_shape or not bool(torch.isfinite(out).all()):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFileError(
            f"{model_path} returns {shape} for input {tuple(probe.shape)} (expected {expected_shape}, finite); "
            f"{_RETRAIN_HINT}",
            model_path,
        )
    if backend == "onnxruntime":
        _check_onnx(read_onnx_verified(onnx_path, onnx_sha, model_dir), probe.numpy(), out.numpy(), onnx_path)
    return LoadedModel(
        module=module,
        metadata=meta,
        feature_names=names,
        threshold=threshold,
        model_version=model_version,
        spec=spec,
        detector=detector,
        sequence_length=sequence_length,
        input_dim=input_dim,
        onnx_path=onnx_path,
        onnx_sha256=onnx_sha,
        model_dir=model_dir,
    )


def _check_onnx(data: bytes, probe: np.ndarray, expected: np.ndarray, path: Path | None) -> None:
    """ONNX Runtime loads ``data`` and agrees with the TorchScript output on the probe."""
    ort = import_onnxruntime()
    try:
        got = onnx_session(data, threads=1).run(None, {"x": np.ascontiguousarray(probe, dtype=np.float32)})[0]
    except onnxruntime_errors(ort) as e:
        raise ModelFileError(
            f"{path} cannot be run by ONNX Runtime ({type(e).__name__}: {_first_line(e)}); {_RETRAIN_HINT}", path
        ) from e
    if got.shape != expected.shape or not np.allclose(got, expected, atol=ONNX_ATOL, rtol=ONNX_RTOL, equal_nan=True):
        raise ModelFileError(
            f"{path} disagrees with {MODEL_FILE} on a test input; the files do not belong together: {_RETRAIN_HINT}",
            path,
        )

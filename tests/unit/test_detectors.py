"""Unit tests of model.detectors: the shared contract of every detector, export to TorchScript/ONNX, scoring."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from model.detectors import (
    EXPORTABLE_DETECTORS,
    Detector,
    IsolationForestDetector,
    build_sequences,
    make_detector,
)
from model.exceptions import ModelError, ModelFileError
from model.export import export_model, export_onnx, feature_baseline, load_model
from model.features import FeatureSpec, feature_matrix
from model.scoring import Scorer, score_features
from model.train import train_detector
from netanomaly.config import TrainingConfig

SPEC = FeatureSpec(kpis=("latency_ms", "throughput_mbps", "packet_loss_pct", "jitter_ms"))
NAMES = SPEC.feature_names
F = len(NAMES)
L = 3
# Small and fast: a few hundred windows, few epochs, small forest.
CFG = TrainingConfig(
    epochs=25,
    batch_size=64,
    learning_rate=1e-2,
    patience=4,
    hidden=16,
    latent=4,
    sequence_length=L,
    n_estimators=50,
    max_samples=128,
    seed=3,
)
_KPI_SCALE = {
    "latency_ms": (20.0, 3.0),
    "throughput_mbps": (500.0, 40.0),
    "packet_loss_pct": (0.5, 0.1),
    "jitter_ms": (3.0, 0.5),
}
# The injected incident: latency and jitter (all their statistics) far above normal.
SHIFTED = [NAMES.index(f"{k}__{s}") for k in ("latency_ms", "jitter_ms") for s in SPEC.stats]


def make_frame(n_per_device: int, seed: int, n_devices: int = 4) -> pd.DataFrame:
    """Normal windows of ``n_devices`` devices, interleaved in time order (as the features step writes them).

    KPI levels follow three latent factors that drift slowly (AR(1)) per device, so windows are
    correlated across features and in time.
    """
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(3, len(SPEC.kpis)))
    z = np.zeros((n_per_device, n_devices, 3))
    z[0] = rng.normal(size=(n_devices, 3))
    for t in range(1, n_per_device):
        z[t] = 0.8 * z[t - 1] + 0.6 * rng.normal(size=(n_devices, 3))
    z = z.reshape(-1, 3)
    n = len(z)
    cols: dict[str, np.ndarray] = {"event_count": 60.0 + rng.normal(0.0, 2.0, n).round()}
    for i, (kpi, (mean, sd)) in enumerate(_KPI_SCALE.items()):
        level = mean + sd * (z @ mixing[:, i]) / 2.0
        spread = sd * 0.3 * np.exp(0.2 * z[:, 0])
        cols[f"{kpi}__mean"] = level + rng.normal(0.0, 0.05 * sd, n)
        cols[f"{kpi}__std"] = spread + rng.normal(0.0, 0.02 * sd, n)
        cols[f"{kpi}__min"] = level - 2.0 * spread + rng.normal(0.0, 0.05 * sd, n)
        cols[f"{kpi}__max"] = level + 2.0 * spread + rng.normal(0.0, 0.05 * sd, n)
    df = pd.DataFrame(cols)[NAMES]
    start = pd.Timestamp("2026-01-05T00:00:00Z") + pd.to_timedelta((np.arange(n) // n_devices) * 600, unit="s")
    df.insert(0, "window_end", start + pd.Timedelta(seconds=600))
    df.insert(0, "window_start", start)
    df.insert(0, "device_id", [f"dev-{i % n_devices}" for i in range(n)])
    return df


@pytest.fixture(scope="module")
def train_df() -> pd.DataFrame:
    return make_frame(100, seed=1)


@pytest.fixture(scope="module")
def test_set() -> tuple[pd.DataFrame, np.ndarray]:
    """Fresh normal windows, 10 % of them with latency and jitter statistics shifted by 8 standard deviations.

    (IsolationForest needs the shift in several of the 17 features: with latency alone its AUROC here is ~0.9.)
    """
    df = make_frame(100, seed=2)
    x = feature_matrix(df, NAMES)
    labels = np.zeros(len(df), dtype=bool)
    labels[np.random.default_rng(5).choice(len(df), size=len(df) // 10, replace=False)] = True
    shift = 8.0 * x[:, SHIFTED].std(axis=0)
    df.loc[labels, [NAMES[j] for j in SHIFTED]] += shift
    return df, labels


def _fit(name: str, df: pd.DataFrame, cfg: TrainingConfig = CFG) -> Detector:
    return make_detector(cfg, F, name=name).fit(feature_matrix(df, NAMES), devices=df["device_id"].to_numpy())


@pytest.fixture(scope="module")
def fitted(train_df: pd.DataFrame) -> dict[str, Detector]:
    return {name: _fit(name, train_df) for name in (*EXPORTABLE_DETECTORS, "random")}


@pytest.fixture(scope="module")
def exported(fitted: dict[str, Detector], train_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """Every exportable detector exported (TorchScript + ONNX) with a calibrated threshold."""
    x = feature_matrix(train_df, NAMES)
    devices = train_df["device_id"].to_numpy()
    out: dict[str, Path] = {}
    for name in EXPORTABLE_DETECTORS:
        det = fitted[name]
        threshold = float(np.quantile(det.validation_scores(), CFG.threshold_quantile) * CFG.threshold_margin)
        out[name] = export_model(
            det.scoring_module(),
            det.inputs(x, devices),
            SPEC,
            threshold,
            tmp_path_factory.mktemp(name) / "model",
            training={},
            baseline=feature_baseline(x, NAMES),
            detector=det.name,
            sequence_length=det.sequence_length,
            score_definition=det.score_definition,
        )
    return out


# --- build_sequences ----------------------------------------------------------------------------


def test_build_sequences_hand_computed() -> None:
    # Two devices interleaved; rows in time order within each device.
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60]], dtype=np.float32)
    devices = np.array(["a", "b", "a", "a", "b", "a"])
    # a: rows 0, 2, 3, 5 -> windows 1, 3, 4, 6; b: rows 1, 4 -> windows 2, 5.
    expected = np.array(
        [
            [1, 10, 1, 10, 1, 10],  # a's first window, padded with itself
            [2, 20, 2, 20, 2, 20],  # b's first window
            [1, 10, 1, 10, 3, 30],  # a: 1 (pad), 1, 3
            [1, 10, 3, 30, 4, 40],  # a: 1, 3, 4
            [2, 20, 2, 20, 5, 50],  # b: 2 (pad), 2, 5
            [3, 30, 4, 40, 6, 60],  # a: 3, 4, 6
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(build_sequences(x, devices, 3), expected)
    np.testing.assert_array_equal(build_sequences(x, devices, 1), x)
    one = build_sequences(x[:3], None, 2)  # no devices: one timeline
    np.testing.assert_array_equal(one, [[1, 10, 1, 10], [1, 10, 2, 20], [2, 20, 3, 30]])
    assert build_sequences(np.zeros((0, 2)), np.array([]), 3).shape == (0, 6)
    with pytest.raises(ValueError, match="devices must have shape"):
        build_sequences(x, devices[:2], 3)


# --- the shared contract, for every exportable detector ----------------------------------------


@pytest.mark.parametrize("name", EXPORTABLE_DETECTORS)
def test_detects_shifted_anomalies(fitted: dict[str, Detector], test_set, name: str) -> None:
    df, labels = test_set
    scores = fitted[name].score(feature_matrix(df, NAMES), devices=df["device_id"].to_numpy())
    assert scores.shape == (len(df),) and scores.dtype == np.float64
    assert roc_auc_score(labels, scores) > 0.9


def test_random_baseline_is_chance_and_not_exportable(fitted: dict[str, Detector], test_set) -> None:
    df, labels = test_set
    det = fitted["random"]
    scores = det.score(feature_matrix(df, NAMES))
    assert 0.35 < roc_auc_score(labels, scores) < 0.65
    np.testing.assert_array_equal(scores, det.score(feature_matrix(df, NAMES)))  # seeded
    assert det.errors(feature_matrix(df, NAMES)).shape == (len(df), F)
    assert det.validation_scores().shape == (len(det.val_index),)
    with pytest.raises(ModelError, match="cannot be exported"):
        det.scoring_module()


@pytest.mark.parametrize("name", EXPORTABLE_DETECTORS)
def test_deterministic_for_a_seed(fitted: dict[str, Detector], train_df: pd.DataFrame, test_set, name: str) -> None:
    df, _ = test_set
    x, devices = feature_matrix(df, NAMES), df["device_id"].to_numpy()
    again = _fit(name, train_df)
    np.testing.assert_array_equal(again.score(x, devices=devices), fitted[name].score(x, devices=devices))
    np.testing.assert_array_equal(again.validation_scores(), fitted[name].validation_scores())
    assert again.history == fitted[name].history
    other = _fit(name, train_df, CFG.model_copy(update={"seed": 4}))
    assert not np.array_equal(other.score(x, devices=devices), fitted[name].score(x, devices=devices))


@pytest.mark.parametrize("name", EXPORTABLE_DETECTORS)
def test_terms_are_non_negative_and_average_to_the_score(fitted: dict[str, Detector], test_set, name: str) -> None:
    df, _ = test_set
    det = fitted[name]
    x, devices = feature_matrix(df, NAMES), df["device_id"].to_numpy()
    err = det.errors(x, devices=devices)
    assert err.shape == (len(df), F) and err.dtype == np.float32
    assert np.isfinite(err).all() and (err >= 0).all()
    np.testing.assert_allclose(det.score(x, devices=devices), err.astype(np.float64).mean(axis=1), rtol=1e-12)
    assert det.input_dim == det.sequence_length * F == (L * F if name == "lstm_autoencoder" else F)
    if name in ("autoencoder", "lstm_autoencoder"):
        assert 0 < det.history.best_epoch <= len(det.history.val_loss) <= CFG.epochs
    else:
        assert det.history.train_loss == () and det.history.best_epoch == 0


@pytest.mark.parametrize("name", EXPORTABLE_DETECTORS)
def test_export_load_score_round_trip(
    fitted: dict[str, Detector], exported: dict[str, Path], test_set, name: str
) -> None:
    df, _ = test_set
    det = fitted[name]
    x, devices = feature_matrix(df, NAMES), df["device_id"].to_numpy()
    inputs = det.inputs(x, devices)
    loaded = load_model(exported[name], expected_feature_names=NAMES, backend="onnxruntime")
    assert (loaded.detector, loaded.sequence_length, loaded.n_inputs) == (name, det.sequence_length, det.input_dim)
    ts = Scorer(loaded, torch_threads=None)
    ts_scores = ts.score(inputs)
    np.testing.assert_allclose(ts_scores.score, det.score(x, devices=devices), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ts_scores.contributions.sum(axis=1), 1.0, atol=1e-9)
    assert (ts_scores.contributions >= 0).all()
    ort = Scorer(loaded, torch_threads=1, chunk_rows=97, backend="onnxruntime")
    np.testing.assert_allclose(ort.errors(inputs), ts.errors(inputs), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ort.score(inputs).score, ts_scores.score, atol=1e-5, rtol=1e-5)
    # Offline scoring of the features frame builds the sequences itself, on either backend.
    for backend in ("torchscript", "onnxruntime"):
        offline = score_features(df, exported[name], top_k=2, backend=backend)
        np.testing.assert_allclose(offline["score"], ts_scores.score, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", EXPORTABLE_DETECTORS)
def test_metadata_describes_detector_and_onnx(exported: dict[str, Path], name: str) -> None:
    meta = json.loads((exported[name] / "metadata.json").read_text())
    length = L if name == "lstm_autoencoder" else 1
    assert (meta["detector"], meta["sequence_length"], meta["input_dim"]) == (name, length, length * F)
    assert meta["onnx"]["file"] == "model.onnx" and meta["onnx"]["opset"] >= 17
    assert meta["onnx"]["sha256"] == hashlib.sha256((exported[name] / "model.onnx").read_bytes()).hexdigest()
    assert len(meta["scaler"]["min"]) == F and meta["score"]


def test_sequence_scorer_wants_sequences(exported: dict[str, Path]) -> None:
    scorer = Scorer(load_model(exported["lstm_autoencoder"]), torch_threads=None)
    with pytest.raises(ValueError, match=rf"sequences of shape \[N, {L * F}\] \({L} windows"):
        scorer.score(np.zeros((2, F), dtype=np.float32))


# --- isolation forest ---------------------------------------------------------------------------


def test_isolation_forest_module_equals_sklearn(fitted: dict[str, Detector], test_set) -> None:
    det = fitted["isolation_forest"]
    assert isinstance(det, IsolationForestDetector)
    df, _ = test_set
    x = feature_matrix(df, NAMES)
    far = np.stack([det.data_min + 3.0 * det.data_range, det.data_min - 2.0 * det.data_range]).astype(np.float32)
    x = np.concatenate([x, far])
    xs = ((x - det.data_min) / det.data_range).astype(np.float32)
    expected = -det.forest.score_samples(xs)
    np.testing.assert_allclose(det.score(x), expected, rtol=0, atol=1e-6)
    with torch.inference_mode():
        scripted = torch.jit.script(det.scoring_module())(torch.from_numpy(x)).double().mean(dim=1).numpy()
    np.testing.assert_allclose(scripted, expected, rtol=0, atol=1e-6)
    # Contributions (weighted split shares along the paths) point at the shifted features.
    labels = test_set[1]
    share = det.errors(feature_matrix(df, NAMES)).astype(np.float64)
    share = share[:, SHIFTED].sum(axis=1) / share.sum(axis=1)
    assert share[labels].mean() > share[~labels].mean() + 0.1
    assert np.isin(det.errors(feature_matrix(df, NAMES))[labels].argmax(axis=1), SHIFTED).mean() > 0.8


# --- end to end through train_detector ----------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm_autoencoder", "isolation_forest"])
def test_train_detector_exports_what_it_fitted(train_df: pd.DataFrame, tmp_path: Path, name: str) -> None:
    cfg = CFG.model_copy(update={"detector": name})
    shuffled = train_df.sample(frac=1.0, random_state=0)  # train_detector sorts by device and time itself
    result = train_detector(shuffled, SPEC, cfg, progress=False, out_dir=tmp_path / "m")
    meta = json.loads((result.model_dir / "metadata.json").read_text())
    length = L if name == "lstm_autoencoder" else 1
    assert (meta["detector"], meta["sequence_length"], meta["input_dim"]) == (name, length, length * F)
    assert result.detector == name and meta["training"]["detector"] == name
    assert result.n_train + result.n_val == len(train_df) and (result.model_dir / "model.onnx").is_file()
    assert meta["training"]["epochs"] == len(result.train_loss)
    if name == "isolation_forest":
        assert result.train_loss == result.val_loss == () and result.best_epoch == 0
        assert result.model_version.startswith("if-")
    # Same detector fitted by hand on the same windows (sorted by device and time for sequences).
    ordered = shuffled.sort_values(["device_id", "window_start"], kind="stable") if length > 1 else shuffled
    det = _fit(name, ordered, cfg)
    expected = np.quantile(det.validation_scores(), cfg.threshold_quantile) * cfg.threshold_margin
    assert result.threshold == pytest.approx(expected, rel=1e-9)
    offline = score_features(train_df, result.model_dir)
    np.testing.assert_allclose(
        offline["score"],
        det.score(feature_matrix(train_df, NAMES), devices=train_df["device_id"].to_numpy()),
        rtol=1e-6,
    )


# --- refusing bad ONNX files and missing onnxruntime ---------------------------------------------


def test_tampered_or_missing_onnx_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(exported["autoencoder"], d)
    data = bytearray((d / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.onnx").write_bytes(bytes(data))
    load_model(d)  # the TorchScript backend does not need the ONNX file
    with pytest.raises(ModelFileError, match=r"model\.onnx does not match metadata\.json \(sha256") as info:
        load_model(d, backend="onnxruntime")
    assert info.value.path == d / "model.onnx"
    with pytest.raises(ModelFileError, match=r"model\.onnx does not match"):
        Scorer(load_model(d), backend="onnxruntime")  # the scorer checks the hash too
    (d / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"model\.onnx not found.*netanomaly train"):
        load_model(d, backend="onnxruntime")
    # A model exported before ONNX and detectors existed: defaults, and a clear error for ONNX.
    meta = json.loads((d / "metadata.json").read_text())
    for key in ("onnx", "detector", "sequence_length", "input_dim"):
        del meta[key]
    (d / "metadata.json").write_text(json.dumps(meta))
    old = load_model(d)
    assert (old.detector, old.sequence_length, old.n_inputs, old.onnx_path) == ("autoencoder", 1, F, None)
    with pytest.raises(ModelFileError, match=r"no ONNX export.*netanomaly train"):
        Scorer(old, backend="onnxruntime")


def test_missing_onnxruntime_gives_a_helpful_error(exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_model(exported["pca"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ModelError, match=r"onnxruntime package, which is not installed: `pip install"):
        Scorer(loaded, backend="onnxruntime")
    Scorer(loaded)  # TorchScript never needs it
    with pytest.raises(ValueError, match="backend must be one of"):
        Scorer(loaded, backend="tensorrt")


class _Negative(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("data_min", torch.zeros(F))
        self.register_buffer("data_range", torch.ones(F))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.data_min - 1.0


def test_export_refuses_negative_terms(tmp_path: Path) -> None:
    x = np.zeros((4, F), dtype=np.float32)
    with pytest.raises(ModelError, match="non-negative"):
        export_model(_Negative(), x, SPEC, 1.0, tmp_path / "m", training={}, baseline={})


def test_export_onnx_checks_against_the_reference(fitted: dict[str, Detector], tmp_path: Path) -> None:
    module = fitted["pca"].scoring_module()
    x = feature_matrix(make_frame(10, seed=7), NAMES)
    entry = export_onnx(module, x, tmp_path / "pca.onnx")
    assert entry == {
        "file": "pca.onnx",
        "sha256": hashlib.sha256((tmp_path / "pca.onnx").read_bytes()).hexdigest(),
        "opset": 17,
    }
    with torch.inference_mode():
        wrong = module(torch.from_numpy(x)).numpy() + 1e-3
    with pytest.raises(ModelError, match="does not reproduce the TorchScript output"):
        export_onnx(module, x, tmp_path / "bad.onnx", reference=wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pca.onnx"]  # no partial or temporary file

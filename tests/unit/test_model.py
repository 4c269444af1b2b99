"""Unit tests of the model package: autoencoder, training, threshold, export/load, scoring, W&B."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from model.autoencoder import Autoencoder, ScoringModule, fit_min_max
from model.exceptions import ModelError, ModelFileError, TrainingError
from model.export import LoadedModel, export_model, feature_baseline, load_model, quiet_torchscript
from model.features import FeatureSpec, feature_matrix
from model.scoring import Scorer, score_features
from model.train import TrainResult, split_windows, train_autoencoder
from netanomaly.config import TrainingConfig, WandbConfig

SPEC = FeatureSpec(kpis=("latency_ms", "throughput_mbps", "packet_loss_pct", "jitter_ms"))
NAMES = SPEC.feature_names
# Fast, converging settings for a few hundred windows.
CFG = TrainingConfig(epochs=80, batch_size=64, learning_rate=1e-2, patience=5, seed=3)
_KPI_SCALE = {
    "latency_ms": (20.0, 3.0),
    "throughput_mbps": (500.0, 40.0),
    "packet_loss_pct": (0.5, 0.1),
    "jitter_ms": (3.0, 0.5),
}


def make_windows(n: int, seed: int) -> pd.DataFrame:
    """Synthetic normal window features: 4 KPIs x (mean, std, min, max) + event_count.

    The KPI levels share three latent factors (so features are correlated, as in real networks)
    and min/max follow from level and spread; a little independent noise is added everywhere.
    """
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(3, len(SPEC.kpis)))
    z = rng.normal(size=(n, 3))
    cols: dict[str, np.ndarray] = {"event_count": 60.0 + rng.normal(0.0, 2.0, n).round()}
    for i, (kpi, (mean, sd)) in enumerate(_KPI_SCALE.items()):
        level = mean + sd * (z @ mixing[:, i]) / 2.0
        spread = sd * 0.3 * np.exp(0.2 * z[:, 0])
        cols[f"{kpi}__mean"] = level + rng.normal(0.0, 0.05 * sd, n)
        cols[f"{kpi}__std"] = spread + rng.normal(0.0, 0.02 * sd, n)
        cols[f"{kpi}__min"] = level - 2.0 * spread + rng.normal(0.0, 0.05 * sd, n)
        cols[f"{kpi}__max"] = level + 2.0 * spread + rng.normal(0.0, 0.05 * sd, n)
    df = pd.DataFrame(cols)[NAMES]
    start = pd.Timestamp("2026-01-05T00:00:00Z") + pd.to_timedelta((np.arange(n) // 4) * 600, unit="s")
    df.insert(0, "window_end", start + pd.Timedelta(seconds=600))
    df.insert(0, "window_start", start)
    df.insert(0, "device_id", [f"dev-{i % 4}" for i in range(n)])
    return df


@pytest.fixture(scope="module")
def train_df() -> pd.DataFrame:
    return make_windows(600, seed=1)


@pytest.fixture(scope="module")
def trained(train_df: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train_autoencoder(train_df, SPEC, CFG, progress=False, out_dir=tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def scorer(trained: TrainResult) -> Scorer:
    return Scorer(load_model(trained.model_dir, expected_feature_names=NAMES), torch_threads=None)


def _random_scoring_module(seed: int = 0) -> tuple[ScoringModule, np.ndarray]:
    x = make_windows(200, seed=seed + 10)[NAMES].to_numpy(np.float32)
    x[:, 0] = 60.0  # a constant feature: its zero range must become 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ae = Autoencoder(len(NAMES), hidden=16, latent=4)
    return ScoringModule(ae, *fit_min_max(x)).eval(), x


# --- TorchScript ------------------------------------------------------------------------------


def test_torchscript_matches_eager_and_does_not_clip() -> None:
    module, x = _random_scoring_module()
    assert module.data_range[0].item() == 1.0  # zero range replaced
    far = np.vstack([x[:5], module.data_min.numpy() + 50.0 * module.data_range.numpy()])
    inp = torch.from_numpy(far.astype(np.float32))
    with quiet_torchscript():
        scripted = torch.jit.script(module)
    with torch.inference_mode():
        eager_out, script_out = module(inp), scripted(inp)
    assert eager_out.shape == inp.shape
    torch.testing.assert_close(script_out, eager_out, atol=1e-6, rtol=0)
    # Out-of-range input is not clipped: its error is orders of magnitude above in-range rows.
    assert eager_out[-1].mean() > 100 * eager_out[:5].mean(dim=1).max()


def test_export_load_round_trip_gives_identical_scores(tmp_path: Path) -> None:
    module, x = _random_scoring_module(seed=1)
    out = export_model(
        module,
        x,
        SPEC,
        0.5,
        tmp_path / "m",
        training={"epochs": 0},
        baseline=feature_baseline(x, NAMES),
    )
    loaded = load_model(out, expected_feature_names=NAMES)
    eager = Scorer(dataclasses.replace(loaded, module=module), torch_threads=None).score(x)
    scripted = Scorer(loaded, torch_threads=None, chunk_rows=7).score(x)  # chunking must not matter
    np.testing.assert_allclose(scripted.score, eager.score, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(scripted.contributions, eager.contributions, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(scripted.is_anomaly, eager.is_anomaly)
    assert loaded.threshold == 0.5 and loaded.spec == SPEC and loaded.feature_names == NAMES
    assert not list(out.glob("*.tmp")), "temporary files left behind"


class _ScriptDiverges(ScoringModule):
    """Behaves differently once scripted: export must notice and refuse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.scale(x)
        d = self.autoencoder(xs) - xs
        if torch.jit.is_scripting():
            return d * d + 1e-3
        return d * d


def test_export_refuses_a_module_that_scripts_differently(tmp_path: Path) -> None:
    module, x = _random_scoring_module(seed=2)
    divergent = _ScriptDiverges(module.autoencoder, module.data_min, module.data_range).eval()
    kwargs = {"training": {}, "baseline": feature_baseline(x, NAMES)}
    with pytest.raises(ModelError, match="does not reproduce the eager model"):
        export_model(divergent, x, SPEC, 0.5, tmp_path / "m", **kwargs)
    assert not (tmp_path / "m" / "model.pt").exists() and not list((tmp_path / "m").glob("*.tmp"))
    small = FeatureSpec(kpis=("latency_ms",))
    with pytest.raises(ModelError, match="17 input features but the spec has 5"):
        export_model(module, x, small, 0.5, tmp_path / "m", **kwargs)


def test_metadata_keys_and_sha256(trained: TrainResult, train_df: pd.DataFrame) -> None:
    meta = json.loads((trained.model_dir / "metadata.json").read_text())
    expected = {
        "format_version", "model_version", "created_at", "feature_spec", "feature_names", "scaler",
        "threshold", "score", "training", "baseline", "sha256", "versions",
    }  # fmt: skip
    assert expected <= set(meta)
    digest = hashlib.sha256((trained.model_dir / "model.pt").read_bytes()).hexdigest()
    assert meta["sha256"] == digest
    assert meta["model_version"] == "ae-" + digest[:12] == trained.model_version
    assert meta["format_version"] == 1
    assert meta["created_at"].endswith("Z")
    assert meta["feature_spec"] == SPEC.to_dict() and meta["feature_names"] == NAMES
    assert len(meta["scaler"]["min"]) == len(meta["scaler"]["range"]) == len(NAMES)
    assert meta["threshold"] == trained.threshold
    assert {"torch", "numpy", "python", "netanomaly"} <= set(meta["versions"])
    tr = meta["training"]
    assert tr["train_loss"] == list(trained.train_loss) and tr["val_loss"] == list(trained.val_loss)
    assert tr["epochs"] == len(trained.train_loss) and tr["best_epoch"] == trained.best_epoch
    assert (tr["n_train"], tr["n_val"]) == (trained.n_train, trained.n_val) == (480, 120)
    assert tr["config"]["seed"] == CFG.seed
    assert set(meta["baseline"]) == set(NAMES)
    lat = meta["baseline"]["latency_ms__mean"]
    assert {"mean", "std", "min", "max", "p01", "p05", "p25", "p50", "p75", "p95", "p99"} <= set(lat)
    col = train_df["latency_ms__mean"].to_numpy(np.float32).astype(np.float64)
    assert lat["mean"] == pytest.approx(col.mean()) and lat["p95"] == pytest.approx(np.quantile(col, 0.95))
    assert lat["min"] <= lat["p01"] <= lat["p50"] <= lat["p99"] <= lat["max"]


# --- refusing bad model directories -------------------------------------------------------------


def _break_flip(d: Path) -> None:
    data = bytearray((d / "model.pt").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    (d / "model.pt").write_bytes(bytes(data))


def _break_truncate(d: Path) -> None:
    data = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(data[: len(data) // 2])


def _break_truncate_and_fix_sha(d: Path) -> None:
    _break_truncate(d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["sha256"] = hashlib.sha256((d / "model.pt").read_bytes()).hexdigest()
    (d / "metadata.json").write_text(json.dumps(meta))


def _edit_metadata(d: Path, **changes: object) -> None:
    meta = json.loads((d / "metadata.json").read_text())
    for k, v in changes.items():
        if v is None:
            del meta[k]
        else:
            meta[k] = v
    (d / "metadata.json").write_text(json.dumps(meta))


# breakage -> (how to break a copy of a good model dir, expected message, file at fault)
BREAKAGES = {
    "bytes-flipped": (
        _break_flip,
        r"model\.pt does not match metadata\.json \(sha256 .*corrupted or was replaced",
    ),
    "truncated": (_break_truncate, r"model\.pt does not match metadata\.json \(sha256"),
    "truncated-sha-updated": (_break_truncate_and_fix_sha, r"model\.pt cannot be loaded as TorchScript"),
    "no-model": (lambda d: (d / "model.pt").unlink(), r"model\.pt not found"),
    "no-metadata": (lambda d: (d / "metadata.json").unlink(), r"metadata\.json not found.*netanomaly train"),
    "bad-json": (
        lambda d: (d / "metadata.json").write_text("{not json"),
        r"not valid JSON.*netanomaly train",
    ),
    "missing-key": (lambda d: _edit_metadata(d, scaler=None), r"lacks required keys \['scaler'\]"),
    "future-format": (lambda d: _edit_metadata(d, format_version=99), r"format_version 99"),
    "edited-names": (lambda d: _edit_metadata(d, feature_names=NAMES[::-1]), r"disagree with feature_spec"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_model_dir_is_refused(trained: TrainResult, tmp_path: Path, breakage: str) -> None:
    brk, message = BREAKAGES[breakage]
    d = tmp_path / "m"
    shutil.copytree(trained.model_dir, d)
    brk(d)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(d)
    culprit = "model.pt" if message.startswith("model") else "metadata.json"  # the file named first
    assert info.value.path == d / culprit


def test_feature_name_mismatch_is_refused(trained: TrainResult, tmp_path: Path) -> None:
    other = FeatureSpec(kpis=("latency_ms", "throughput_mbps", "packet_loss_pct", "rtt_ms")).feature_names
    with pytest.raises(ModelFileError, match=r"another feature spec.*rtt_ms__mean") as info:
        load_model(trained.model_dir, expected_feature_names=other)
    assert "jitter_ms__mean" in str(info.value)
    with pytest.raises(ModelFileError, match="another order"):
        load_model(trained.model_dir, expected_feature_names=NAMES[::-1])
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nowhere")


# --- training --------------------------------------------------------------------------------


def test_training_is_deterministic_and_stops_early(train_df: pd.DataFrame, tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"epochs": 500, "patience": 4})
    runs = [train_autoencoder(train_df, SPEC, cfg, progress=False, out_dir=tmp_path / f"r{i}") for i in range(2)]
    other = train_autoencoder(
        train_df, SPEC, cfg.model_copy(update={"seed": 4}), progress=False, out_dir=tmp_path / "other"
    )
    a, b = runs
    assert a.threshold == b.threshold and a.val_loss == b.val_loss and a.best_epoch == b.best_epoch
    sa = load_model(a.model_dir).module.state_dict()
    sb = load_model(b.model_dir).module.state_dict()
    so = load_model(other.model_dir).module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], so[k]) for k in sa), "the seed has no effect"
    # Early stopping: stopped `patience` epochs after the best one, long before the maximum.
    assert len(a.val_loss) < 500
    assert len(a.val_loss) == a.best_epoch + cfg.patience
    assert a.val_loss[a.best_epoch - 1] <= min(a.val_loss) * (1 + 1e-3)
    # The best weights were restored: the exported model's validation loss is the best epoch's.
    _, val_idx = split_windows(len(train_df), cfg.validation_fraction, cfg.seed)
    scores = Scorer(load_model(a.model_dir), torch_threads=None).score(feature_matrix(train_df.iloc[val_idx], NAMES))
    assert scores.score.mean() == pytest.approx(a.val_loss[a.best_epoch - 1], rel=1e-4)


def test_training_rejects_bad_input(train_df: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="only 30 windows"):
        train_autoencoder(train_df.head(30), SPEC, CFG, progress=False, out_dir=tmp_path / "a")
    bad = train_df.copy()
    bad.loc[[3, 7], "jitter_ms__std"] = np.nan
    bad.loc[5, "latency_ms__max"] = np.inf
    with pytest.raises(TrainingError, match=r"3 windows have non-finite.*'jitter_ms__std': 2"):
        train_autoencoder(bad, SPEC, CFG, progress=False, out_dir=tmp_path / "b")
    with pytest.raises(TrainingError, match="lack columns"):
        train_autoencoder(train_df.drop(columns="jitter_ms__max"), SPEC, CFG, progress=False, out_dir=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- threshold and detection -----------------------------------------------------------------


def test_threshold_is_calibrated_on_normal_validation_windows(
    trained: TrainResult, scorer: Scorer, train_df: pd.DataFrame
) -> None:
    # The threshold is the validation split's score quantile times the margin.
    _, val_idx = split_windows(len(train_df), CFG.validation_fraction, CFG.seed)
    val_scores = scorer.score(feature_matrix(train_df.iloc[val_idx], NAMES)).score
    expected = np.quantile(val_scores, CFG.threshold_quantile) * CFG.threshold_margin
    assert trained.threshold == pytest.approx(expected, rel=1e-5)
    # Few false alarms on fresh normal windows ...
    normal = feature_matrix(make_windows(2000, seed=99), NAMES)
    normal_scores = scorer.score(normal)
    assert normal_scores.is_anomaly.mean() < 0.02
    # ... while windows with latency shifted by many standard deviations all score far above.
    anomalous = normal[:300].copy()
    lat = [NAMES.index(f"latency_ms__{s}") for s in SPEC.stats]
    anomalous[:, lat] += 8.0 * normal[:, lat].std(axis=0)
    anomalous_scores = scorer.score(anomalous)
    assert anomalous_scores.is_anomaly.all()
    assert np.median(anomalous_scores.score) > 10 * np.median(normal_scores.score)
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    assert roc_auc_score(labels, np.r_[normal_scores.score, anomalous_scores.score]) > 0.95


# --- contributions ---------------------------------------------------------------------------


def test_contributions_sum_to_one_and_rank_the_shifted_feature_first(scorer: Scorer) -> None:
    x = feature_matrix(make_windows(40, seed=123), NAMES)
    base = scorer.score(x)
    np.testing.assert_allclose(base.contributions.sum(axis=1), 1.0, atol=1e-9)
    assert base.score.dtype == np.float64 and base.is_anomaly.dtype == np.bool_
    sd = feature_matrix(make_windows(2000, seed=99), NAMES).std(axis=0)
    for j, name in enumerate(NAMES):
        shifted = x.copy()
        shifted[:, j] += 10.0 * sd[j]
        s = scorer.score(shifted)
        np.testing.assert_allclose(s.contributions.sum(axis=1), 1.0, atol=1e-9)
        names, shares = scorer.top_features(s.contributions, 3)
        assert [row[0] for row in names] == [name] * len(x), f"{name} not ranked first"
        assert shares.shape == (len(x), 3) and np.all(np.diff(shares, axis=1) <= 0)


class _Zero(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_zero_error_gives_uniform_contributions_and_ties_keep_feature_order() -> None:
    loaded = LoadedModel(module=_Zero(), metadata={}, feature_names=NAMES, threshold=1.0, model_version="t", spec=SPEC)
    s = Scorer(loaded, torch_threads=None)
    res = s.score(np.ones((3, len(NAMES)), dtype=np.float64))
    np.testing.assert_array_equal(res.contributions, np.full((3, len(NAMES)), 1.0 / len(NAMES)))
    assert not res.is_anomaly.any() and np.all(res.score == 0)
    names, shares = s.top_features(res.contributions, 4)
    assert names == [NAMES[:4]] * 3 and shares.shape == (3, 4)
    with pytest.raises(ValueError, match=r"shape \[N, 17\]"):
        s.score(np.ones((2, 5)))
    empty = s.score(np.empty((0, len(NAMES))))
    assert empty.score.shape == (0,) and empty.contributions.shape == (0, len(NAMES))


def test_score_features_output(trained: TrainResult) -> None:
    df = make_windows(10, seed=5)
    df.loc[9, "latency_ms__max"] += 1000.0
    out = score_features(df, trained.model_dir, top_k=2)
    assert list(out.columns) == [
        "device_id", "window_start", "window_end", "score", "threshold", "is_anomaly", "model_version",
        "top_features",
    ]  # fmt: skip
    assert out.loc[0, "window_start"] == "2026-01-05T00:00:00.000Z"
    assert out.loc[9, "window_end"] == "2026-01-05T00:30:00.000Z"
    assert (out["threshold"] == trained.threshold).all() and (out["model_version"] == trained.model_version).all()
    np.testing.assert_array_equal(out["is_anomaly"], out["score"] > trained.threshold)
    assert bool(out.loc[9, "is_anomaly"])
    top = out.loc[9, "top_features"]
    assert [t["feature"] for t in top][0] == "latency_ms__max" and len(top) == 2
    assert 0 < top[1]["contribution"] <= top[0]["contribution"] <= 1


# --- Weights & Biases ------------------------------------------------------------------------


def _wandb_env(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    for var, sub in [("WANDB_DIR", "wb"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_DATA_DIR", "data")]:  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _wandb_cli() -> str:
    exe = Path(sys.executable).parent / "wandb"
    found = str(exe) if exe.exists() else shutil.which("wandb")
    if found is None:
        pytest.skip("the wandb command-line tool is not installed next to this interpreter")
    return found


def test_wandb_offline_run_records_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _wandb_env(monkeypatch, tmp_path)
    cfg = CFG.model_copy(update={"epochs": 6})
    result = train_autoencoder(
        make_windows(200, seed=2), SPEC, cfg, wandb_mode="offline", progress=False, out_dir=tmp_path / "model"
    )
    run_dir = result.wandb_run_dir
    assert run_dir is not None and run_dir.is_dir()
    assert run_dir.is_relative_to(tmp_path / "wb") and run_dir.name.startswith("offline-run-")
    assert list(run_dir.glob("*.wandb")), f"no .wandb file in {run_dir}"

    proc = subprocess.run(
        [_wandb_cli(), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    val_loss = [h["val_loss"] for h in history if "val_loss" in h]
    assert val_loss == pytest.approx(list(result.val_loss), rel=1e-9)
    assert [h["epoch"] for h in history if "epoch" in h] == list(range(1, len(result.val_loss) + 1))
    summaries: dict = {}
    for r in records:
        if r.get("type") == "summary":
            summaries.update(r["summary"].get("update", {}))
    assert summaries["threshold"] == pytest.approx(result.threshold, rel=1e-9)
    assert summaries["model_version"] == result.model_version
    assert any(h.get("threshold") == pytest.approx(result.threshold, rel=1e-9) for h in history)
    config = next(r["run"]["config"]["update"] for r in records if r.get("type") == "run")
    assert config["training"]["seed"] == cfg.seed and config["feature_spec"] == SPEC.to_dict()
    artifacts = [r["artifact"] for r in records if r.get("type") == "artifact"]
    assert len(artifacts) == 1 and artifacts[0]["type"] == "model"
    assert result.model_version in artifacts[0]["aliases"]
    assert (
        json.loads(artifacts[0]["metadata"])["sha256"]
        == hashlib.sha256((result.model_dir / "model.pt").read_bytes()).hexdigest()
    )


def test_wandb_disabled_never_imports_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _wandb_env(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now raises ImportError
    cfg = CFG.model_copy(update={"epochs": 2})
    result = train_autoencoder(
        make_windows(100, seed=2),
        SPEC,
        cfg,
        wandb_cfg=WandbConfig(mode="offline"),
        wandb_mode="disabled",  # the argument overrides the config
        progress=False,
        out_dir=tmp_path / "model",
    )
    assert result.wandb_run_dir is None
    assert not any(p.name == "wandb" or p.suffix == ".wandb" for p in tmp_path.rglob("*"))
    assert (result.model_dir / "model.pt").is_file()

"""Benchmarks: ratios against a baseline measured in the same run (machines here are shared and noisy).

    python -m bench.run [--windows 20000] [--repeats 5]

1. Scoring backends: windows/s of TorchScript (baseline), ONNX Runtime and the eager torch module.
2. Batching: scoring 1 window per call (what a row-at-a-time UDF does) vs Arrow-sized batches,
   as a ratio to the 1000-window batch — why the job uses a vectorized (pandas) UDF.
3. Offline features: pandas window statistics, events/s (absolute, for reference only).
Prints a table and writes bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _best_rate(fn, n_items: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        rates.append(n_items / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    import torch

    from model.export import load_model
    from model.features import FeatureSpec, compute_window_features
    from model.scoring import Scorer
    from model.train import train_autoencoder
    from netanomaly import simulate as sim
    from netanomaly.config import JobConfig

    torch.set_num_threads(1)
    cfg = JobConfig()
    spec = FeatureSpec.from_config(cfg.features)
    s = sim.SimulationSpec(devices=20, duration_s=2 * 86400, seed=1, window_seconds=spec.window_seconds)
    events = pd.DataFrame(sim.generate_events(s, [])).rename(columns={"timestamp": "event_time_ms"})
    feat_rate = _best_rate(lambda: compute_window_features(events, spec), len(events), args.repeats)
    feats = compute_window_features(events, spec)
    results: dict[str, dict] = {"offline_features": {"events_per_s": feat_rate}}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m"
        train_autoencoder(
            feats,
            spec,
            cfg.training.model_copy(update={"epochs": 5}),
            wandb_mode="disabled",
            progress=False,
            out_dir=out,
        )
        loaded = load_model(out)
        x = np.resize(feats[spec.feature_names].to_numpy(np.float32), (args.windows, len(spec.feature_names)))
        ts = Scorer(loaded, torch_threads=1, backend="torchscript")
        ort = Scorer(loaded, torch_threads=1, backend="onnxruntime")
        base = _best_rate(lambda: ts.score(x), len(x), args.repeats)
        ort_rate = _best_rate(lambda: ort.score(x), len(x), args.repeats)
        results["backends"] = {
            "torchscript_windows_per_s": base,
            "onnxruntime_windows_per_s": ort_rate,
            "onnxruntime_vs_torchscript": ort_rate / base,
        }
        single = x[:2000]
        one = _best_rate(lambda: [ts.score(single[i : i + 1]) for i in range(len(single))], len(single), 3)
        batch_rates = {
            b: _best_rate(lambda b=b: [ts.score(x[i : i + b]) for i in range(0, len(x), b)], len(x), 3)
            for b in (10, 100, 1000)
        }
        results["batching"] = {
            "per_window_call_vs_1000_batch": one / batch_rates[1000],
            **{f"batch_{b}_vs_1000": r / batch_rates[1000] for b, r in batch_rates.items()},
        }
    print(json.dumps(results, indent=2))
    Path(__file__).with_name("results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

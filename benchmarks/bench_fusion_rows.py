"""The default ``ensemble`` against ``mean`` alone on catalogs of a few thousand rows, out of fold (issue 22).

Out of fold only: ``bench_train_text.py --pair-with`` compares the two on the validation products, where the
fuser meets the final models' outputs (there ``mean`` alone lost 0.049 macro-F1 on the Rakuten texts while it
was within 0.005 out of fold: docs/bench/text.md, "Training time").

Each fuser is cross-fitted like the calibration stage does it (5 folds, seed 44: every row fused by a fuser that
never saw it); the table gives the out-of-fold macro-F1 of both, the paired bootstrap interval of the
difference (1,000 resamples of the rows) and the CPU seconds of the 5 fits:

- ``rakuten-texts``: the default config's two text models (tfidf, USE) on the Rakuten texts' training part
  (3,674 rows, 27 classes), their out-of-fold probabilities as ``prodcat train`` computes them (from the
  training cache in ``--cache-dir`` when a run of ``bench_train_text.py`` left them there);
- ``pair@N``: the paper's pair (``text_camembert`` + ``image_swin`` of ``model_outputs/split_a_val``) on
  stratified samples of N rows (``--rows``, ``--samples`` seeds).

    python benchmarks/bench_fusion_rows.py --cache-dir /tmp/c --rows 3674 --samples 3 --json bench-output/fusion-rows.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_head_threads import base_parser, cpu_seconds, rakuten_training_part

METHODS = ("mean", "ensemble")


def compare(task: str, X: np.ndarray, y: np.ndarray, classes: list[str], n_models: int) -> dict[str, Any]:
    from prodcat.config import FusionConfig, build_fuser
    from prodcat.evaluate import bootstrap_ci, macro_f1
    from prodcat.trust import cross_fit_fuser

    order = np.asarray(classes, dtype=object)
    row: dict[str, Any] = {"task": task, "rows": len(y), "load": round(os.getloadavg()[0], 2)}
    preds = {}
    for method in METHODS:
        spec = FusionConfig(method=method, params={"classes": classes})
        fuser = build_fuser(spec, n_models=n_models, seed=42, n_classes=len(classes))
        c0 = cpu_seconds()
        out = cross_fit_fuser(fuser, X, y, order, variants={}, n_splits=5, seed=44)
        preds[method] = order[out[""][1]]
        ci = bootstrap_ci(y, preds[method])
        row[method] = {"macro_f1": round(ci.value, 4), "ci": [round(ci.low, 4), round(ci.high, 4)]}
        row[method]["cpu_s"] = round(cpu_seconds() - c0, 1)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(1000):
        i = rng.integers(0, len(y), len(y))
        diffs.append(macro_f1(y[i], preds["ensemble"][i]) - macro_f1(y[i], preds["mean"][i]))
    row["ensemble_minus_mean"] = {
        "difference": round(row["ensemble"]["macro_f1"] - row["mean"]["macro_f1"], 4),
        "ci": [round(float(v), 4) for v in np.percentile(diffs, [2.5, 97.5])],
    }
    print(json.dumps(row), flush=True)
    return row


def rakuten_texts(data: Path, cache_dir: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The default text models' out-of-fold probabilities on the Rakuten training part, as ``prodcat train``."""
    from prodcat.config import build_model, load_config
    from prodcat.oof import oof_predict_proba

    X, y = rakuten_training_part(data)
    blocks = [
        oof_predict_proba(
            build_model(spec, modality="text", cache_dir=cache_dir, seed=42),
            X,
            y,
            n_splits=5,
            seed=42,
            refit=False,
            cache_dir=cache_dir,
            progress=False,
        ).proba
        for spec in load_config().text_models
    ]
    return np.hstack(blocks), y, [str(c) for c in np.unique(y)]


def main() -> None:
    from prodcat.predictions import read_model_outputs
    from prodcat.splits import holdout_split

    parser = base_parser(__doc__)
    parser.add_argument("--cache-dir", default="auto")
    parser.add_argument("--rows", type=int, default=3674)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    results = [compare("rakuten-texts", *rakuten_texts(args.data, args.cache_dir), n_models=2)]
    pair = ["text_camembert", "image_swin"]
    outputs = read_model_outputs(args.data / "rakuten" / "model_outputs" / "split_a_val", models=pair)
    y_all, X_all = np.asarray(outputs.require_labels()), outputs.stack(pair)
    for seed in range(args.samples):
        _, idx = holdout_split(y_all, test_size=args.rows / len(y_all), seed=seed)
        results.append(compare(f"pair@{args.rows}:{seed}", X_all[idx], y_all[idx], list(outputs.classes), 2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

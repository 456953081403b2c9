"""Where a text-only ``prodcat train`` spends its time, stage by stage, and what its fusion scores (issue 22).

One training run of :func:`prodcat.pipeline.train` on the 4,083 labelled Rakuten texts (27 classes, no images,
rows numbered: ``--id-column none``), the packaged default config unless told otherwise. Each stage is timed in
CPU seconds and wall seconds, by wrapping the pipeline's own stage functions (the CPU of worker processes
fitting folds in parallel, ``n_jobs``, counts in ``total`` only, once they have exited):

- ``embedding``: text encoders embedding texts (or reading them from the cache), inside the models' stages;
- ``<role>:<model> oof``: the model's K out-of-fold fits; ``<role>:<model> final``: its final model;
- ``fusion``: the fuser fit on the out-of-fold inputs; ``calibration``: the fuser's cross-fitting folds and the
  temperatures / acceptance rules; ``validation``: scoring the held-out products.

Scores, each with its 95 % bootstrap interval: out-of-fold macro-F1 of every model and of the fused
probabilities (the calibration stage's cross-fitted fuser: each row fused by a fuser that never saw it) on the
training part, the paired bootstrap of fused minus the best single model there, and the validation macro-F1
that ``prodcat train`` prints.

    # cold: an empty cache folder; warm-embed: the same folder again without its training cache (arrays/)
    python benchmarks/bench_train_text.py --cache-dir /tmp/c --fresh --json bench-output/train-text-cold.json
    python benchmarks/bench_train_text.py --cache-dir /tmp/c --drop arrays --json bench-output/train-text-warm.json
    # another fusion on the same out-of-fold inputs (the models' out-of-fold passes and fits from the cache)
    python benchmarks/bench_train_text.py --cache-dir /tmp/c --drop 'arrays/fuser*,arrays/calib*' \
        --set fusion.method=mean
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rakuten" / "text" / "labelled_texts.csv"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stages:
    """CPU and wall seconds per stage name (a stage inside another is counted in both)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        c0, w0 = _cpu(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] += _cpu() - c0
            self.wall[name] += time.perf_counter() - w0

    def wrap(self, owner: Any, attr: str, name: Callable[..., str] | str) -> None:
        """Replace ``owner.attr`` by a timed call (``name`` may compute the stage name from the arguments)."""
        inner = getattr(owner, attr)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            with self.timed(name(*args, **kwargs) if callable(name) else name):
                return inner(*args, **kwargs)

        setattr(owner, attr, timed_call)

    def table(self) -> dict[str, dict[str, float]]:
        return {k: {"cpu_s": round(self.cpu[k], 1), "wall_s": round(self.wall[k], 1)} for k in self.cpu}


def _model_name(est: Any, *args: Any, role: str = "", **kwargs: Any) -> str:
    return f"{role}:{type(est).__name__} oof"


def _fit_name(est: Any, *args: Any, **kwargs: Any) -> str:
    return f"{type(est).__name__} final"


def _scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from prodcat.evaluate import bootstrap_ci

    ci = bootstrap_ci(y, pred, n_boot=1000, seed=0)
    return {"macro_f1": round(ci.value, 4), "ci": [round(ci.low, 4), round(ci.high, 4)]}


def _paired_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, n_boot: int = 1000) -> dict[str, Any]:
    """Macro-F1 of ``a`` minus ``b`` on the same rows, with a paired percentile bootstrap interval."""
    from prodcat.evaluate import macro_f1

    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(macro_f1(y[idx], a[idx]) - macro_f1(y[idx], b[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": round(macro_f1(y, a) - macro_f1(y, b), 4), "ci": [round(low, 4), round(high, 4)]}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(args: argparse.Namespace) -> dict[str, Any]:
    import prodcat.models
    import prodcat.pipeline as pipeline
    import prodcat.trust as trust
    from prodcat.catalog import read_catalog
    from prodcat.config import load_config
    from prodcat.evaluate import macro_f1

    overrides = dict(item.split("=", 1) for item in args.set)
    config = load_config(args.config, **{k: _value(v) for k, v in overrides.items()})
    config = config.model_copy(update={"cache_dir": str(args.cache_dir)})
    stages = Stages()
    oof_inputs: dict[str, np.ndarray] = {}
    fused: dict[str, Any] = {}

    model_oof = pipeline._model_oof

    def recorded_oof(est: Any, X: Any, y: np.ndarray, *, role: str, **kwargs: Any) -> Any:
        out = model_oof(est, X, y, role=role, **kwargs)
        oof_inputs[f"{role}:{type(est).__name__}:{len(oof_inputs)}"] = out[0]
        return out

    pipeline._model_oof = recorded_oof
    stages.wrap(pipeline, "_model_oof", _model_name)
    stages.wrap(pipeline, "_fit", _fit_name)
    stages.wrap(pipeline, "_fit_fuser", "fusion")
    stages.wrap(prodcat.models, "cached_embed", "embedding")
    inner_fused = trust.fused_oof

    def recorded_fused(*a: Any, **k: Any) -> Any:
        out = inner_fused(*a, **k)
        fused.update(out)
        return out

    trust.fused_oof = recorded_fused
    stages.wrap(trust, "fused_oof", "calibration: cross-fitting")
    stages.wrap(trust, "calibrate_fusion", "calibration: temperatures and rules")
    stages.wrap(prodcat.pipeline.TrainedModel, "outputs", "validation")

    df, _ = read_catalog(args.data, label_column="prdtypecode", id_column="none")
    load = os.getloadavg()
    with stages.timed("total"):
        model = pipeline.train(df, config, progress=False)
        # Worker processes (parallel folds) count once they have exited: their CPU joins "total" only.
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
    load_after = os.getloadavg()

    y_all = df["label"].astype(str).to_numpy()
    from prodcat.splits import holdout_split

    tr_idx, va_idx = holdout_split(y_all, test_size=config.validation_fraction, seed=config.seed)
    y = y_all[tr_idx]
    classes = model.classes
    out: dict[str, Any] = {
        "config": args.config or "default",
        "overrides": overrides,
        "fusion": config.fusion.model_dump(),
        "calibration_folds": config.calibration.n_folds,
        "rows_train": len(y),
        "load_average_before": [round(v, 2) for v in load],
        "load_average_after": [round(v, 2) for v in load_after],
        "stages": stages.table(),
        "timings_s": model.metrics["timings_s"],
        "oof": {},
    }
    preds = {}
    for name, proba in oof_inputs.items():
        preds[name] = classes[np.argmax(proba, axis=1)]
        out["oof"][name] = _scores(y, preds[name])
    if "" in fused:
        preds["fused"] = classes[fused[""][1]]
        out["oof"]["fused"] = _scores(y, preds["fused"])
        best = max((k for k in preds if k != "fused"), key=lambda k: macro_f1(y, preds[k]))
        out["fused_minus_best_model"] = {"model": best, **_paired_difference(y, preds["fused"], preds[best])}
    val = model.metrics.get("validation", {})
    out["validation"] = {k: v for k, v in val.items() if k not in ("acceptance", "calibration")}
    if args.predictions:  # the held-out products' labels, per model and fused, to pair runs afterwards
        va_df = df.iloc[va_idx].reset_index(drop=True)
        scored = model.outputs(va_df)
        out["validation_predictions"] = {
            "label": y_all[va_idx].tolist(),
            "fused": [str(v) for v in scored.labels],
            **{
                f"{role}:{name}": model.classes[np.argmax(p, axis=1)].tolist()
                for (name, role, _), p in zip(model.models, scored.probas, strict=True)
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--config", default=None, help="a config file or built-in name (default: the default)"
    )
    parser.add_argument("--set", action="append", default=[], help="dotted override, e.g. fusion.method=mean")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--fresh", action="store_true", help="empty the cache folder first (cold run)")
    parser.add_argument(
        "--drop",
        default=None,
        help="comma-separated globs of cache entries to remove first (warm-embed: 'arrays'; "
        "fusion only: 'arrays/fuser*,arrays/calibration*')",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--predictions", action="store_true", help="store the validation products' fused labels in the JSON"
    )
    parser.add_argument(
        "--pair-with",
        type=Path,
        default=None,
        help="the JSON of an earlier --predictions run: paired bootstrap of this run's fused validation macro-F1 "
        "minus that run's (implies --predictions)",
    )
    args = parser.parse_args()
    if args.fresh and args.cache_dir.exists():
        shutil.rmtree(args.cache_dir)
    for pattern in filter(None, (args.drop or "").split(",")):
        for path in args.cache_dir.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    args.predictions = args.predictions or args.pair_with is not None
    result = run(args)
    if args.pair_with is not None:
        other = json.loads(args.pair_with.read_text())["validation_predictions"]
        mine = result["validation_predictions"]
        if other["label"] != mine["label"]:
            raise SystemExit(f"{args.pair_with}: not the same validation products")
        y = np.asarray(mine["label"])
        result["validation_minus_paired"] = {
            "run": str(args.pair_with),
            **_paired_difference(y, np.asarray(mine["fused"]), np.asarray(other["fused"]), n_boot=2000),
        }
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    sys.exit(main())

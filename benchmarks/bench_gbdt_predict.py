"""The ``gbdt`` fuser's prediction path: prodcat's numpy tree evaluator vs scikit-learn's public ``predict_proba``.

Fits ``GBDTFusion`` on the Rakuten split_a_val camembert + swin probabilities (10,827 rows, 27 classes), then
times, on 1 row (a served request), 64 rows, 2,048 rows (a ``batch_predict`` chunk) and every row: the numpy
evaluator prodcat uses, and the same fitted ``HistGradientBoostingClassifier``'s ``predict_proba`` with its
default OpenMP threads and with one thread. Also the cost of storing the scikit-learn object instead of the
exported arrays (skops bytes and load time). Best of several repeats; speeds as ratios measured in one run.

    python benchmarks/bench_gbdt_predict.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SPLIT_A = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "rakuten" / "model_outputs" / "split_a_val"
)


def best_ms(f: Callable[[], object], repeats: int) -> float:
    f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from prodcat.fusion import GBDTFusion, get_state
    from prodcat.fusion.gbdt import _raw_to_proba, predict_raw
    from prodcat.predictions import read_model_outputs
    from prodcat.safe_io import dumps_estimator, loads_estimator

    outputs = read_model_outputs(SPLIT_A, label_column="prdtypecode")
    X = np.hstack([outputs.probas["text_camembert"], outputs.probas["image_swin"]])
    y = outputs.require_labels()
    with threadpool_limits(1, user_api="openmp"):  # fitting is not measured; one thread spares a busy machine
        est = GBDTFusion(seed=0).fit(X, y)
    F = est._features(X)
    # The same model as a scikit-learn object (same data, settings and seed as GBDTFusion._fit).
    codes = np.searchsorted(est.classes_, y)
    with threadpool_limits(1, user_api="openmp"):
        hgb = HistGradientBoostingClassifier(
            max_iter=est.max_iter,
            learning_rate=est.learning_rate,
            max_leaf_nodes=est.max_leaf_nodes,
            min_samples_leaf=est.min_samples_leaf,
            l2_regularization=est.l2_regularization,
            early_stopping=est.early_stopping,
            validation_fraction=est.validation_fraction,
            n_iter_no_change=est.n_iter_no_change,
            random_state=est.seed,
        ).fit(F, codes)
    assert np.allclose(_raw_to_proba(predict_raw(est.trees_, F)), hgb.predict_proba(F), atol=1e-6)
    print(f"{len(F)} rows, {F.shape[1]} features, {est.n_iter_} iterations x {len(est.classes_)} classes\n")
    print(
        "| rows | numpy evaluator ms | predict_proba ms (default threads) | predict_proba ms (1 thread) |"
        " ratio 1 thread / numpy |"
    )
    print("|---|---|---|---|---|")
    for n, repeats in ((1, 10), (64, 5), (2048, 3), (len(F), 1)):
        G = F[:n]
        ours = best_ms(lambda G=G: _raw_to_proba(predict_raw(est.trees_, G)), repeats)
        default = best_ms(lambda G=G: hgb.predict_proba(G), repeats)
        with threadpool_limits(1, user_api="openmp"):
            single = best_ms(lambda G=G: hgb.predict_proba(G), repeats)
        print(f"| {n} | {ours:.1f} | {default:.1f} | {single:.1f} | {single / ours:.2f} |")
    _, arrays = get_state(est)
    data = dumps_estimator(hgb)
    t0 = time.perf_counter()
    loads_estimator(data, source="benchmark")
    load_s = time.perf_counter() - t0
    print(
        f"\nstored as arrays: {sum(a.nbytes for a in arrays.values()) / 1e6:.1f} MB; as a skops scikit-learn "
        f"object: {len(data) / 1e6:.1f} MB, {load_s:.2f} s to load"
    )


if __name__ == "__main__":
    main()

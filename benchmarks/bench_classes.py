"""How training and prediction cost grow with the class count (issue 16), on the fashion catalog.

Catalogs, all from the same fashion products (text column ``title``, the product photos), each with a taxonomy
``master_category > sub_category > label [> leaf]``:

- ``55``: the article type (``label``), real;
- ``331``: article type x base colour where that pair has enough products, else ``<type> / other``: real labels;
- ``1000``, ``3000``: synthetic leaves: the finest of article type x colour x gender x season x usage with at
  least ``--min-rows`` products (else the coarser key), then the largest leaves split in two by product id until
  the target count is reached. 3,000 leaves need more rows than fashion has (5 folds need 5 products per leaf),
  so that catalog repeats every product ``--repeat`` times (ids suffixed): its training time is not comparable
  to the others', its per-product prediction cost is.

Each size is trained in its own process as ``prodcat train`` does (``prodcat.pipeline.train`` with the default
config, then ``save_bundle``), with warm embeddings (a first pass fits every embedding model once on all products
to fill the embedding cache) and an empty training cache (a fresh folder whose embedding folders link to the
default cache: no out-of-fold result or fitted model is reused). It records the wall time, CPU time
(``time.process_time``: all threads of the process; on a shared machine the wall time mostly says how busy the
others were, run with ``OMP_NUM_THREADS=1`` so that idle BLAS threads do not spin), peak resident memory
(``ru_maxrss``), bundle size, validation macro-F1 per level, then loads the bundle and times
``Predictor.predict_frame`` (fused labels, calibrated confidence and decision, top 5, taxonomy path and back-off)
on 2,000 products, embeddings read from the cache, so what is timed is what grows with the classes (also with the
fold models' linear heads run one by one instead of stacked, alternated in the same process), and end to end on
the first 300 of them with a predictor without the cache (every title and photo encoded: what a new product
costs). One JSON
line per size is appended to ``--jsonl``; ``--keep-in DIR`` keeps each size's bundle and training cache in
``DIR/<size>`` (``bench_class_fusion.py`` reads them). ``--folds 3000:3`` trains a size with fewer folds (the
3,000-leaf catalog, whose leaves have few products: its prediction cost is the figure that counts).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_classes.py --sizes 55,1000,331 \
        --jsonl bench-output/classes.jsonl
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_classes.py --sizes 3000 --min-rows 5 --repeat 2 \
        --folds 3000:3 --jsonl bench-output/classes.jsonl
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
ATTRIBUTES = ("base_colour", "gender", "season", "usage")
TAXONOMY = ["master_category", "sub_category", "label"]
REAL_MIN_ROWS = 13  # 327 leaves, the nearest to the 331


def _catalog() -> pd.DataFrame:
    """The fashion catalog. 8 article types sit under two sub-categories in the source data (e.g. Clutches
    under Bags and Free Gifts), which is not a tree: each type gets its most frequent sub-category, and each
    sub-category its most frequent master category."""
    from prodcat.catalog import read_catalog

    df = read_catalog(DATA, text_columns=["title"], label_column="label", id_column="id")[0]
    for child, parent in (("label", "sub_category"), ("sub_category", "master_category")):
        mode = df.groupby(child)[parent].agg(lambda v: v.value_counts().index[0])
        df[parent] = df[child].map(mode)
    return df


def leaves(df: pd.DataFrame, target: int, *, min_rows: int, attributes: tuple[str, ...]) -> np.ndarray:
    """(n,) leaf labels: the finest ``label x attributes`` key with ``min_rows`` products, then the largest
    leaves split in two by row position until there are ``target`` (fewer if no leaf can split)."""
    keys = [df["label"].astype(str)]
    for a in attributes:
        keys.append(keys[-1] + " / " + df[a].fillna("?").astype(str))
    leaf = keys[0].copy()
    for k in keys[1:]:
        counts = k.map(k.value_counts())
        leaf = leaf.where(counts < min_rows, k)  # finer key where it is big enough
    leaf = leaf.where(leaf.map(leaf.value_counts()) >= min_rows, df["label"].astype(str) + " / other")
    small = leaf.map(leaf.value_counts()) < min_rows  # a small "other" joins its type's largest leaf
    largest = leaf[~small].groupby(df["label"][~small]).agg(lambda v: v.value_counts().index[0])
    leaf = leaf.where(~small, df["label"].map(largest).fillna(df["label"]))
    out = leaf.to_numpy(dtype=object)
    n_leaves = len(set(out))
    while n_leaves < target:
        values, counts = np.unique(out, return_counts=True)
        big = values[counts >= 2 * min_rows]
        if not len(big):
            break
        for v in big[np.argsort(-counts[counts >= 2 * min_rows])][: target - n_leaves]:
            rows = np.flatnonzero(out == v)
            out[rows[1::2]] = f"{v} #{n_leaves}"
            n_leaves += 1
    return out


def build(size: int, *, min_rows: int, repeat: int) -> tuple[pd.DataFrame, list[str]]:
    """The catalog of ``size`` classes and its taxonomy columns (the label being the leaf)."""
    df = _catalog()
    if size == 55:
        return df, TAXONOMY[:2]
    copies = repeat if size > 1500 else 1
    df["article_type"] = df["label"]
    if size == 331:  # real: type x colour where the pair has REAL_MIN_ROWS+ products
        df["label"] = leaves(df, 0, min_rows=REAL_MIN_ROWS, attributes=ATTRIBUTES[:1])
    else:  # every leaf keeps min_rows rows once the products are repeated
        df["label"] = leaves(df, size, min_rows=-(-min_rows // copies), attributes=ATTRIBUTES)
    if copies > 1:
        df = pd.concat([df.assign(id=df["id"] + f"#{k}") for k in range(copies)], ignore_index=True)
    return df, [*TAXONOMY[:2], "article_type"]


def warm(df: pd.DataFrame) -> None:
    """Fit every embedding model of the default config once on all products: fills the embedding cache."""
    from prodcat.config import build_model, load_config

    cfg = load_config()
    for spec, role in [(s, "text") for s in cfg.text_models] + [(s, "image") for s in cfg.image_models]:
        est = build_model(spec, modality=role, cache_dir=cfg.cache_dir, seed=cfg.seed)
        if hasattr(est, "embed"):
            est.fit(df, df["label"].to_numpy())


def fresh_cache(root: Path) -> Path:
    """A new cache folder whose embedding and ONNX folders are the default cache's (warm embeddings) and whose
    training cache (out-of-fold probabilities, fitted models, fusers) starts empty: nothing fitted is reused."""
    from prodcat.cache import default_cache_dir

    root.mkdir(parents=True, exist_ok=True)
    for sub in ("embeddings", "onnx"):
        (default_cache_dir() / sub).mkdir(parents=True, exist_ok=True)
        (root / sub).symlink_to(default_cache_dir() / sub, target_is_directory=True)
    return root


def one(
    size: int, *, min_rows: int, repeat: int, folds: int, work: Path, end_to_end: int = 300
) -> dict[str, object]:
    """Train the ``size`` catalog as ``prodcat train`` does (train, save the bundle), load the bundle and time its
    predictions; returns the figures."""
    from prodcat.bundle import load_bundle, save_bundle
    from prodcat.config import load_config
    from prodcat.pipeline import train

    df, taxonomy = build(size, min_rows=min_rows, repeat=repeat)
    overrides: dict[str, object] = {
        "columns.taxonomy_columns": taxonomy,
        "cache_dir": str(fresh_cache(work / "cache")),
    }
    if folds != 5:
        overrides.update({"n_folds": folds, "calibration.n_folds": folds})
    cfg = load_config(**overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    model = train(df, cfg, progress=False)
    bundle = save_bundle(model, work / "bundle", input_schema={"columns": cfg.columns.model_dump()})
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    bundle_mb = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    predictor = load_bundle(
        bundle, cache_dir=cfg.cache_dir
    )  # embeddings from the cache: the class-bound part
    sample = df.sample(min(2000, len(df)), random_state=0).reset_index(drop=True)
    predictor.predict_frame(sample.head(50))  # warm
    t0, c0 = time.perf_counter(), time.process_time()
    model.predict_proba(sample)
    proba_cpu_ms = (time.process_time() - c0) / len(sample) * 1000
    t0, c0 = time.perf_counter(), time.process_time()
    frame = predictor.predict_frame(sample)
    frame_ms = (time.perf_counter() - t0) / len(sample) * 1000
    frame_cpu_ms = (time.process_time() - c0) / len(sample) * 1000
    stacked = stacked_vs_one_by_one(predictor, sample, repeats=3)
    # End to end: a fresh predictor without the cache (every title and photo encoded, as for new products).
    cold = load_bundle(bundle, cache_dir=None)
    few = sample.head(end_to_end)
    cold.predict_frame(few.head(20))  # ONNX sessions and USE loaded
    c0 = time.process_time()
    cold.predict_frame(few)
    e2e_cpu_ms = (time.process_time() - c0) / len(few) * 1000
    val = model.metrics.get("validation", {})
    return {
        "size": size,
        "n_classes": int(model.metrics["n_classes"]),
        "n_rows": len(df),
        "n_folds": folds,
        "train_s": round(train_s, 1),
        "train_cpu_s": round(train_cpu_s, 1),
        "timings_s": model.metrics["timings_s"],
        "peak_rss_mb": round(rss_train),
        "bundle_mb": round(bundle_mb, 1),
        "predict_proba_cpu_ms_per_product": round(proba_cpu_ms, 3),
        "predict_ms_per_product": round(frame_ms, 3),
        "predict_cpu_ms_per_product": round(frame_cpu_ms, 3),
        "predicted_auto": round(float((frame["decision"] == "auto").mean()), 4),
        **stacked,
        "end_to_end_products": len(few),
        "end_to_end_cpu_ms_per_product": round(e2e_cpu_ms, 3),
        "fusion": type(model.fuser).__name__,
        "macro_f1": val.get("macro_f1"),
        "per_model": {k: v["macro_f1"] for k, v in val.get("per_model", {}).items()},
        "levels": {k: v["macro_f1"] for k, v in val.get("taxonomy", {}).get("levels", {}).items()},
        "hierarchical_f1": val.get("taxonomy", {}).get("hierarchical", {}).get("f1"),
        "back_off": val.get("taxonomy", {}).get("back_off"),
    }


def stacked_vs_one_by_one(predictor: Any, sample: pd.DataFrame, *, repeats: int) -> dict[str, float]:
    """CPU ms per product of ``predict_frame`` (embeddings from the cache) with the fold models' linear heads
    stacked into one matrix product (``FoldEnsemble._linear_stack``, the default) and with each member's head run in
    turn (as before it), alternated ``repeats`` times in this process; medians."""
    from prodcat.folds import FoldEnsemble

    stack = FoldEnsemble._linear_stack
    times: dict[str, list[float]] = {"stacked": [], "one_by_one": []}
    try:
        for _ in range(repeats):
            for mode in times:
                FoldEnsemble._linear_stack = stack if mode == "stacked" else (lambda self: None)  # type: ignore[method-assign]
                c0 = time.process_time()
                predictor.predict_frame(sample)
                times[mode].append((time.process_time() - c0) / len(sample) * 1000)
    finally:
        FoldEnsemble._linear_stack = stack  # type: ignore[method-assign]
    return {f"predict_cpu_ms_per_product_{k}": round(float(np.median(v)), 3) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="55,1000,331")
    ap.add_argument("--jsonl", type=Path, default=Path("bench-output/classes.jsonl"))
    ap.add_argument("--min-rows", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--folds", default="", help="SIZE:K,... train these sizes with K folds (e.g. 3000:3)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--no-warm", action="store_true", help="skip filling the embedding cache first")
    ap.add_argument(
        "--keep-in", type=Path, metavar="DIR", help="keep each size's bundle and training cache in DIR/<size>"
    )
    ap.add_argument("--components", type=int, metavar="ROWS", help="time each class-count-bound stage alone")
    ap.add_argument(
        "--tfidf", metavar="VARIANTS", help="TF-IDF linear models alone, e.g. logreg,sgd:15,grouped"
    )
    args = ap.parse_args()
    folds = {int(k): int(v) for k, v in (item.split(":") for item in filter(None, args.folds.split(",")))}
    if args.tfidf:
        for size in [int(s) for s in args.sizes.split(",")]:
            tfidf_variants(size, args.tfidf.split(","), min_rows=args.min_rows)
        return
    if args.components:
        components([int(s) for s in args.sizes.split(",")], rows=args.components)
        return
    if args.one is not None:
        rec = one(
            args.one, min_rows=args.min_rows, repeat=args.repeat, folds=folds.get(args.one, 5), work=args.work
        )
        print(json.dumps(rec))
        return
    if not DATA.is_file():
        raise SystemExit(f"{DATA} not found")
    if not args.no_warm:
        warm(_catalog())
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    for size in [int(s) for s in args.sizes.split(",")]:
        if args.keep_in:
            shutil.rmtree(args.keep_in / str(size), ignore_errors=True)
            (args.keep_in / str(size)).mkdir(parents=True)
        work = (
            str(args.keep_in / str(size))
            if args.keep_in
            else tempfile.mkdtemp(prefix=f"bench-classes-{size}-")
        )
        cmd = [sys.executable, __file__, "--one", str(size), "--min-rows", str(args.min_rows), "--work", work]
        cmd += ["--repeat", str(args.repeat), "--folds", args.folds]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if not args.keep_in:
            shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0:
            print(f"size {size} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        line = proc.stdout.strip().splitlines()[-1]
        with args.jsonl.open("a") as f:
            f.write(line + "\n")
        print(line, flush=True)


def components(sizes: list[int], *, rows: int, seed: int = 0) -> list[dict[str, object]]:
    """CPU seconds of one fit of each stage that grows with the class count, on the same ``rows`` products
    (cached embeddings), for each class count of ``sizes``: what main does at that count and what ``auto`` does.
    Also the per-product CPU milliseconds of predicting them. Cheap enough for a saturated machine."""
    from prodcat.config import build_model, load_config
    from prodcat.fusion import GBDTFusion, MeanFusion, PaperMLPFusion
    from prodcat.heads import SharedCovarianceClassifier

    cfg = load_config()
    base = _catalog().sample(rows, random_state=seed).reset_index(drop=True)
    embedded = {}
    for spec, role in [(cfg.text_models[1], "text"), (cfg.image_models[0], "image")]:
        est = build_model(spec, modality=role, cache_dir=cfg.cache_dir, seed=cfg.seed)
        est.set_params(
            head=SharedCovarianceClassifier(temperature=1.0), head_params={}
        )  # cheapest: we want vectors
        est.fit(base, base["label"].to_numpy())
        embedded[role] = est.embed(base)[0]
    out = []
    for size in sizes:
        y = base["label"].to_numpy() if size <= 55 else leaves(base, size, min_rows=1, attributes=ATTRIBUTES)
        C = len(np.unique(y))
        rec: dict[str, object] = {"size": size, "n_classes": C, "rows": rows}
        for name, est, X in _stages(base, embedded, C):
            c0 = time.process_time()
            est.fit(X, y)
            rec[f"{name} fit_cpu_s"] = round(time.process_time() - c0, 2)
            c0 = time.process_time()
            proba = est.predict_proba(X)
            rec[f"{name} predict_cpu_ms"] = round((time.process_time() - c0) / rows * 1000, 4)
            rec[f"{name} train_acc"] = round(float((est.classes_[proba.argmax(1)] == y).mean()), 4)
        rng = np.random.default_rng(seed)
        P = rng.dirichlet(np.full(C, 0.1), size=(rows, 3)).reshape(rows, 3 * C)
        fusers: dict[str, object] = {"fusion mean": MeanFusion(n_models=3)}
        if C <= 400:  # C^2-bound: minutes per epoch / round beyond (the issue: gbdt ~17 min at 331 classes)
            fusers["fusion paper-mlp (1 epoch)"] = PaperMLPFusion(n_models=3, inputs="log", epochs=1)
            fusers["fusion gbdt (2 rounds)"] = GBDTFusion(n_models=3, max_iter=2, early_stopping=False)
        for name, fuser in fusers.items():
            c0 = time.process_time()
            fuser.fit(P, y)  # type: ignore[attr-defined]
            rec[f"{name} fit_cpu_s"] = round(time.process_time() - c0, 2)
        out.append(rec)
        print(json.dumps(rec), flush=True)
    return out


def tfidf_variants(size: int, variants: list[str], *, min_rows: int) -> None:
    """TF-IDF's linear model alone at ``size`` classes: every variant fitted on the same features (vectorizers fitted
    on the training part of a stratified 80/20 split, seed 0), CPU seconds of the fit, and macro-F1, accuracy and
    log-loss on the held-out fifth. Variants: ``logreg`` (L-BFGS), ``sgd:EPOCHS[:avg]`` (one-vs-rest, ``avg``:
    averaged SGD), ``grouped`` (:class:`prodcat.heads.GroupedClassifier`)."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    from prodcat.evaluate import macro_f1
    from prodcat.heads import GroupedClassifier
    from prodcat.splits import holdout_split
    from prodcat.text.models import TfidfTextClassifier

    df = _catalog()
    if size == 55:
        y = df["label"].astype(str).to_numpy()
    else:
        attributes = ATTRIBUTES[:1] if size == 331 else ATTRIBUTES
        y = leaves(df, 0 if size == 331 else size, min_rows=REAL_MIN_ROWS if size == 331 else min_rows,
                   attributes=attributes).astype(str)  # fmt: skip
    tr, te = holdout_split(y, test_size=0.2, seed=0)
    vec = TfidfTextClassifier(classifier="sgd", sgd_epochs=1).fit(df.iloc[tr], y[tr])  # the vectorizers
    X_tr, X_te = (vec._features(vec._texts(df.iloc[rows])) for rows in (tr, te))
    print(json.dumps({"size": size, "classes": len(np.unique(y[tr])), "train_rows": len(tr),
                      "ngrams": X_tr.shape[1], "ngrams_per_row": round(X_tr.nnz / X_tr.shape[0], 1)}))  # fmt: skip
    linear = {"C": 10.0, "max_iter": 300, "random_state": 0}
    for v in variants:
        kind, *opt = v.split(":")
        if kind == "logreg":
            est: Any = LogisticRegression(class_weight="balanced", **linear)
        elif kind == "grouped":
            est = GroupedClassifier(LogisticRegression(**linear))
        else:
            est = SGDClassifier(loss="log_loss", alpha=1e-4, max_iter=int(opt[0]), tol=None, class_weight="balanced",
                                random_state=0, average=opt[1:] == ["avg"])  # fmt: skip
        c0 = time.process_time()
        est.fit(X_tr, y[tr])
        fit_cpu = time.process_time() - c0
        c0 = time.process_time()
        P = est.predict_proba(X_te)
        ms = (time.process_time() - c0) / len(te) * 1000
        idx = np.searchsorted(est.classes_, y[te])
        nll = -np.log(np.clip(P[np.arange(len(te)), idx], 1e-12, None)).mean()
        pred = est.classes_[P.argmax(1)]
        print(json.dumps({"size": size, "variant": v, "fit_cpu_s": round(fit_cpu, 1), "predict_cpu_ms": round(ms, 4),
                          "macro_f1": round(macro_f1(y[te], pred), 4), "accuracy": round(float((pred == y[te]).mean()), 4),
                          "log_loss": round(float(nll), 3)}), flush=True)  # fmt: skip


def _stages(base: pd.DataFrame, embedded: dict[str, np.ndarray], C: int) -> list[tuple[str, object, object]]:
    """(name, unfitted estimator, its input) of each class-count-bound stage: main's choice and ``auto``'s."""
    from prodcat.models import make_head
    from prodcat.text.models import TfidfTextClassifier

    out: list[tuple[str, object, object]] = [
        ("tfidf logreg", TfidfTextClassifier(classifier="logreg"), base),
        ("tfidf auto", TfidfTextClassifier(classifier="auto"), base),
    ]
    for role, Z in embedded.items():
        for kind in ("logreg", "lda"):
            params = {"C": 0.05} if role == "image" and kind == "logreg" else None
            out.append((f"{role} head {kind}", make_head(kind, params, random_state=0, n_classes=C), Z))
    return out


if __name__ == "__main__":
    main()

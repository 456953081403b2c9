"""Label-noise benchmarks (issue 4): confident-learning audit quality and the effect of pruning.

Sections (figures are copied by hand into docs/bench/noise.md):

- ``synthetic``: precision / recall of every cleanlab filter against known flipped labels (Gaussian blobs,
  4-fold OOF probabilities of linear discriminant analysis), for several noise rates.
- ``fashion-audit``: the multimodal audit of ../shared/data/fashion (4-fold OOF tfidf text model and
  EfficientNet-Lite0 + logistic-regression image model, fused by the mean); writes the review page.
- ``fashion-prune``: 5-fold macro-F1 of the image model training uses (``embed:efficientnet-lite0``) fitted on
  all training rows vs with each cleaning policy's weights, applied as training applies them (sample weights, see
  ``noise_experiments.py``); issues are found by 4-fold OOF inside each training part only.
- ``rakuten``: audit of the saved model outputs in ../shared/data/rakuten/model_outputs/split_a_val.

Usage::

    python benchmarks/bench_noise.py synthetic
    python benchmarks/bench_noise.py fashion-audit --cache-dir /tmp/prodcat-cache
    python benchmarks/bench_noise.py fashion-prune [--detector text] [--folds 5] [--sample N]
    python benchmarks/bench_noise.py rakuten
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION = DATA / "fashion" / "products.csv"
SPLIT_A = DATA / "rakuten" / "model_outputs" / "split_a_val"


def markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float | np.floating) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthetic(args: argparse.Namespace) -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from prodcat.noise import FILTERS, find_label_issues
    from prodcat.oof import oof_predict_proba

    rng = np.random.default_rng(0)
    n, k, dim = 5000, 10, 16
    centers = rng.normal(size=(k, dim)) * 0.8  # overlapping classes: about 85% clean accuracy
    true = rng.integers(0, k, n)
    X = centers[true] + rng.normal(size=(n, dim))
    u, shift = rng.random(n), rng.integers(1, k, n)
    rows = []
    for rate in (0.0, 0.05, 0.1, 0.2, 0.3):
        flipped = u < rate
        labels = np.where(flipped, (true + shift) % k, true)
        oof = oof_predict_proba(
            LinearDiscriminantAnalysis(), X, labels, n_splits=4, refit=False, progress=False
        )
        for f in FILTERS:
            issues = find_label_issues(labels, oof.proba, classes=oof.classes, filter_by=f)
            hits = int((issues.mask & flipped).sum())
            rows.append(
                {
                    "flip rate": rate,
                    "filter_by": f,
                    "flipped": int(flipped.sum()),
                    "flagged": issues.n_issues,
                    "precision": hits / issues.n_issues if issues.n_issues else float("nan"),
                    "recall": hits / flipped.sum() if flipped.any() else float("nan"),
                }
            )
    print(f"synthetic: {n} rows, {k} classes, {dim}-d Gaussian blobs, 4-fold OOF LDA probabilities\n")
    print(markdown(pd.DataFrame(rows)))


def fashion_catalog(text_column: str) -> tuple[pd.DataFrame, np.ndarray]:
    from prodcat.catalog import read_catalog

    df, _ = read_catalog(FASHION, text_columns=[text_column], require_label=True)
    return df, df["label"].astype(str).to_numpy()


def fashion_audit(args: argparse.Namespace) -> None:
    from prodcat.audit import audit_labels, write_audit
    from prodcat.commands.audit import build_models
    from prodcat.oof import align_proba, oof_predict_proba

    df, labels = fashion_catalog(args.text_column)
    classes = np.unique(labels)
    probas, times = {}, {}
    for name, est in build_models(cache_dir=args.cache_dir).items():
        t0 = time.perf_counter()
        res = oof_predict_proba(est, df, labels, n_splits=4, seed=42, refit=False, desc=name)
        probas[name] = align_proba(res.proba, res.classes, classes)
        times[name] = time.perf_counter() - t0
    probas["fusion"] = (probas["text"] + probas["image"]) / 2
    out = Path(args.out) / f"fashion-{args.text_column}"
    result = audit_labels(labels, probas, classes=classes, products=df)
    write_audit(result, out, title=f"Label audit: fashion ({args.text_column})")
    s = result.summary
    print(f"fashion ({args.text_column}): {len(df)} products, {len(classes)} classes; OOF seconds {times}")
    print(
        f"flagged on fusion: {s['n_flagged']} ({100 * s['flagged_rate']:.2f}%); per source {s['flagged_per_source']}"
    )
    print(
        f"flagged by every source: {s['flagged_by_every_source']}; sources disagree: "
        f"{s['flagged_and_sources_disagree']}; OOF accuracy {s['accuracy_per_source']}"
    )
    print(markdown(result.per_class.head(10)))
    print(markdown(result.confusions.head(10)))
    cols = [
        "rank",
        "id",
        "title",
        "given_label",
        "text_label",
        "image_label",
        "fusion_label",
        "suggested_conf",
    ]
    print(markdown(result.issues[cols].head(25)))
    print(f"review page: {out / 'review.html'}")


def fashion_prune(args: argparse.Namespace) -> None:
    from noise_experiments import compare_pruning

    from prodcat.registry import create

    df, labels = fashion_catalog(args.text_column)
    if args.sample:
        df = df.sample(n=min(args.sample, len(df)), random_state=0).reset_index(drop=True)
        labels = df["label"].astype(str).to_numpy()
    # The image model training uses (`embed:efficientnet-lite0`: cached frozen features + logistic regression,
    # C=0.05), cleaned the way training cleans it: weights as sample_weight, every row kept.
    model = create("image-model", "embed:efficientnet-lite0", cache_dir=args.cache_dir, random_state=0)
    _, ok = model.embed(df)  # fills the embedding cache once; every fit below reads it
    print(f"fashion: {len(df)} products, {int((~ok).sum())} without a usable image")
    detector = X_detector = None
    if args.detector == "text":
        detector, X_detector = create("text-model", "tfidf"), df
    t0 = time.perf_counter()
    cmp = compare_pruning(
        model,
        df,
        labels,
        policies=["top-fraction:0.1", "all", "downweight:0.05"],
        n_splits=args.folds,
        inner_splits=4,
        detector=detector,
        X_detector=X_detector,
        seed=42,
    )
    print(f"issues found by: {args.detector} model; {time.perf_counter() - t0:.0f} s")
    print(markdown(cmp.summary, floatfmt=".4f"))
    print(markdown(cmp.folds, floatfmt=".4f"))


def rakuten(args: argparse.Namespace) -> None:
    from prodcat.audit import audit_labels
    from prodcat.predictions import read_model_outputs

    outputs = read_model_outputs(SPLIT_A, label_column="prdtypecode")
    labels, classes, arrays = outputs.require_labels(), np.asarray(outputs.classes), outputs.probas
    rows = []
    setups = {
        "text_camembert": {"text": arrays["text_camembert"]},
        "image_swin": {"image": arrays["image_swin"]},
        "camembert + swin, mean": {
            "text": arrays["text_camembert"],
            "image": arrays["image_swin"],
            "fusion": (arrays["text_camembert"] + arrays["image_swin"]) / 2,
        },
    }
    text_all = np.mean([v for k, v in arrays.items() if k.startswith("text_")], axis=0)
    image_all = np.mean([v for k, v in arrays.items() if k.startswith("image_")], axis=0)
    setups["mean of 4 text + mean of 4 image, mean"] = {
        "text": text_all,
        "image": image_all,
        "fusion": (text_all + image_all) / 2,
    }
    for name, probas in setups.items():
        flag_on = "fusion" if "fusion" in probas else next(iter(probas))
        for f in ("prune_by_noise_rate", "both", "confident_learning"):
            t0 = time.perf_counter()
            res = audit_labels(labels, probas, classes=classes, flag_on=flag_on, filter_by=f)
            s = res.summary
            rows.append(
                {
                    "probabilities": name,
                    "filter_by": f,
                    "flagged": s["n_flagged"],
                    "rate %": 100 * s["flagged_rate"],
                    "per source": s["flagged_per_source"],
                    "est. issues": s["est_label_issues"],
                    "seconds": time.perf_counter() - t0,
                }
            )
    print(f"rakuten split_a_val: {len(labels)} products, {len(classes)} classes\n")
    print(markdown(pd.DataFrame(rows), floatfmt=".2f"))
    res = audit_labels(labels, setups["camembert + swin, mean"], classes=classes)
    print(markdown(res.per_class.head(8)))
    print(markdown(res.confusions.head(8)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("section", choices=["synthetic", "fashion-audit", "fashion-prune", "rakuten"])
    parser.add_argument("--out", default="bench-output/noise", help="folder for review pages")
    parser.add_argument("--cache-dir", default="auto", help="embedding cache folder")
    parser.add_argument("--text-column", default="title", help="fashion text column: title or title_masked")
    parser.add_argument(
        "--detector", default="image", choices=["image", "text"], help="model that finds issues"
    )
    parser.add_argument("--folds", type=int, default=5, help="fashion-prune: outer folds")
    parser.add_argument("--sample", type=int, default=0, help="fashion-prune: random products (0 = all)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    {
        "synthetic": synthetic,
        "fashion-audit": fashion_audit,
        "fashion-prune": fashion_prune,
        "rakuten": rakuten,
    }[args.section](args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Embedding heads at many classes: shrinkage LDA (``head: lda``, the ``auto`` choice above 100 classes) against
multinomial logistic regression (``head: logreg``), on real leaves (issue 16).

Catalog: the fashion products labelled ``article type / base colour``, classes with at least ``--min-rows``
products (331 classes at 10). One stratified 80/20 split; each head is fitted on the 80 % through
``EmbeddingClassifier`` (embeddings read from the cache, so the fit time is the head's) and scored on the 20 %
(macro-F1 over the classes present, accuracy). Image: EfficientNet-Lite0 with the default config's settings;
text: USE on the masked title (`title_masked`: words naming the category removed).

    PYTHONPATH=src nice -n 2 python benchmarks/bench_heads.py --json bench-output/heads.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sklearn.model_selection import train_test_split

from prodcat.catalog import read_catalog
from prodcat.evaluate import macro_f1
from prodcat.models import EmbeddingClassifier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
MODELS = {
    "image": {
        "embedder": "efficientnet-lite0",
        "column": "image",
        "modality": "image",
        "embedder_params": {"image_size": 160, "aspect": "auto", "extra_stages": 3},
    },
    "text": {"embedder": "use-multilingual", "column": "text", "modality": "text"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, default=DATA)
    ap.add_argument("--min-rows", type=int, default=10)
    ap.add_argument("--heads", default="lda,logreg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    df, _ = read_catalog(args.catalog, text_columns=["title_masked"])
    df["label"] = df["label"].astype(str) + " / " + df["base_colour"].astype(str)
    counts = df["label"].value_counts()
    df = df[df["label"].isin(counts[counts >= args.min_rows].index)].reset_index(drop=True)
    train, test = train_test_split(df, test_size=0.2, stratify=df["label"], random_state=args.seed)
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
    print(f"{df['label'].nunique()} classes, {len(train)} train / {len(test)} test products", flush=True)

    rows = []
    for modality, spec in MODELS.items():
        for head in args.heads.split(","):
            start = time.perf_counter()
            model = EmbeddingClassifier(head=head, cache_dir="auto", **spec).fit(train, y_train)
            fit_s = time.perf_counter() - start
            pred = model.predict(test)
            row = {
                "modality": modality,
                "head": head,
                "macro_f1": round(macro_f1(y_test, pred), 4),
                "accuracy": round(float((pred == y_test).mean()), 4),
                "fit_s": round(fit_s, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"classes": int(df["label"].nunique()), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""The evaluation report at hundreds of classes (issue 23): fashion labelled by article type x base colour.

Classes with at least ``--min-count`` products (10: 331 classes, 9,872 products) are kept; a random (not
stratified) ``--test-fraction`` of the products is held out, so, as with a real new catalog, some classes the
model knows have no product in the evaluated part. The CLI is run as a user would:

    prodcat train train.csv --out model --config <tfidf on title_masked + Lite0 image model, mean fusion>
    prodcat evaluate model test.csv --out report

and the script prints and writes (``--json``) the report's figures: macro-F1 and its interval for the fusion and
each model (headline and table.csv must agree), the number of classes averaged over and set apart, whether every
interval contains its point estimate, the size of report.html and the wall time of each command.

    python benchmarks/bench_report.py --out bench-output/report331 --json bench-output/report331.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
PRODCAT = [str(Path(sys.executable).with_name("prodcat"))]
CONFIG = """
columns: {text_columns: [title_masked], label_column: label, image_column: image, id_column: id}
text_models: [{name: tfidf}]
image_models: [{name: "embed:efficientnet-lite0", params: {embedder_params: {image_size: 160, aspect: auto}}}]
validation_fraction: 0.1
n_folds: 3
noise: {enabled: false}
fusion: {method: mean}
seed: 42
"""


def catalog(data: Path, out: Path, *, min_count: int, test_fraction: float, seed: int) -> tuple[Path, Path]:
    """train.csv / test.csv with label = "<article type> / <base colour>" and absolute image paths."""
    df = pd.read_csv(data)
    df["label"] = df["label"] + " / " + df["base_colour"].fillna("unknown")
    counts = df["label"].value_counts()
    df = df.loc[df["label"].isin(counts.index[counts >= min_count])].reset_index(drop=True)
    df["image"] = [str((data.parent / p).resolve()) for p in df["image"]]
    test = np.random.default_rng(seed).random(len(df)) < test_fraction
    out.mkdir(parents=True, exist_ok=True)
    df.loc[~test].to_csv(out / "train.csv", index=False)
    df.loc[test].to_csv(out / "test.csv", index=False)
    return out / "train.csv", out / "test.csv"


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*PRODCAT, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"prodcat {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    print(proc.stdout, flush=True)
    return round(time.perf_counter() - t0, 1)


def fixed_class_list(report: Path, n_boot: int = 300, seed: int = 0) -> dict[str, float]:
    """The fusion's macro-F1 and percentile interval under the rule issue 23 removed: averaged over every class
    the model knows (absent ones as F1 0), each resample scored over that same fixed list (scikit-learn)."""
    from sklearn.metrics import f1_score

    pred = pd.read_csv(report / "predictions.csv", dtype={"label": str, "predicted": str})
    per_class = pd.read_csv(report / "per_class.csv", dtype={"class": str})
    y, p, labels = pred["label"].to_numpy(), pred["predicted"].to_numpy(), per_class["class"].tolist()
    rng = np.random.default_rng(seed)
    reps = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]
    scores = [f1_score(y[i], p[i], labels=labels, average="macro", zero_division=0) for i in reps]
    return {
        "macro_f1": float(f1_score(y, p, labels=labels, average="macro", zero_division=0)),
        "ci_low": float(np.quantile(scores, 0.025)),
        "ci_high": float(np.quantile(scores, 0.975)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("bench-output/report331"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--min-count", type=int, default=10)
    ap.add_argument("--test-fraction", type=float, default=0.24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/model")
    args = ap.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found (the shared fashion data)")
    train, test = catalog(
        args.data, args.out, min_count=args.min_count, test_fraction=args.test_fraction, seed=args.seed
    )
    (args.out / "config.yaml").write_text(CONFIG)
    times = {}
    if not args.skip_train:
        times["train_s"] = run(
            ["train", str(train), "--out", str(args.out / "model"), "--config", str(args.out / "config.yaml")]
        )
    times["evaluate_s"] = run(
        ["evaluate", str(args.out / "model"), str(test), "--out", str(args.out / "report")]
    )
    report = args.out / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    table = pd.read_csv(report / "table.csv", index_col="method")
    ls = metrics["label_set"]
    result = {
        "n_train": len(pd.read_csv(train)),
        "n_test": metrics["n"],
        "n_classes_model": ls["n_classes_averaged"] + len(ls["model_classes_absent_from_data"]),
        "n_classes_averaged": ls["n_classes_averaged"],
        "n_classes_absent": len(ls["model_classes_absent_from_data"]),
        "macro_f1": metrics["macro_f1"],
        "macro_f1_ci": metrics["macro_f1_ci"],
        "table": table.reset_index().to_dict(orient="records"),
        "headline_equals_table": bool(np.isclose(table.loc["fusion", "macro_f1"], metrics["macro_f1"])),
        "every_ci_contains_estimate": bool(
            ((table["ci_low"] <= table["macro_f1"]) & (table["macro_f1"] <= table["ci_high"])).all()
        ),
        "before_fix_fixed_class_list": fixed_class_list(report),
        "confusion_png": (report / "confusion.png").exists(),
        "report_html_kb": round((report / "report.html").stat().st_size / 1024),
        "thumbs": len(list((report / "thumbs").glob("*.jpg"))) if (report / "thumbs").is_dir() else 0,
        **times,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

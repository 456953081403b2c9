"""Calibration and auto-acceptance at a target precision, measured on data the rule never saw (issue 17).

Fashion (``--fashion``): for each task (fashion-full: `title`, fashion-masked: `title_masked`) and each 80/20 split
seed of the notes (0-3, the splits of ``bench_pipeline.py``), the CLI as a user runs it, on the shared (warm)
embedding cache:

    prodcat train train.csv --out model --text-columns <col> --target-precision 0.98
    prodcat evaluate model test.csv --out report                  # every test product with its photo
    prodcat evaluate model test-no-photo.csv --out report-text    # the same products, photo removed

and records from ``report*/metrics.json``: ECE / Brier of the fused probabilities before and after calibration,
precision (with its binomial SE) and coverage of the auto-accepted test products, and coverage at precision
0.95 / 0.98 / 0.99.

Rakuten (``--rakuten``): the real model outputs of ``model_outputs/split_a_val`` (all its models), 80/20 stratified
splits with the same seeds: the default fusion is cross-fitted on the 80% (the default calibration folds), temperature and acceptance
rules are learnt on those out-of-fold fused probabilities, the fusion is refit on the 80% and the rule is applied
to the 20%, at targets 0.95 / 0.98 / 0.99 (``--rakuten-fusion logistic`` for a fast run).

A run passes when the achieved precision is at least ``target - SE`` (one binomial standard error).

    python benchmarks/bench_trust.py --fashion --rakuten --json bench-output/trust.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DATA, PRODCAT, TASKS, split_files

RAKUTEN = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "rakuten" / "model_outputs" / "split_a_val"
)
TARGETS = (0.95, 0.98, 0.99)


def _prodcat(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*PRODCAT, *args], capture_output=True, text=True, env=os.environ)
    if proc.returncode != 0:
        raise SystemExit(f"prodcat {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return round(time.perf_counter() - t0, 1)


def _verdict(acc: dict[str, Any]) -> bool | None:
    if not acc or not acc.get("accepted"):
        return None
    return bool(acc["precision"] >= acc["target_precision"] - acc["precision_se"])


def _summary(cal: dict[str, Any]) -> dict[str, Any]:
    acc = cal.get("acceptance") or {}
    return {
        "ece_before": cal["before"]["ece"],
        "ece_after": cal["after"]["ece"],
        "brier_before": cal["before"]["brier"],
        "brier_after": cal["after"]["brier"],
        "accepted": acc.get("accepted"),
        "coverage": acc.get("coverage"),
        "precision": acc.get("precision"),
        "precision_se": acc.get("precision_se"),
        "within_1se_or_above": _verdict(acc),
        "coverage_at": {t: v["coverage"] for t, v in cal["coverage_at"].items()},
    }


def fashion(out: Path, seeds: list[int], target: float, tasks: list[str]) -> list[dict[str, Any]]:
    results = []
    for seed in seeds:
        train_csv, test_csv = split_files(DATA, out / f"seed{seed}" / "split", seed)
        no_photo = test_csv.with_name("test-no-photo.csv")
        pd.read_csv(test_csv).assign(image="").to_csv(no_photo, index=False)
        for task in tasks:
            base = out / f"seed{seed}" / task
            model = base / "model"
            row: dict[str, Any] = {"data": f"fashion-{task}", "split_seed": seed, "target": target}
            row["train_s"] = _prodcat(
                ["train", str(train_csv), "--out", str(model), "--text-columns", TASKS[task],
                 "--target-precision", str(target)]
            )  # fmt: skip
            manifest = json.loads((model / "manifest.json").read_text())
            row["calibration_stage_s"] = manifest["metrics"]["timings_s"].get("calibration")
            oof = manifest["metrics"]["calibration"]
            row["oof_temperature"] = oof["temperature"]
            row["oof_groups"] = {
                g: {"rows": v["rows"], "temperature": v["temperature"], "acceptance": v.get("acceptance")}
                for g, v in oof["groups"].items()
            }
            for name, csv in (("test", test_csv), ("test_no_photo", no_photo)):
                report = base / f"report-{name}"
                _prodcat(["evaluate", str(model), str(csv), "--out", str(report)])
                metrics = json.loads((report / "metrics.json").read_text())
                row[name] = {"macro_f1": metrics["macro_f1"], **_summary(metrics["calibration"])}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def rakuten(seeds: list[int], folder: Path, method: str) -> list[dict[str, Any]]:
    from prodcat.acceptance import coverage_at_precision, selective_scores
    from prodcat.calibration import calibration_scores
    from prodcat.config import CalibrationConfig, FusionConfig, build_fuser
    from prodcat.ensemble import labels_and_proba
    from prodcat.oof import align_proba
    from prodcat.splits import holdout_split
    from prodcat.trust import TrustOptions, cross_fit_fuser, fit_calibration, fold_vote

    classes = np.asarray([str(c) for c in json.loads((folder / "classes.json").read_text())])
    y_all = pd.read_csv(folder / "index.csv")["prdtypecode"].astype(str).to_numpy()
    files = sorted(folder.glob("*.npy"))
    X_all = np.hstack([np.load(f).astype(np.float64) for f in files])
    results = []
    for seed in seeds:
        tr, te = holdout_split(y_all, test_size=0.2, seed=seed)
        t0 = time.perf_counter()
        fuser = build_fuser(FusionConfig(method=method), n_models=len(files), seed=42)
        folds = CalibrationConfig().n_folds
        oof, fold_fusers = cross_fit_fuser(
            fuser, X_all[tr], y_all[tr], classes, variants={}, n_splits=folds, seed=44
        )
        # what `prodcat train` predicts with (config refit_full: false): the fold fusers, voting
        final = fold_vote(fold_fusers, X_all[tr], y_all[tr])
        labels, proba = labels_and_proba(final, X_all[te])
        fused = align_proba(proba, final.classes_, classes)
        pos = {c: i for i, c in enumerate(classes.tolist())}
        pred = np.array([pos[v] for v in labels.tolist()])
        y_te = np.array([pos[v] for v in y_all[te].tolist()])
        y_tr = np.array([pos[v] for v in y_all[tr].tolist()])
        groups_tr, groups_te = np.full(len(tr), "text+image", object), np.full(len(te), "text+image", object)
        for target in TARGETS:
            cal, _ = fit_calibration(
                oof, y_tr, groups_tr, blanked={}, classes=classes.tolist(),
                options=TrustOptions(target_precision=target),
            )  # fmt: skip
            P, conf, accepted = cal.apply(fused, pred, groups_te)
            acc = {"target_precision": target, **selective_scores(accepted, pred == y_te)}
            row = {
                "data": "rakuten-split_a_val",
                "fusion": method,
                "models": [f.stem for f in files],
                "split_seed": seed,
                "target": target,
                "oof_temperature": cal.scaler.temperature_,
                "classes_with_own_threshold": int(cal.rules["text+image"].own_threshold_.sum()),
                "test": {
                    "macro_f1": None,
                    "ece_before": calibration_scores(fused, y_te, pred)["ece"],
                    "ece_after": calibration_scores(P, y_te, pred)["ece"],
                    "brier_before": calibration_scores(fused, y_te, pred)["brier"],
                    "brier_after": calibration_scores(P, y_te, pred)["brier"],
                    **{k: acc[k] for k in ("accepted", "coverage", "precision", "precision_se")},
                    "within_1se_or_above": _verdict(acc),
                    "coverage_at": {
                        str(t): coverage_at_precision(conf, pred == y_te, t)["coverage"] for t in TARGETS
                    },
                },
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def rakuten_no_photo(seeds: list[int], folder: Path, method: str, target: float) -> list[dict[str, Any]]:
    """The missing-photo check on real outputs: the calibration also learns from the training rows with their
    image blocks set to the class prior (what an image model outputs for a product without a photo), and the
    test products are scored twice, with their image models' outputs and with them blanked the same way."""
    from prodcat.acceptance import selective_scores
    from prodcat.calibration import calibration_scores
    from prodcat.config import CalibrationConfig, FusionConfig, build_fuser
    from prodcat.ensemble import labels_and_proba
    from prodcat.oof import align_proba
    from prodcat.splits import holdout_split
    from prodcat.trust import TrustOptions, cross_fit_fuser, fit_calibration, fold_vote

    classes = np.asarray([str(c) for c in json.loads((folder / "classes.json").read_text())])
    pos = {c: i for i, c in enumerate(classes.tolist())}
    y_all = pd.read_csv(folder / "index.csv")["prdtypecode"].astype(str).to_numpy()
    files = sorted(folder.glob("*.npy"))
    X_all = np.hstack([np.load(f).astype(np.float64) for f in files])
    cols = np.repeat([f.stem.startswith("image_") for f in files], len(classes))
    results = []
    for seed in seeds:
        tr, te = holdout_split(y_all, test_size=0.2, seed=seed)
        prior = np.bincount([pos[v] for v in y_all[tr].tolist()], minlength=len(classes)) / len(tr)
        values = np.tile(prior, len(files))  # (m*C,): every block the prior; only the image columns are used
        fuser = build_fuser(FusionConfig(method=method), n_models=len(files), seed=42)
        oof, fold_fusers = cross_fit_fuser(
            fuser, X_all[tr], y_all[tr], classes, variants={"no-image": (cols, values)},
            n_splits=CalibrationConfig().n_folds, seed=44,
        )  # fmt: skip
        y_tr = np.array([pos[v] for v in y_all[tr].tolist()])
        cal, _ = fit_calibration(
            oof, y_tr, np.full(len(tr), "text+image", object), blanked={"no-image": "image"},
            classes=classes.tolist(), options=TrustOptions(target_precision=target),
        )  # fmt: skip
        final = fold_vote(
            fold_fusers, X_all[tr], y_all[tr]
        )  # as `prodcat train` predicts (refit_full: false)
        y_te = np.array([pos[v] for v in y_all[te].tolist()])
        for group, X in (("text+image", X_all[te]), ("text", np.where(cols, values, X_all[te]))):
            labels, proba = labels_and_proba(final, X)
            fused = align_proba(proba, final.classes_, classes)
            pred = np.array([pos[v] for v in labels.tolist()])
            P, conf, accepted = cal.apply(fused, pred, np.full(len(te), group, object))
            acc = {"target_precision": target, **selective_scores(accepted, pred == y_te)}
            row = {
                "data": "rakuten-split_a_val", "fusion": method, "split_seed": seed, "target": target,
                "test_group": group, "temperature": cal.scaler.group_temperatures_.get(group),
                "accuracy": float((pred == y_te).mean()), "mean_confidence": float(conf.mean()),
                "ece_before": calibration_scores(fused, y_te, pred)["ece"],
                "ece_after": calibration_scores(P, y_te, pred)["ece"],
                **{k: acc[k] for k in ("accepted", "coverage", "precision", "precision_se")},
                "within_1se_or_above": _verdict(acc),
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fashion", action="store_true")
    ap.add_argument("--rakuten", action="store_true")
    ap.add_argument("--tasks", default="full,masked")
    ap.add_argument("--rakuten-fusion", default="ensemble", help="fusion method on the Rakuten outputs")
    ap.add_argument(
        "--rakuten-no-photo", action="store_true", help="the missing-photo check on the Rakuten outputs"
    )
    ap.add_argument("--split-seeds", default="0,1,2,3")
    ap.add_argument(
        "--target", type=float, default=0.98, help="fashion / no-photo: the trained target precision"
    )
    ap.add_argument("--out", type=Path, default=Path("bench-output/trust"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = [int(s) for s in args.split_seeds.split(",")]
    results: list[dict[str, Any]] = []
    if args.rakuten:
        results += rakuten(seeds, RAKUTEN, args.rakuten_fusion)
    if args.rakuten_no_photo:
        results += rakuten_no_photo(seeds, RAKUTEN, args.rakuten_fusion, args.target)
    if args.fashion:
        results += fashion(args.out, seeds, args.target, args.tasks.split(","))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

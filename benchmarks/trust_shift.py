"""Which stage makes a refit model over-accept at a target precision (issue 17; docs/bench/trust.md)?

Takes a bundle trained with ``refit_full: true`` by ``bench_trust.py --fashion`` (its ``seed<S>/<task>/model``) and
the same split's files, rebuilds the K fold models of every modality model (the training cache makes the
out-of-fold and noise passes cheap) and the calibration's K fold fusers, and scores the test products four ways
with the bundle's own calibration and acceptance rule:

* refit models, refit fuser (what a ``refit_full: true`` bundle predicts with);
* fold models averaged, refit fuser;
* refit models, fold fusers voting;
* fold models averaged, fold fusers voting (what ``refit_full: false`` predicts with).

    python benchmarks/trust_shift.py bench-output/trust/seed3 masked
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from sklearn.base import clone


def main() -> None:
    from prodcat.bundle import load_model
    from prodcat.catalog import read_catalog
    from prodcat.ensemble import labels_and_proba
    from prodcat.evaluate import macro_f1
    from prodcat.model import StackOutputs
    from prodcat.oof import align_proba
    from prodcat.pipeline import _checked_model, _model_oof
    from prodcat.splits import holdout_split, kfold_indices
    from prodcat.trust import fold_vote
    from prodcat.trust_report import score_trust, trust_inputs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "split_dir", help="bench_trust's seed<S> folder (split/train.csv, split/test.csv, <task>/model)"
    )
    ap.add_argument("task", choices=["full", "masked"])
    args = ap.parse_args()
    column = {"masked": "title_masked", "full": "title"}[args.task]
    model, _ = load_model(f"{args.split_dir}/{args.task}/model")
    cfg = model.config
    df, _ = read_catalog(f"{args.split_dir}/split/train.csv", text_columns=[column])
    y_all = df["label"].astype(str).to_numpy()
    tr, _ = holdout_split(y_all, test_size=cfg.validation_fraction, seed=cfg.seed)  # as training split it
    train_df, y = df.iloc[tr].reset_index(drop=True), y_all[tr]
    test, _ = read_catalog(f"{args.split_dir}/split/test.csv", text_columns=[column])
    y_test = test["label"].astype(str).to_numpy()
    refit = model.outputs(test)
    specs = [(s, "text") for s in cfg.text_models] + [(s, "image") for s in cfg.image_models]
    oofs, folds = [], []
    for spec, role in specs:
        est = _checked_model(spec, role, cfg)
        proba, weights, _ = _model_oof(est, train_df, y, role=role, config=cfg, progress=False)
        oofs.append(align_proba(proba, np.unique(y), model.classes))
        members = []
        for a, _b in kfold_indices(y, n_splits=cfg.n_folds, seed=cfg.seed):
            kw = {} if weights is None else {"sample_weight": weights[a]}
            m = clone(est).fit(train_df.iloc[a], y[a], **kw)
            members.append(align_proba(m.predict_proba(test), m.classes_, model.classes))
        folds.append(np.mean(members, axis=0))
    X_oof = np.hstack(oofs)
    fusers = [
        clone(model.fuser).fit(X_oof[a], y[a])
        for a, _b in kfold_indices(y, n_splits=cfg.calibration.n_folds, seed=cfg.seed + 2)
    ]
    vote = fold_vote(fusers, X_oof, y)

    def score(name: str, heads: list[np.ndarray], fuser: Any) -> None:
        labels, proba = labels_and_proba(fuser, np.hstack(heads))
        out = StackOutputs(heads, refit.masks, labels, align_proba(proba, fuser.classes_, model.classes))
        s = score_trust(model, *trust_inputs(model, test, out), y_test)
        a = s["acceptance"]
        ok = a["precision"] >= a["target_precision"] - a["precision_se"]
        print(
            f"| {name} | {macro_f1(y_test, labels):.4f} | {a['coverage']:.3f} | {a['precision']:.4f} "
            f"({a['precision_se']:.4f}) | {'yes' if ok else 'no'} | {s['coverage_at']['0.98']['coverage']:.3f} |",
            flush=True,
        )

    print("| models, fuser | macro-F1 | coverage | precision (SE) | pass | oracle coverage at 0.98 |")
    print("|---|---|---|---|---|---|")
    score("refit, refit", refit.probas, model.fuser)
    score("fold average, refit", folds, model.fuser)
    score("refit, fold vote", refit.probas, vote)
    score("fold average, fold vote", folds, vote)


if __name__ == "__main__":
    main()

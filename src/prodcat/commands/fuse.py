"""``prodcat fuse``: train, evaluate and apply a fusion model on a folder (or table) of model outputs.

    prodcat fuse train PRED_DIR --out FUSER_DIR --models text_camembert,image_swin --method paper-mlp
    prodcat fuse evaluate FUSER_DIR PRED_DIR --out DIR
    prodcat fuse predict FUSER_DIR PRED_DIR --out FILE
    prodcat fuse table PRED_DIR --text text_camembert --image image_swin --out DIR   # the paper's Table 1

PRED_DIR is a model-outputs folder (``index.csv``, ``classes.json``, ``<model>.npy``) or a ``.parquet`` /
``.csv`` table with ``<model>/<class>`` columns (see :mod:`prodcat.predictions`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from prodcat.commands.common import fail

app = typer.Typer(
    help="Decision-level fusion of model outputs (the paper's late fusion).", no_args_is_help=True
)

PredDir = Annotated[Path, typer.Argument(help="Model-outputs folder or .parquet/.csv probability table.")]
FuserDir = Annotated[Path, typer.Argument(help="Folder written by `prodcat fuse train`.")]
LabelCol = Annotated[
    str | None,
    typer.Option(
        "--label-column", "--label-col", help="Label column of index.csv (default: label, else prdtypecode)."
    ),
]


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise fail(f"--param expects key=value, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _build(
    method: str,
    *,
    classes: list[str],
    n_models: int,
    n_classes: int,
    params: dict[str, Any],
    progress: bool = True,
) -> Any:
    """The registered fuser ``method`` told the block structure (decision-level) or block sizes (feature-level)."""
    from prodcat.registry import available, create

    if method not in available("fusion"):
        raise fail(f"unknown method {method!r}; available: {', '.join(available('fusion'))}")
    accepted = set(create("fusion", method).get_params(deep=False)) | (
        {"members"} if method == "ensemble" else set()
    )
    structure: dict[str, Any] = {"classes": classes}
    if method == "ensemble" or "n_models" in accepted:
        structure["n_models"] = n_models
    elif "block_sizes" in accepted:
        structure["block_sizes"] = [n_classes] * n_models
    if "progress" in accepted:
        structure["progress"] = progress
    unknown = sorted(set(params) - accepted) if method != "ensemble" else []
    if unknown:
        raise fail(f"{method} has no option(s) {unknown}; options: {', '.join(sorted(accepted))}")
    try:
        return create("fusion", method, **{**structure, **params})
    except (TypeError, ValueError) as err:
        raise fail(f"cannot build {method}: {err}") from None


def _read(path: Path, *, models: list[str] | None = None, label_col: str | None = None) -> Any:
    from prodcat.predictions import ModelOutputsError, read_model_outputs

    try:
        return read_model_outputs(path, models=models, label_column=label_col)
    except ModelOutputsError as err:
        raise fail(str(err)) from None


def _load(path: Path) -> Any:
    from prodcat.predictions import ModelOutputsError, load_fuser

    try:
        return load_fuser(path)
    except (ModelOutputsError, ValueError, KeyError) as err:
        raise fail(f"cannot load fuser from {path}: {err}") from None


@app.command()
def train(
    pred_dir: PredDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Fuser folder to write.")],
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model names, in order (default: all models).")
    ] = None,
    method: Annotated[str, typer.Option(help="Registered fusion method.")] = "paper-mlp",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Method option key=value (JSON value), repeatable."),
    ] = None,
    label_col: LabelCol = None,
    cv: Annotated[
        int, typer.Option(help="Also report a K-fold out-of-fold macro-F1 estimate (0: skip).")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the --cv folds.")] = 42,
) -> None:
    """Fit a fuser on labelled model outputs and save it (JSON manifest + safetensors, no pickle)."""
    from prodcat.evaluate import macro_f1
    from prodcat.oof import oof_predict_proba
    from prodcat.predictions import Fuser, ModelOutputsError, save_fuser

    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    outputs = _read(pred_dir, models=names, label_col=label_col)
    try:
        y = outputs.require_labels()
    except ModelOutputsError as err:
        raise fail(str(err)) from None
    names = outputs.models
    X = outputs.stack(names)
    C = len(outputs.classes)
    params = _parse_params(param)
    est = _build(method, classes=outputs.classes, n_models=len(names), n_classes=C, params=params)
    singles = {
        m: macro_f1(y, np.asarray(outputs.classes, dtype=object)[outputs.probas[m].argmax(1)]) for m in names
    }
    for m, f in singles.items():
        typer.echo(f"{m:>24s}  macro-F1 {f:.4f}  (alone, on the training rows)")
    manifest: dict[str, Any] = {
        "trained_on": {"source": str(pred_dir), "n": outputs.n, "label_column": outputs.label_column},
        "params": params,
        "train_input_macro_f1": singles,
    }
    if cv:
        try:
            res = oof_predict_proba(est, X, y, n_splits=cv, seed=seed, refit=False, desc=f"{cv}-fold CV")
        except ValueError as err:
            raise fail(f"--cv {cv}: {err}") from None
        oof = macro_f1(y, res.classes[res.proba.argmax(1)])
        manifest["cv"] = {"n_splits": cv, "seed": seed, "oof_macro_f1": oof}
        typer.echo(f"{'fused (' + method + ')':>24s}  macro-F1 {oof:.4f}  ({cv}-fold out-of-fold estimate)")
    try:
        est.fit(X, y)
    except ValueError as err:
        raise fail(f"fitting {method} failed: {err}") from None
    fused = macro_f1(y, est.predict(X))
    manifest["train_macro_f1"] = fused
    typer.echo(
        f"{'fused (' + method + ')':>24s}  macro-F1 {fused:.4f}  (on its own training rows: optimistic)"
    )
    save_fuser(
        Fuser(estimator=est, models=names, classes=outputs.classes, method=method, manifest=manifest), out
    )
    typer.echo(f"saved fuser ({method} on {', '.join(names)}) to {out}")


@app.command()
def evaluate(
    fuser_dir: FuserDir,
    pred_dir: PredDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (metrics.json, CSV, PNG).")],
    label_col: LabelCol = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for the confidence interval.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Score a fuser on labelled outputs: macro-F1 + 95% bootstrap CI, each input alone, per class, confusions.

    Macro-F1 averages over the classes present in the labels (metrics.json's ``label_set`` says which and lists
    the fuser's classes the data lack); confusion.png only up to 60 classes, confusions.csv always."""
    from prodcat.evaluate import bootstrap_ci
    from prodcat.predictions import ModelOutputsError
    from prodcat.report import label_set, write_class_files

    fuser = _load(fuser_dir)
    outputs = _read(pred_dir, label_col=label_col)
    try:
        outputs = fuser.conform(outputs)
        y = outputs.require_labels()
        pred = fuser.predict(outputs)
    except ModelOutputsError as err:
        raise fail(f"{err}") from None
    classes = np.asarray(fuser.classes, dtype=object)
    ci = bootstrap_ci(y, pred, n_boot=n_boot, seed=seed)
    inputs: dict[str, dict[str, Any]] = {}
    for m in fuser.models:
        m_ci = bootstrap_ci(y, classes[outputs.probas[m].argmax(1)], n_boot=n_boot, seed=seed)
        inputs[m] = {"macro_f1": m_ci.value, "macro_f1_ci": [m_ci.low, m_ci.high]}
    best_input = max(inputs, key=lambda m: inputs[m]["macro_f1"])
    metrics = {
        "method": fuser.method,
        "fuser": str(fuser_dir),
        "data": str(pred_dir),
        "n": outputs.n,
        "macro_f1": ci.value,
        "macro_f1_ci": [ci.low, ci.high],
        "confidence": ci.confidence,
        "n_boot": n_boot,
        "accuracy": float(np.mean(pred == y)),
        "input_models": inputs,
        "best_input": best_input,
        "gain_over_best_input": ci.value - inputs[best_input]["macro_f1"],
        "label_set": label_set(np.asarray(y), classes),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    write_class_files(
        np.asarray(y), np.asarray(pred), classes, out, title=f"{fuser.method} on {pred_dir.name}"
    )
    for m, v in inputs.items():
        lo, hi = v["macro_f1_ci"]
        typer.echo(f"{m:>24s}  macro-F1 {v['macro_f1']:.4f}  [{lo:.4f}, {hi:.4f}]")
    typer.echo(
        f"{'fused (' + fuser.method + ')':>24s}  macro-F1 {ci.value:.4f}  [{ci.low:.4f}, {ci.high:.4f}]"
    )
    ls = metrics["label_set"]
    absent = len(ls["model_classes_absent_from_data"])
    typer.echo(
        f"n = {outputs.n}; macro-F1 over the {ls['n_classes_averaged']} classes present"
        + (f" ({absent} of the fuser's classes absent: not averaged)" if absent else "")
        + f"; gain over {best_input}: {metrics['gain_over_best_input']:+.4f}; wrote {out}"
    )


@app.command()
def predict(
    fuser_dir: FuserDir,
    pred_dir: PredDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output table (.csv, .tsv or .parquet).")],
    label_col: LabelCol = None,
) -> None:
    """Write fused predictions: index columns, prediction, confidence and fused/<class> probabilities."""
    from prodcat.predictions import ModelOutputsError, predictions_table, write_table

    fuser = _load(fuser_dir)
    outputs = _read(pred_dir, label_col=label_col)
    try:
        proba = fuser.predict_proba(outputs)
        pred = fuser.predict(outputs)
    except ModelOutputsError as err:
        raise fail(str(err)) from None
    table = predictions_table(outputs, proba, fuser.classes)
    table["prediction"] = pred  # the fuser's own decision (a vote for paper-mlp / ensembles)
    try:
        write_table(table, out)
    except ValueError as err:
        raise fail(str(err)) from None
    typer.echo(f"wrote {len(table)} predictions to {out}")


def _cv_predict(est: Any, X: Any, y: np.ndarray, *, n_splits: int, seed: int, desc: str) -> np.ndarray:
    """Out-of-fold labels of clones of ``est`` (each row predicted by a model that never saw it)."""
    from sklearn.base import clone
    from tqdm.auto import tqdm

    from prodcat.splits import kfold_indices

    pred = np.empty(len(y), dtype=object)
    take = (lambda A, i: {k: v[i] for k, v in A.items()}) if isinstance(X, dict) else (lambda A, i: A[i])
    for tr, te in tqdm(list(kfold_indices(y.tolist(), n_splits=n_splits, seed=seed)), desc=desc, leave=False):
        model = clone(est).fit(take(X, tr), y[tr])
        pred[te] = model.predict(take(X, te))
    return pred


@app.command()
def table(
    pred_dir: PredDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for table1.csv / table1.md.")],
    text: Annotated[str, typer.Option(help="Text model name in PRED_DIR.")],
    image: Annotated[str, typer.Option(help="Image model name in PRED_DIR.")],
    method: Annotated[str, typer.Option(help="Decision-level fusion method.")] = "paper-mlp",
    members: Annotated[
        str | None, typer.Option(help="Ensemble members, e.g. 'paper-mlp+logistic' (default: built-in).")
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            help="Folder of <modality>.npy (n, d) embeddings on the same rows: adds feature-level fusion."
        ),
    ] = None,
    feature_method: Annotated[str, typer.Option(help="Feature-level method.")] = "feature-concat",
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the learned rows.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of folds and bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 1000,
    label_col: LabelCol = None,
) -> None:
    """The paper's Table 1 on your data: text alone, image alone, feature-level fusion, decision-level fusion,
    ensemble — macro-F1 with 95% bootstrap intervals; learned rows are K-fold out-of-fold inside PRED_DIR."""
    from prodcat.evaluate import table1
    from prodcat.predictions import ModelOutputsError
    from prodcat.registry import create

    outputs = _read(pred_dir, models=[text, image], label_col=label_col)
    try:
        y = outputs.require_labels()
    except ModelOutputsError as err:
        raise fail(str(err)) from None
    classes = np.asarray(outputs.classes, dtype=object)
    X = outputs.stack([text, image])
    C = len(classes)
    rows: dict[str, Any] = {
        "text alone": classes[outputs.probas[text].argmax(1)],
        "image alone": classes[outputs.probas[image].argmax(1)],
    }
    if embeddings is not None:
        blocks = {p.stem: np.load(p, allow_pickle=False) for p in sorted(Path(embeddings).glob("*.npy"))}
        bad = {k: v.shape for k, v in blocks.items() if v.ndim != 2 or len(v) != outputs.n}
        if not blocks or bad:
            raise fail(
                f"{embeddings}: need <modality>.npy arrays of shape ({outputs.n}, d); got {bad or 'none'}"
            )
        try:
            feat = create("fusion", feature_method, classes=outputs.classes)
        except KeyError as err:
            raise fail(str(err)) from None
        rows["feature-level fusion"] = _cv_predict(
            feat, blocks, y, n_splits=folds, seed=seed, desc=feature_method
        )
    fuser = _build(method, classes=outputs.classes, n_models=2, n_classes=C, params={}, progress=False)
    rows["decision-level fusion"] = _cv_predict(fuser, X, y, n_splits=folds, seed=seed, desc=method)
    ens_params = {"members": members} if members else {}
    ens = _build("ensemble", classes=outputs.classes, n_models=2, n_classes=C, params=ens_params)
    rows["ensemble"] = _cv_predict(ens, X, y, n_splits=folds, seed=seed, desc="ensemble")
    result = table1(y, rows, classes=outputs.classes, reference="text alone", n_boot=n_boot, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    result.to_csv(out / "table1.csv")
    lines = ["| method | macro-F1 | 95% CI | delta vs text |", "|---|---|---|---|"]
    for name, r in result.iterrows():
        lines.append(
            f"| {name} | {r['macro_f1']:.4f} | {r['ci_low']:.4f}-{r['ci_high']:.4f} | {r['delta']:+.4f} |"
        )
    (out / "table1.md").write_text("\n".join(lines) + "\n")
    typer.echo("\n".join(lines))
    typer.echo(f"n = {outputs.n}; learned rows are {folds}-fold out-of-fold; wrote {out}")

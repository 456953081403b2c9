"""``prodcat audit`` and ``prodcat audit-probs``: label-noise audit of a catalog or of saved model outputs.

Both write, under ``--out``: ``issues.csv`` (suspected mislabels, most likely first), ``per_class.csv``,
``confusions.csv``, ``summary.json`` and ``review.html`` (static, offline, paginated; see :mod:`prodcat.audit`).

- ``prodcat audit CATALOG --out DIR``: 4-fold out-of-fold probabilities (the paper's setting) of a text model
  (``--text-model``, default ``tfidf``) and an image model (frozen ``--image-embedder`` + logistic regression),
  fused by ``--fusion`` (default ``mean``); the OOF probabilities are saved to ``DIR/probas`` in the model-outputs
  layout so that ``--model DIR/probas`` re-audits in seconds.
- ``prodcat audit CATALOG --model MODEL_DIR --out DIR``: ``MODEL_DIR`` is either a trained prodcat bundle, whose
  model configuration (unfitted clones of its modality models and fuser) is re-fitted out-of-fold on the catalog so
  that no product is scored by a model trained on it, or a model-outputs folder of out-of-sample probabilities
  (``index.csv`` with product ids, ``classes.json``, ``<modality>_<model>.npy``) used as given.
- ``prodcat audit-probs PRED_DIR --out DIR``: no catalog; labels from ``PRED_DIR/index.csv``.

Mount in ``prodcat.cli`` with ``app.add_typer(audit_app)`` (no name: both commands become top-level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from prodcat.commands.common import (
    Encoding,
    IdCol,
    ImageCol,
    LabelCol,
    TextCols,
    column_options,
    fail,
    read_catalog_or_fail,
)

app = typer.Typer(help="Label-noise audit (confident learning).", no_args_is_help=True, add_completion=False)

MODALITIES = ("text", "image")
ID_COLUMNS = ("id", "productid", "product_id", "sku")

Out = Annotated[Path, typer.Option("--out", help="Output folder (created).")]
FlagOn = Annotated[str, typer.Option(help="Source whose issues are listed: text, image, fusion, any or all.")]
FilterBy = Annotated[
    str,
    typer.Option(
        help="cleanlab filter_by: prune_by_noise_rate, prune_by_class, both, "
        "confident_learning, predicted_neq_given, low_normalized_margin, "
        "low_self_confidence."
    ),
]
RankBy = Annotated[
    str, typer.Option(help="Ranking score: self_confidence, normalized_margin, confidence_weighted_entropy.")
]
Fusion = Annotated[
    str,
    typer.Option(
        help="'mean' of the modality probabilities, or a registered fusion method "
        "(trained out-of-fold on the modality probabilities)."
    ),
]
Folds = Annotated[int, typer.Option(help="Folds for out-of-fold probabilities (the paper uses 4).")]
Thumbs = Annotated[
    str, typer.Option(help="Review-page images: copy (thumbs/ folder), embed (base64) or none.")
]


def build_models(
    *,
    text_model: str = "tfidf",
    image_embedder: str = "efficientnet-lite0",
    cache_dir: str | None = "auto",
    seed: int = 42,
) -> dict[str, Any]:
    """The per-modality estimators used when no ``--model`` is given (unfitted; cloned for every fold)."""
    from prodcat.models import EmbeddingClassifier
    from prodcat.registry import create

    text = create("text-model", text_model)
    if "class_weight" in text.get_params(deep=False):
        # Confident learning wants posterior-like probabilities; class-balanced training (tfidf's default, good
        # for macro-F1) inflates rare classes and flagged more clean rows on the synthetic catalog.
        text.set_params(class_weight=None)
    return {
        "text": text,
        "image": EmbeddingClassifier(
            embedder=image_embedder,
            column="image",
            cache_dir=None if cache_dir in (None, "", "none") else cache_dir,
            random_state=seed,
        ),
    }


def fuse(
    probas: dict[str, np.ndarray],
    labels: np.ndarray,
    *,
    method: str | Any = "mean",
    n_splits: int = 4,
    seed: int = 42,
) -> np.ndarray:
    """(n, C) fused probabilities of the modality probabilities (all in the same class order).

    ``"mean"`` averages them (nothing is trained); any other name is a registered fusion estimator, and an
    estimator object is used as is; both are trained out-of-fold on the concatenated probabilities so that every
    row's fused probabilities are out-of-sample.
    """
    arrays = [probas[k] for k in probas]
    if method == "mean":
        return np.mean(arrays, axis=0)
    from prodcat.oof import align_proba, oof_predict_proba
    from prodcat.registry import create

    res = oof_predict_proba(
        create("fusion", method) if isinstance(method, str) else method,
        np.hstack(arrays),
        labels,
        n_splits=n_splits,
        seed=seed,
        refit=False,
        desc="fusion folds",
    )
    return align_proba(res.proba, res.classes, np.unique(labels))


def bundle_models(model_dir: Path) -> tuple[dict[str, Any], Any]:
    """Unfitted clones of a trained bundle's modality models (keyed ``text``/``image``, or ``role:name`` when a
    modality has several) and of its fuser."""
    from sklearn.base import clone

    from prodcat.bundle import load_model

    trained, _ = load_model(model_dir)
    roles = [role for _, role, _ in trained.models]
    models = {
        (role if roles.count(role) == 1 else f"{role}:{name}"): clone(est)
        for name, role, est in trained.models
    }
    return models, clone(trained.fuser)


def oof_probas(
    models: dict[str, Any], df: pd.DataFrame, labels: np.ndarray, *, folds: int, seed: int
) -> dict[str, np.ndarray]:
    """Source name -> (n, C) ``folds``-fold out-of-fold probabilities, columns in ``np.unique(labels)`` order."""
    from prodcat.oof import align_proba, oof_predict_proba

    probas = {}
    for name, est in models.items():
        typer.echo(f"{name}: {folds}-fold out-of-fold probabilities")
        res = oof_predict_proba(est, df, labels, n_splits=folds, seed=seed, refit=False, desc=name)
        probas[name] = align_proba(res.proba, res.classes, np.unique(labels))
    return probas


def modality_probas(arrays: dict[str, np.ndarray], selected: dict[str, str | None]) -> dict[str, np.ndarray]:
    """Group ``<modality>_<model>`` arrays per modality, averaging the selected models (default: all of them)."""
    out: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        names = [n for n in arrays if n.startswith(f"{modality}_")]
        wanted = selected.get(modality)
        if wanted:
            picked = [f"{modality}_{m.strip()}" for m in wanted.split(",") if m.strip()]
            unknown = [n for n in picked if n not in arrays]
            if unknown:
                raise ValueError(f"unknown {modality} model(s) {unknown}; available: {names}")
            names = picked
        if names:
            out[modality] = np.mean([np.asarray(arrays[n], dtype=np.float64) for n in names], axis=0)
            typer.echo(f"{modality}: mean of {', '.join(names)}")
    if not out:
        raise ValueError(f"no text_*/image_* arrays among {list(arrays)}")
    return out


def _id_column(columns: Any) -> str:
    for c in ID_COLUMNS:
        if c in columns:
            return c
    raise ValueError(f"no product id column in index.csv (tried {', '.join(ID_COLUMNS)})")


def _run_audit(
    labels: np.ndarray,
    probas: dict[str, np.ndarray],
    classes: np.ndarray,
    out: Path,
    *,
    fusion: str | Any,
    flag_on: str,
    filter_by: str,
    rank_by: str,
    folds: int,
    seed: int,
    products: pd.DataFrame | None,
    thumbnails: str,
    title: str,
) -> None:
    from prodcat.audit import audit_labels, write_audit

    if len(probas) > 1:
        probas = {**probas, "fusion": fuse(probas, labels, method=fusion, n_splits=folds, seed=seed)}
    elif flag_on == "fusion":
        flag_on = next(iter(probas))
    result = audit_labels(
        labels,
        probas,
        classes=classes,
        flag_on=flag_on,
        filter_by=filter_by,
        rank_by=rank_by,
        products=products,
    )
    paths = write_audit(result, out, thumbnails=thumbnails, title=title)
    s = result.summary
    typer.echo(
        f"{s['n_flagged']} of {s['n_products']} products flagged ({100 * s['flagged_rate']:.1f}%) on "
        f"{s['flag_on']}; per source: {s['flagged_per_source']}"
    )
    typer.echo(f"review page: {paths['review.html']}")


@app.command("audit")
def audit(
    catalog: Annotated[Path, typer.Argument(help="Labelled catalog file or Rakuten challenge folder.")],
    out: Out,
    model: Annotated[
        Path | None,
        typer.Option(
            help="A trained prodcat bundle (its models are re-fitted out-of-fold on CATALOG) or a model-outputs "
            "folder of out-of-sample probabilities (index.csv with product ids), instead of the default models."
        ),
    ] = None,
    text_columns: TextCols = None,
    label_column: LabelCol = None,
    image_column: ImageCol = None,
    id_column: IdCol = None,
    encoding: Encoding = None,
    text_model: Annotated[str, typer.Option(help="Registered text model (text-model registry).")] = "tfidf",
    image_embedder: Annotated[str, typer.Option(help="Registered image embedder for the image model.")] = (
        "efficientnet-lite0"
    ),
    text: Annotated[
        str | None, typer.Option(help="Model-outputs --model: text models to average (default all).")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Model-outputs --model: image models to average (default all).")
    ] = None,
    fusion: Annotated[
        str | None,
        typer.Option(
            help="'mean' of the modality probabilities or a registered fusion method (trained out-of-fold); "
            "default: the bundle's own fuser with a bundle --model, else 'mean'."
        ),
    ] = None,
    folds: Folds = 4,
    flag_on: FlagOn = "fusion",
    filter_by: FilterBy = "prune_by_noise_rate",
    rank_by: RankBy = "self_confidence",
    cache_dir: Annotated[
        str | None, typer.Option(help="Embedding cache folder: 'auto' (default location) or 'none'.")
    ] = "auto",
    thumbnails: Thumbs = "copy",
    seed: Annotated[int, typer.Option(help="Seed of the folds and models.")] = 42,
) -> None:
    """Find products that are probably filed in the wrong category, with a review page of their images."""
    columns = column_options(text_columns, label_column, image_column, id_column, encoding)
    df = read_catalog_or_fail(catalog, columns, require_label=True, echo=False)
    labels = df["label"].astype(str).to_numpy()
    classes = np.unique(labels)
    typer.echo(f"{len(df)} products, {len(classes)} classes")
    fuser: str | Any = fusion or "mean"
    try:
        if model is not None and (model / "manifest.json").is_file():
            models, bundle_fuser = bundle_models(model)
            fuser = fusion or bundle_fuser
            probas = oof_probas(models, df, labels, folds=folds, seed=seed)
        elif model is not None:
            probas = _catalog_probas_from_outputs(model, df, classes, text=text, image=image)
        else:
            models = build_models(
                text_model=text_model, image_embedder=image_embedder, cache_dir=cache_dir, seed=seed
            )
            probas = oof_probas(models, df, labels, folds=folds, seed=seed)
            _save_probas(
                out / "probas",
                df,
                classes,
                {f"text_{text_model}": probas["text"], f"image_{image_embedder}": probas["image"]},
            )
        _run_audit(
            labels,
            probas,
            classes,
            out,
            fusion=fuser,
            flag_on=flag_on,
            filter_by=filter_by,
            rank_by=rank_by,
            folds=folds,
            seed=seed,
            products=df,
            thumbnails=thumbnails,
            title=f"Label audit: {catalog.resolve().parent.name}/{catalog.name}",
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise fail(str(e)) from None


def _catalog_probas_from_outputs(
    folder: Path, df: pd.DataFrame, classes: np.ndarray, *, text: str | None, image: str | None
) -> dict[str, np.ndarray]:
    """Per-modality probabilities of a model-outputs folder, re-ordered to the catalog rows by product id."""
    from prodcat.oof import align_proba
    from prodcat.predictions import read_model_outputs

    outputs = read_model_outputs(folder)
    id_col = _id_column(outputs.index.columns)
    pos = pd.Series(np.arange(outputs.n), index=outputs.index[id_col].to_numpy())
    missing = ~df["id"].isin(pos.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} catalog ids have no row in {folder / 'index.csv'}")
    rows = pos.loc[df["id"].to_numpy()].to_numpy()
    grouped = modality_probas(outputs.probas, {"text": text, "image": image})
    return {k: align_proba(v[rows], np.asarray(outputs.classes), classes) for k, v in grouped.items()}


def _save_probas(folder: Path, df: pd.DataFrame, classes: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    from prodcat.predictions import ModelOutputs, write_model_outputs

    index = pd.DataFrame({"id": df["id"].to_numpy(), "label": df["label"].astype(str).to_numpy()})
    write_model_outputs(ModelOutputs(index, [str(c) for c in classes], arrays, "label"), folder)


@app.command("audit-probs")
def audit_probs(
    pred_dir: Annotated[Path, typer.Argument(help="Model-outputs folder: index.csv, classes.json, *.npy.")],
    out: Out,
    text: Annotated[
        str | None, typer.Option(help="Text models to average, e.g. camembert (default all).")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Image models to average, e.g. swin (default all).")
    ] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column of index.csv.")] = None,
    fusion: Fusion = "mean",
    folds: Folds = 4,
    flag_on: FlagOn = "fusion",
    filter_by: FilterBy = "prune_by_noise_rate",
    rank_by: RankBy = "self_confidence",
    seed: Annotated[int, typer.Option(help="Seed of the fusion folds.")] = 42,
) -> None:
    """Audit the labels of a model-outputs folder (labels from index.csv; no catalog, no images)."""
    from prodcat.predictions import read_model_outputs

    try:
        outputs = read_model_outputs(pred_dir, label_column=label_column)
        labels = outputs.require_labels().astype(str)
        products = outputs.index.rename(columns={_id_column(outputs.index.columns): "id"})
        typer.echo(f"{len(labels)} products, {len(outputs.classes)} classes")
        probas = modality_probas(outputs.probas, {"text": text, "image": image})
        _run_audit(
            labels,
            probas,
            np.asarray(outputs.classes),
            out,
            fusion=fusion,
            flag_on=flag_on,
            filter_by=filter_by,
            rank_by=rank_by,
            folds=folds,
            seed=seed,
            products=products,
            thumbnails="none",
            title=f"Label audit: {pred_dir.name}",
        )
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None

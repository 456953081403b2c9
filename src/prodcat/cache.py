"""On-disk stores for embeddings and out-of-fold probabilities, keyed by content hashes.

Frozen backbones are the slow part of every run, so their outputs are kept per item: a text is keyed by the
SHA-256 of its UTF-8 string, an image by the SHA-256 of its file bytes, and every key lives under the backbone's
fingerprint. K-fold subsets, re-runs and later prediction runs on overlapping catalogs therefore reuse vectors.

Layout (one folder per backbone, append-only chunk files written atomically)::

    <cache_dir>/embeddings/<backbone-slug>-<hash8>/<uuid>.npz   keys (n,) S64, vectors (n, dim) f4, checksum
    <cache_dir>/arrays/<namespace>/<key>.npz                     named arrays + checksum (e.g. OOF probabilities)

A chunk whose checksum does not match (or that cannot be read) is reported with a warning, deleted, and its
items are recomputed. Writers never collide: each chunk has a fresh name and appears via ``os.replace``.
``cache_dir=None`` everywhere means "no caching"; ``"auto"`` means :func:`default_cache_dir`.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

CACHE_ENV = "PRODCAT_CACHE_DIR"
_CHUNK_ROWS = 4096  # vectors per chunk file: an interrupted run keeps what it flushed


def default_cache_dir() -> Path:
    """``$PRODCAT_CACHE_DIR`` when set, else ``~/.cache/prodcat``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prodcat"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """``None`` -> no caching; ``"auto"`` -> :func:`default_cache_dir`; anything else -> that path."""
    if cache_dir is None:
        return None
    if isinstance(cache_dir, str) and cache_dir == "auto":
        return default_cache_dir()
    return Path(cache_dir).expanduser()


# ---------------------------------------------------------------------------------------------------------------
# Content keys
# ---------------------------------------------------------------------------------------------------------------


def text_key(text: str) -> str:
    """SHA-256 hex digest of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def image_key(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> str | None:
    """SHA-256 hex digest of an image's bytes (``source`` is the bytes or a file path).

    Returns ``None`` when the file cannot be read: such items are not cached (the embedder reports them).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def content_key(item: Any, *, modality: str = "text") -> str | None:
    """Content hash of one item: the string for ``modality="text"``, the file bytes for ``"image"``.

    Bytes are hashed as they are in both modalities. ``None`` (missing item or unreadable file) means "do not cache".
    """
    if item is None or (isinstance(item, float) and np.isnan(item)):
        return None
    if isinstance(item, bytes | bytearray | memoryview):
        return image_key(item)
    if modality == "image":
        return image_key(item)
    if modality != "text":
        raise ValueError(f"modality must be 'text' or 'image', got {modality!r}")
    return text_key(str(item))


def _slug(name: str) -> str:
    short = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:48] or "backbone"
    return f"{short}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _checksum(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays`` (order-independent), as an ``S64`` scalar."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return np.array(digest.hexdigest().encode(), dtype="S64")


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_verified(path: Path) -> dict[str, np.ndarray] | None:
    """All arrays of an ``.npz`` written with a ``checksum`` entry; ``None`` (plus a warning and removal of the
    file) when it is unreadable or its checksum does not match. A file that vanished returns ``None`` quietly."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in z.files if n != "checksum"}
            stored = z["checksum"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        _discard(path, f"unreadable ({type(err).__name__}: {err})")
        return None
    if stored.shape != () or stored.item() != _checksum(arrays).item():
        _discard(path, "checksum mismatch")
        return None
    return arrays


def _discard(path: Path, why: str) -> None:
    warnings.warn(f"prodcat cache: corrupt entry {path} ({why}); it will be recomputed", stacklevel=3)
    path.unlink(missing_ok=True)


#: Per embedding folder: ``{"chunks": {name: ((mtime_ns, size), key prefixes)}, "merged": ...}``. See
#: :meth:`EmbeddingStore._key_index`.
_KEY_INDEX: dict[Path, dict[str, Any]] = {}
_KEY_INDEX_LOCK = threading.Lock()


def _read_chunk_keys(chunk: Path) -> np.ndarray | None:
    """The ``keys`` array of one chunk file; ``None`` when it vanished or is unreadable (then discarded)."""
    try:
        with np.load(chunk, allow_pickle=False) as z:
            return np.asarray(z["keys"], dtype="S64")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        _discard(chunk, f"unreadable ({type(err).__name__})")
        return None


def _merge_index(
    merged: tuple[Any, ...] | None, signature: tuple[tuple[str, tuple[int, int]], ...], known: dict[str, Any]
) -> tuple[Any, ...]:
    """The sorted key index of the chunks in ``signature``: ``(signature, names, prefixes, chunk, row)``.

    When chunks were only added since ``merged`` (a run writing its misses), their keys are inserted into the
    sorted arrays (a copy, O(items)); otherwise everything is sorted again.
    """
    names = [name for name, _ in signature]
    if merged is not None and set(merged[0]) <= set(signature):
        old_names, prefixes, chunk_of, row_of = merged[1], merged[2], merged[3], merged[4]
        remap = np.array([names.index(n) for n in old_names], dtype=np.int32)
        chunk_of = remap[chunk_of] if len(chunk_of) else chunk_of
        added = [n for n in names if n not in set(old_names)]
    else:
        prefixes, chunk_of, row_of = np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int32)
        added = names
    if added:
        new = [known[n][1] for n in added]
        p = np.concatenate(new)
        c = np.repeat(np.array([names.index(n) for n in added], dtype=np.int32), [len(x) for x in new])
        r = np.concatenate([np.arange(len(x), dtype=np.int32) for x in new])
        order = np.argsort(p, kind="stable")
        p, c, r = p[order], c[order], r[order]
        at = np.searchsorted(prefixes, p)
        prefixes, chunk_of, row_of = (
            np.insert(prefixes, at, p),
            np.insert(chunk_of, at, c),
            np.insert(row_of, at, r),
        )
    return signature, names, prefixes, chunk_of, row_of


def _prefix64(ids: np.ndarray) -> np.ndarray:
    """The first 16 hex digits of each ``S64`` hex id as ``uint64`` (the index key; full ids are compared on a
    hit)."""
    if not len(ids):
        return np.zeros(0, dtype=np.uint64)
    head = np.frombuffer(np.ascontiguousarray(ids).tobytes(), dtype="S1").reshape(len(ids), 64)[:, :16]
    digits = head.view(np.uint8).astype(np.uint64)
    digits = np.where(digits >= ord("a"), digits - ord("a") + 10, digits - ord("0"))
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    return np.bitwise_or.reduce(digits << shifts, axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Embedding store
# ---------------------------------------------------------------------------------------------------------------


ComputeFn = Callable[[list[Any]], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


class EmbeddingStore:
    """Per-item vectors of one backbone, on disk, keyed by content hash.

    Parameters
    ----------
    cache_dir : root folder, ``"auto"`` for :func:`default_cache_dir`, or ``None`` for a pass-through store that
        computes everything and writes nothing.
    backbone_name : fingerprint of the backbone (name plus anything that changes its outputs: version, options).
        Vectors of different fingerprints never mix.

    Examples
    --------
    >>> store = EmbeddingStore("auto", "use-multilingual@0.2.1")       # doctest: +SKIP
    >>> vecs = store.get_or_compute(texts, [text_key(t) for t in texts], model.embed, batch_size=64)
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None, backbone_name: str) -> None:
        root = resolve_cache_dir(cache_dir)
        self.backbone_name = backbone_name
        self.path = None if root is None else root / "embeddings" / _slug(backbone_name)
        self.hits = 0  # items served from disk by the last call
        self.misses = 0  # items computed by the last call

    # -- reading ------------------------------------------------------------------------------------------------
    def _key_index(self) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
        """``(chunks, prefixes, chunk, row)``: the 64-bit key prefixes of every stored item, sorted, with the chunk
        (index into ``chunks``) and row holding each.

        Chunks are immutable once written (fresh names, atomic replace), so each one's keys are read once per
        process and kept in :data:`_KEY_INDEX` (about 16 bytes per item); a lookup lists the folder and reads only
        the chunks it has not seen, instead of every chunk's keys (that cost grew with the cache). A file rewritten
        in place (another size or mtime) is read again. The merged index is rebuilt only when the set of chunks
        changes.
        """
        empty: tuple[list[Path], np.ndarray, np.ndarray, np.ndarray] = (
            [],
            np.zeros(0, np.uint64),
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
        )
        if self.path is None or not self.path.is_dir():
            return empty
        with _KEY_INDEX_LOCK:
            state = _KEY_INDEX.setdefault(self.path, {"chunks": {}, "merged": None})
            known = state["chunks"]
            seen: dict[str, tuple[int, int]] = {}
            for entry in os.scandir(self.path):
                if not entry.name.endswith(".npz"):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                stamp = (st.st_mtime_ns, st.st_size)
                if entry.name not in known or known[entry.name][0] != stamp:
                    keys = _read_chunk_keys(Path(entry.path))
                    if keys is None:
                        known.pop(entry.name, None)
                        continue
                    known[entry.name] = (stamp, _prefix64(keys))
                seen[entry.name] = stamp
            for gone in set(known) - set(seen):
                del known[gone]
            signature = tuple(sorted(seen.items()))
            merged = state["merged"]
            if merged is None or merged[0] != signature:
                state["merged"] = merged = _merge_index(merged, signature, known)
            return [self.path / n for n in merged[1]], merged[2], merged[3], merged[4]

    def lookup(self, keys: Sequence[str | None]) -> tuple[np.ndarray | None, np.ndarray]:
        """Vectors stored for ``keys``: ``(vectors (n, dim) or None when nothing matched, found (n,) bool)``.

        Only the chunks holding one of ``keys`` are read (and checksum-verified); a key stored in several chunks
        (two runs computed it at once) is served by one of them.
        """
        positions = np.array([i for i, k in enumerate(keys) if k is not None], dtype=np.int64)
        ids = np.array(
            [hashlib.sha256(str(keys[i]).encode()).hexdigest().encode() for i in positions.tolist()],
            dtype="S64",
        )
        found = np.zeros(len(keys), dtype=bool)
        vectors: np.ndarray | None = None
        chunks, prefixes, chunk_of, row_of = self._key_index()
        if not len(ids) or not len(prefixes):
            return vectors, found
        query = _prefix64(ids)
        last = np.searchsorted(prefixes, query, side="right") - 1  # the last entry with this prefix
        hit = (last >= 0) & (prefixes[np.maximum(last, 0)] == query)
        last, positions, ids = last[hit], positions[hit], ids[hit]
        for c in np.unique(chunk_of[last]).tolist():
            mine = chunk_of[last] == c
            arrays = _load_verified(chunks[c])
            if arrays is None or "vectors" not in arrays or "keys" not in arrays:
                continue
            rows = row_of[last[mine]]
            same = arrays["keys"][rows] == ids[mine]  # the full key, not only its 64-bit prefix
            vec = arrays["vectors"]
            if vectors is None:
                vectors = np.zeros((len(keys), vec.shape[1]), dtype=np.float32)
            elif vec.shape[1] != vectors.shape[1]:
                _discard(chunks[c], f"dimension {vec.shape[1]} != {vectors.shape[1]}")
                continue
            targets = positions[mine][same]
            vectors[targets] = vec[rows[same]]
            found[targets] = True
        return vectors, found

    # -- writing ------------------------------------------------------------------------------------------------
    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Append ``vectors`` (n, dim) under ``keys`` (n,) as one or more new chunk files (no-op without a folder)."""
        if self.path is None or len(keys) == 0:
            return
        ids = np.array([hashlib.sha256(k.encode()).hexdigest().encode() for k in keys], dtype="S64")
        vec = np.ascontiguousarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), _CHUNK_ROWS):
            k, v = ids[start : start + _CHUNK_ROWS], vec[start : start + _CHUNK_ROWS]
            arrays = {"keys": k, "vectors": v}
            _atomic_savez(self.path / f"{uuid.uuid4().hex}.npz", **arrays, checksum=_checksum(arrays))

    def clear(self) -> int:
        """Delete this backbone's chunks; returns how many files were removed."""
        chunks = [] if self.path is None else list(self.path.glob("*.npz"))
        for chunk in chunks:
            chunk.unlink(missing_ok=True)
        return len(chunks)

    # -- the main entry point -----------------------------------------------------------------------------------
    def get_or_compute_masked(
        self,
        items: Sequence[Any],
        keys: Sequence[str | None],
        compute_fn: ComputeFn,
        *,
        batch_size: int = 64,
        progress: bool = False,
        desc: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``items``, computing (in batches) and storing only those not cached.

        Parameters
        ----------
        items : n items handed to ``compute_fn`` on a miss.
        keys : n content keys (see :func:`content_key`); ``None`` means "never cache this item".
        compute_fn : list of items -> ``(b, dim)`` float array, or ``((b, dim), ok (b,) bool)`` where rows with
            ``ok=False`` (e.g. undecodable images) are returned as computed but not stored.

        Returns
        -------
        vectors : (n, dim) float32; ok : (n,) bool.
        """
        if len(items) != len(keys):
            raise ValueError(f"{len(items)} items but {len(keys)} keys")
        n = len(items)
        cached, found = self.lookup(keys) if self.path is not None else (None, np.zeros(n, dtype=bool))
        # Identical items are computed once: the first position of each missing key does the work.
        first: dict[str, int] = {}
        todo: list[int] = []
        for i in np.flatnonzero(~found).tolist():
            k = keys[i]
            if k is None or k not in first:
                todo.append(i)
                if k is not None:
                    first[k] = i
        self.hits, self.misses = int(found.sum()), len(todo)
        ok = found.copy()
        vectors = cached
        label = desc or self.backbone_name
        for idx, vec, good in self._compute(items, keys, todo, compute_fn, batch_size, progress, label):
            if vectors is None:
                vectors = np.zeros((n, vec.shape[1]), dtype=np.float32)
            vectors[idx], ok[idx] = vec, good
        if vectors is None:  # nothing to do and nothing cached: n == 0 or every key is None with no items
            return np.zeros((n, 0), dtype=np.float32), ok
        # Duplicates of a computed key take its row.
        for i in np.flatnonzero(~found).tolist():
            k = keys[i]
            if k is not None and first[k] != i:
                vectors[i], ok[i] = vectors[first[k]], ok[first[k]]
        return vectors, ok

    def _compute(
        self,
        items: Sequence[Any],
        keys: Sequence[str | None],
        todo: list[int],
        compute_fn: ComputeFn,
        batch_size: int,
        progress: bool,
        desc: str,
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """Yield ``(positions, vectors (b, dim), ok (b,))`` per batch of ``todo``, storing good rows in chunks."""
        pending_keys: list[str] = []
        pending_vecs: list[np.ndarray] = []
        try:
            with tqdm(total=len(todo), desc=desc, disable=not progress or not todo, leave=False) as bar:
                for start in range(0, len(todo), batch_size):
                    idx = todo[start : start + batch_size]
                    vec, good = _split_output(compute_fn([items[i] for i in idx]), len(idx))
                    for j, i in enumerate(idx):
                        key = keys[i]
                        if good[j] and key is not None:
                            pending_keys.append(key)
                            pending_vecs.append(vec[j])
                    if len(pending_keys) >= _CHUNK_ROWS:
                        self.put(pending_keys, np.stack(pending_vecs))
                        pending_keys, pending_vecs = [], []
                    bar.update(len(idx))
                    yield idx, vec, good
        finally:  # an interrupted run keeps what it computed
            if pending_keys:
                self.put(pending_keys, np.stack(pending_vecs))

    def get_or_compute(
        self,
        items: Sequence[Any],
        keys: Sequence[str | None],
        compute_fn: ComputeFn,
        *,
        batch_size: int = 64,
        progress: bool = False,
        desc: str | None = None,
    ) -> np.ndarray:
        """Like :meth:`get_or_compute_masked` but returns only the (n, dim) float32 vectors."""
        return self.get_or_compute_masked(
            items, keys, compute_fn, batch_size=batch_size, progress=progress, desc=desc
        )[0]


def is_missing(item: Any) -> bool:
    """``True`` for an absent item: ``None``, NaN, or a string that is empty once stripped."""
    if item is None:
        return True
    if isinstance(item, float):
        return bool(np.isnan(item))
    if isinstance(item, str):
        return not item.strip()
    return False


def cached_embed(
    embedder: Any,
    items: Sequence[Any],
    *,
    modality: str = "text",
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed ``items`` with ``embedder`` through an :class:`EmbeddingStore` (none when ``cache_dir`` is None).

    Missing items (:func:`is_missing`) are not embedded: they get a zero row and ``ok=False``, as do items the
    embedder flags (an image embedder's ``(vectors, ok)`` output).

    Parameters
    ----------
    embedder : object with ``dim``, ``embed(items)`` and ``fingerprint`` (or ``name``); when it has
        ``embed_with_mask(items) -> (vectors, ok)`` that is used instead, so failed items are flagged.
    items : n texts (``modality="text"``) or image paths/bytes (``"image"``).

    Returns
    -------
    vectors : (n, dim) float32; ok : (n,) bool, True where the row holds a real embedding.
    """
    n = len(items)
    present = np.array([not is_missing(it) for it in items], dtype=bool)
    vectors = np.zeros((n, int(embedder.dim)), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(present)
    if idx.size:
        sub = [items[i] for i in idx.tolist()]
        keys = [content_key(it, modality=modality) for it in sub]
        store = EmbeddingStore(cache_dir, getattr(embedder, "fingerprint", None) or embedder.name)
        # Image embedders flag undecodable items through ``embed_with_mask``; those rows are not cached.
        compute = getattr(embedder, "embed_with_mask", None) or embedder.embed
        vec, good = store.get_or_compute_masked(
            sub, keys, compute, batch_size=batch_size, progress=progress, desc=embedder.name
        )
        vectors[idx], ok[idx] = vec, good
    return vectors, ok


def _split_output(out: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(out, tuple):
        vec, good = out
        good = np.asarray(good, dtype=bool)
    else:
        vec, good = out, np.ones(n, dtype=bool)
    vec = np.asarray(vec, dtype=np.float32)
    if vec.ndim != 2 or vec.shape[0] != n or good.shape != (n,):
        raise ValueError(f"compute_fn returned shape {vec.shape} (mask {good.shape}) for {n} items")
    return vec, good


# ---------------------------------------------------------------------------------------------------------------
# Whole-array store (OOF probabilities and other per-run results)
# ---------------------------------------------------------------------------------------------------------------


class ArrayStore:
    """Named numpy arrays stored under a string key (e.g. a hash of data + estimator + folds), checksummed.

    ``cache_dir=None`` makes every ``load`` miss and every ``save`` a no-op.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None, namespace: str) -> None:
        root = resolve_cache_dir(cache_dir)
        self.path = None if root is None else root / "arrays" / _slug(namespace)

    def _file(self, key: str) -> Path | None:
        return None if self.path is None else self.path / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"

    def load(self, key: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray] | None:
        """The arrays ``names`` (all when None) saved under ``key``, or ``None`` on a miss or a corrupt entry
        (warned, removed)."""
        path = self._file(key)
        if path is None or not path.exists():
            return None
        arrays = _load_verified(path)
        if arrays is None or any(n not in arrays for n in names or ()):
            return None
        return arrays if names is None else {n: arrays[n] for n in names}

    def save(self, key: str, **arrays: np.ndarray) -> None:
        """Store ``arrays`` under ``key`` atomically (object arrays are refused: nothing is pickled)."""
        path = self._file(key)
        if path is None:
            return
        ordered = {n: np.asarray(a) for n, a in arrays.items()}
        for n, a in ordered.items():
            if a.dtype == object:
                raise TypeError(f"array {n!r} has dtype object; convert it (e.g. to str) before caching")
        _atomic_savez(path, **ordered, checksum=_checksum(ordered))

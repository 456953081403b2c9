"""The skops allow-list is exact: what prodcat's own models save is on it, and nothing else loads."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prodcat import registry
from prodcat.catalog import read_catalog
from prodcat.config import ModelSpec, build_model, load_config
from prodcat.safe_io import ALLOWED, UnsafeContentError, audit, dumps_estimator, loads_estimator

# Weight-free stand-ins of the built-in configs' backbones (same estimator classes, tiny networks).
TINY_BACKBONE = {"text": "embed:test-tiny", "image": "embed:test-tiny"}
TINY_FINETUNE = {"stages": [[32, 1]], "batch_size": 16, "progress": False}
# ``hf:`` models fine-tune a tiny random BERT saved in a tmp folder (see tiny_hf.py) instead of the named one.
TINY_HF = {"epochs": 1, "batch_size": 16, "threads": 1, "progress": False}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tiny_hf import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def catalog(demo_catalog: Path) -> pd.DataFrame:
    return read_catalog(demo_catalog)[0].sample(120, random_state=0)


def nodes(data: bytes) -> set[tuple[str, str]]:
    """``(loader, module.name)`` of every node of a skops archive, read independently of :func:`audit`."""
    found: set[tuple[str, str]] = set()

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            if "__loader__" in item:
                found.add((item["__loader__"], f"{item['__module__']}.{item['__class__']}"))
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(json.loads(zipfile.ZipFile(io.BytesIO(data)).read("schema.json")))
    return found


def assert_on_list(data: bytes) -> None:
    off = {(loader, name) for loader, name in nodes(data) if name not in ALLOWED.get(loader, ())}
    assert not off, f"saved but not on the allow-list: {sorted(off)}"


def _config_specs() -> list[tuple[str, str, ModelSpec]]:
    """Every model of the built-in configs, once each (default and accurate share their text models)."""
    out: dict[tuple[str, str], tuple[list[str], str, ModelSpec]] = {}
    for config in ("default", "accurate", "paper-gpu"):
        cfg = load_config(config)
        for role, specs in (("text", cfg.text_models), ("image", cfg.image_models)):
            for spec in specs:
                entry = out.setdefault((role, spec.model_dump_json()), ([], role, spec))
                entry[0].append(config)
    return [("+".join(configs) + f":{role}:{spec.name}", role, spec) for configs, role, spec in out.values()]


@pytest.mark.parametrize(
    ("label", "role", "spec"), _config_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_builtin_config_model_saves_only_allowed_types(
    catalog: pd.DataFrame, label: str, role: str, spec: ModelSpec, request: pytest.FixtureRequest
) -> None:
    params = {k: v for k, v in spec.params.items() if k != "embedder_params"}
    if spec.name.startswith("embed:"):
        name = TINY_BACKBONE[role]
    elif spec.name.startswith("hf:"):  # HFTextClassifier with a bigger base model
        name, params = f"hf:{request.getfixturevalue('tiny_hf')}", {**params, **TINY_HF}
    elif spec.name.endswith("-top"):  # effnet-lite*-top: LiteTopClassifier with the ImageNet weights
        name = "test-tiny-lite-top"
    elif role == "image":  # torchvision:/timm:/*-finetune: ImageFineTuneClassifier with a bigger backbone
        name, params = "test-tiny-cnn", {**params, **TINY_FINETUNE}
    else:
        name = spec.name
    est = build_model(ModelSpec(name=name, params=params), modality=role, cache_dir=None, seed=0)
    data = dumps_estimator(est.fit(catalog, catalog["label"]))
    assert_on_list(data)
    np.testing.assert_allclose(
        loads_estimator(data).predict_proba(catalog), est.predict_proba(catalog), rtol=0, atol=1e-6
    )


REGISTERED = [
    ("text-model", "tfidf", {}),
    ("text-model", "tfidf", {"classifier": "sgd"}),  # "auto" on long texts (refused before, issue 16)
    ("text-model", "tfidf", {"classifier": "grouped"}),  # "auto" above 100 classes
    ("text-model", "embed:test-tiny", {"head": "lda"}),  # "auto" above 100 classes (refused before)
    ("text-model", "embed:test-tiny", {}),
    ("text-model", "embed:test-tiny", {"head": "mlp", "head_params": {"early_stopping": True}}),
    ("text-model", "embed:test-tiny", {"column": ["title", "description"]}),
    ("image-model", "embed:test-tiny", {"embedder_params": {"aspect": "auto"}}),
    ("image-model", "test-tiny-cnn", TINY_FINETUNE),
    ("image-model", "test-tiny-lite-top", {"max_epochs": 1}),
    ("image-model", "test-tiny-cnn", {**TINY_FINETUNE, "dcl": True, "dcl_regions": 2}),
    ("text-model", "hf:TINY", TINY_HF),  # TINY: the tiny_hf fixture's folder
]


@pytest.mark.parametrize(("kind", "name", "params"), REGISTERED)
def test_every_registered_model_saves_only_allowed_types(
    catalog: pd.DataFrame, kind: str, name: str, params: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    if name == "hf:TINY":
        name = f"hf:{request.getfixturevalue('tiny_hf')}"
    est = registry.create(kind, name, **params).fit(catalog, catalog["label"])
    data = dumps_estimator(est)
    assert_on_list(data)
    np.testing.assert_allclose(
        loads_estimator(data).predict_proba(catalog), est.predict_proba(catalog), rtol=0, atol=1e-6
    )


def test_registered_tables_are_covered() -> None:
    """A new registered model family must be added above (or to the same-class exceptions)."""
    # the same class as test-tiny-cnn (ImageFineTuneClassifier) with a bigger backbone
    image_finetune = {"torchvision:", "timm:", "efficientnet-lite0-finetune", "efficientnet-lite2-finetune"}
    image_finetune |= {"effnet-lite0-top", "effnet-lite2-top"}  # test-tiny-lite-top's class, ImageNet weights
    covered = {name.split(":")[0] + ":" if ":" in name else name for _, name, _ in REGISTERED}
    assert set(registry.available("text-model")) <= covered
    assert set(registry.available("image-model")) <= covered | image_finetune


def test_every_registered_fusion_saves_through_its_json_state_table() -> None:
    """Fusers never go through skops: :func:`prodcat.fusion.from_state` builds only the classes of its table."""
    from prodcat.fusion import _CLASSES

    for name in registry.available("fusion"):
        assert type(registry.create("fusion", name)).__name__ in _CLASSES, name


# --- hostile archives -------------------------------------------------------------------------------------------


def _refused(data: bytes, match: str) -> str:
    with pytest.raises(UnsafeContentError, match=match) as info:
        loads_estimator(data, source="model_0.skops")
    message = str(info.value)
    assert message.startswith("model_0.skops: ") and "\n" not in message
    return message


def test_eval_as_analyzer_is_refused_before_anything_is_built() -> None:
    """The issue's attack: ``TfidfVectorizer(analyzer=eval)`` inside a ColumnTransformer."""
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer

    evil = ColumnTransformer([("t", TfidfVectorizer(analyzer=eval), "title")])
    _refused(sio.dumps(evil), r"refused type sklearn\.compose\._column_transformer\.ColumnTransformer")
    # even inside allowed types, a function reference is refused
    _refused(sio.dumps(TfidfVectorizer(analyzer=eval)), r"refused type builtins\.eval")


def test_function_reference_inside_an_allowed_model_is_refused() -> None:
    import os

    import skops.io as sio
    from sklearn.feature_extraction.text import TfidfVectorizer

    from prodcat.text.models import TfidfTextClassifier

    model = TfidfTextClassifier()
    model.word_ = TfidfVectorizer(analyzer=os.system)
    _refused(sio.dumps(model), r"refused type posix\.system|refused type os\.system")


class Gadget:
    """A class skops can only write through its generic object path (what pickle would call a global)."""

    def __init__(self) -> None:
        self.command = "touch /tmp/x"


def test_pickle_only_types_are_refused() -> None:
    import datetime as dt

    import skops.io as sio

    _refused(sio.dumps({"when": dt.datetime(2020, 1, 1)}), r"refused type datetime\.datetime")
    _refused(
        sio.dumps([Gadget()]), r"refused type test_safe_io\.Gadget|refused type tests\.test_safe_io\.Gadget"
    )


def _rewrite_schema(data: bytes, change: Any) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            payload = src.read(info)
            if info.filename == "schema.json":
                schema = json.loads(payload)
                change(schema)
                payload = json.dumps(schema).encode()
            dst.writestr(info, payload)
    return out.getvalue()


def test_crafted_nodes_are_refused(catalog: pd.DataFrame) -> None:
    data = dumps_estimator(registry.create("text-model", "embed:test-tiny").fit(catalog, catalog["label"]))

    def popen(schema: dict[str, Any]) -> None:
        schema["__module__"], schema["__class__"] = "subprocess", "Popen"

    _refused(_rewrite_schema(data, popen), r"refused type subprocess\.Popen \(ObjectNode\)")

    def split_name(schema: dict[str, Any]) -> None:  # "prodcat" + "models.EmbeddingClassifier"
        schema["__module__"], schema["__class__"] = "prodcat", "models.EmbeddingClassifier"

    _refused(_rewrite_schema(data, split_name), "refused type prodcat.models.EmbeddingClassifier")

    def as_function(schema: dict[str, Any]) -> None:  # an allowed name through another loader
        schema["__loader__"] = "FunctionNode"

    _refused(_rewrite_schema(data, as_function), r"\(FunctionNode\): not on prodcat's allow-list")


def test_zip_bomb_is_refused_from_its_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("schema.json", json.dumps({"__loader__": "ListNode"}))
        z.writestr("0.npy", b"\0" * (8 << 20))  # 8 MiB of zeros deflate to ~8 KiB
    _refused(bomb.getvalue(), r"member '0\.npy' unpacks 8388608 bytes from \d+ \(a zip bomb\?\)")
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w") as z:
        z.writestr("schema.json", b"[]")
        z.writestr("0.npy", b"\1" * 4096)
    monkeypatch.setattr("prodcat.safe_io.MAX_UNPACKED_BYTES", 1024)
    _refused(stored.getvalue(), r"unpacks to \d+ bytes, more than 1024")


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 not really", b"{}"])
def test_garbage_is_refused(data: bytes) -> None:
    _refused(data, "not a saved estimator")


def test_audit_lists_what_a_model_holds(catalog: pd.DataFrame) -> None:
    data = dumps_estimator(registry.create("text-model", "embed:test-tiny").fit(catalog, catalog["label"]))
    names = audit(data)
    assert "prodcat.models.EmbeddingClassifier" in names
    assert names == {name for _, name in nodes(data)}

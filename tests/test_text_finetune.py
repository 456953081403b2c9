"""The ``hf:`` fine-tuning path on a tiny randomly initialised RoBERTa built in-process (nothing downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from prodcat.registry import create
from prodcat.text.finetune import HFTextClassifier

VOCAB = {
    "shoe": ["basket", "course", "lacet", "semelle"],
    "bag": ["sac", "dos", "zip", "poche"],
    "watch": ["montre", "cadran", "quartz", "aiguille"],
}


def tiny_catalog(n_per_class: int = 16, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in VOCAB.items():
        for i in range(n_per_class):
            t, d = rng.choice(words, size=2, replace=False)
            rows.append(
                {
                    "id": f"{label}{i}",
                    "title": f"marque {t}",
                    "description": d if i % 3 else "",
                    "image": None,
                    "label": label,
                }
            )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df, df["label"].to_numpy()


def _word_tokenizer(specials: list[str], single: str, pair: str, ids: dict[str, int]) -> object:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = sorted({w for ws in VOCAB.values() for w in ws} | {"marque"})
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[3]))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=list(ids.items())
    )
    return tok


def _save_tiny(
    folder: Path,
    specials: dict[str, str],
    templates: tuple[str, str, dict[str, int]],
    arch: str,
    **config: Any,
) -> Path:
    """A 1-layer, 32-wide ``arch`` ("bert" or "roberta") model + word-level tokenizer in ``save_pretrained`` layout.

    ``specials`` maps tokenizer roles (``cls_token``...) to tokens, in vocabulary order."""
    import transformers
    from transformers import PreTrainedTokenizerFast

    tok = _word_tokenizer(list(specials.values()), *templates)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    prefix = {"bert": "Bert", "roberta": "Roberta"}[arch]
    cfg = getattr(transformers, f"{prefix}Config")(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=140,
        **config,
    )
    getattr(transformers, f"{prefix}Model")(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT (two segments) whose tokenizer emits ``token_type_ids``."""
    specials = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]"}
    specials["mask_token"] = "[MASK]"
    templates = ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", {"[CLS]": 1, "[SEP]": 2})
    folder = tmp_path_factory.mktemp("tiny-bert")
    return _save_tiny(folder, specials, templates, "bert", type_vocab_size=2, pad_token_id=0)


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RoBERTa (sentence pairs as ``<s> A </s></s> B </s>``, no segment ids)."""
    specials = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    specials["mask_token"] = "<mask>"
    templates = ("<s> $A </s>", "<s> $A </s> </s> $B </s>", {"<s>": 0, "</s>": 2})
    folder = tmp_path_factory.mktemp("tiny-roberta")
    return _save_tiny(
        folder,
        specials,
        templates,
        "roberta",
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def _model(path: Path, **kwargs: object) -> HFTextClassifier:
    params: dict[str, object] = {
        "epochs": 10,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "val_fraction": 0.25,
        "progress": False,
        "threads": 1,
        "random_state": 0,
    }
    params.update(kwargs)
    return create("text-model", f"hf:{path}", **params)  # type: ignore[no-any-return]


def test_fit_predict_contract(tiny_roberta: Path) -> None:
    X, y = tiny_catalog()
    model = _model(tiny_roberta)
    assert model.fit(X, y) is model
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert model.classes_.tolist() == ["bag", "shoe", "watch"]
    # Best checkpoint by validation macro-F1 is the one kept, and it learned the toy task.
    assert len(model.history_) == 10
    best = max(model.history_, key=lambda r: r["val_macro_f1"])
    assert model.best_epoch_ == best["epoch"]
    assert (model.predict(X) == y).mean() > 0.8


def test_deterministic_under_seed_and_clonable(tiny_roberta: Path) -> None:
    X, y = tiny_catalog(n_per_class=8)
    a = _model(tiny_roberta, epochs=2).fit(X, y).predict_proba(X)
    b = clone(_model(tiny_roberta, epochs=2)).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_missing_text_prior_weights_and_pickle(tiny_roberta: Path) -> None:
    X, y = tiny_catalog(n_per_class=8)
    X.loc[:1, ["title", "description"]] = ["", ""]
    w = np.where(y == "bag", 2.0, 1.0)
    model = _model(tiny_roberta, epochs=1, val_fraction=0.0).fit(X, y, sample_weight=w)
    assert model.history_[0].keys() == {"epoch", "loss"}
    proba = model.predict_proba(X.iloc[:3])
    expected = np.bincount(np.searchsorted(model.classes_, y), weights=w) / w.sum()
    np.testing.assert_allclose(proba[:2], np.tile(expected, (2, 1)))
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict_proba(X.iloc[:3]), proba, atol=1e-6)


def test_long_pairs_are_truncated(tiny_roberta: Path) -> None:
    X, y = tiny_catalog(n_per_class=4)
    model = _model(tiny_roberta, epochs=1, max_length=12, val_fraction=0.0).fit(X, y)
    long = pd.DataFrame({"title": ["basket " * 100], "description": ["sac " * 300]})
    tokens = model._encode(*model._pairs(long))
    assert len(tokens.ids[0]) == 12
    assert tokens.types is None  # RoBERTa: one segment
    assert model.predict_proba(long).shape == (1, 3)


def test_no_download_for_unknown_name() -> None:
    X, y = tiny_catalog(n_per_class=4)
    with pytest.raises(OSError):
        HFTextClassifier("no-such-org/no-such-model-xyz", epochs=1, progress=False).fit(X, y)


def test_bert_style_backbone_gets_segment_ids(tiny_bert: Path) -> None:
    X, y = tiny_catalog(n_per_class=8)
    model = _model(tiny_bert, epochs=2, val_fraction=0.0).fit(X, y)
    assert model.token_types_
    tokens = model._encode(*model._pairs(X))
    assert tokens.types is not None
    pair_rows = [i for i, d in enumerate(X["description"]) if d]
    assert all(1 in tokens.types[i] for i in pair_rows)  # the description is segment 1
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, atol=1e-9)

"""A tiny randomly initialised BERT or RoBERTa + word-level tokenizer in ``save_pretrained`` layout, built in-process
(nothing downloads): the ``hf:`` fine-tuning tests' base models. Needs ``transformers`` and ``tokenizers``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

VOCAB = {
    "shoe": ["basket", "course", "lacet", "semelle"],
    "bag": ["sac", "dos", "zip", "poche"],
    "watch": ["montre", "cadran", "quartz", "aiguille"],
}


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


def save_tiny_bert(folder: Path) -> Path:
    """A BERT (two segments) whose tokenizer emits ``token_type_ids``."""
    specials = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]"}
    specials["mask_token"] = "[MASK]"
    templates = ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1", {"[CLS]": 1, "[SEP]": 2})
    return _save_tiny(folder, specials, templates, "bert", type_vocab_size=2, pad_token_id=0)


def save_tiny_roberta(folder: Path) -> Path:
    """A RoBERTa (sentence pairs as ``<s> A </s></s> B </s>``, no segment ids)."""
    specials = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    specials["mask_token"] = "<mask>"
    templates = ("<s> $A </s>", "<s> $A </s> </s> $B </s>", {"<s>": 0, "</s>": 2})
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

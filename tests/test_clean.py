from __future__ import annotations

import itertools

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodcat.clean import clean_text, fix_mojibake, join_texts


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<p>Hello</p><br />world", "Hello world"),
        ("id&eacute;es &amp; m&ecirc;le", "idées & mêle"),
        ("L&#39;Huile", "L'Huile"),
        ("double &amp;eacute;t&amp;eacute;", "double été"),
        ("courant de veille: & lt; 01 mA", "courant de veille: < 01 mA"),
        ("  many \t spaces\n\nand\xa0nbsp ", "many spaces and nbsp"),
        ("<ul><li>one</li><li>two</li></ul>", "one two"),
        ("CafÃ© crÃ¨me", "Café crème"),
        ("a < b and c > d", "a < b and c > d"),
        (None, ""),
        (float("nan"), ""),
    ],
)
def test_clean_text_cases(raw: object, expected: str) -> None:
    assert clean_text(raw) == expected


def test_fix_mojibake_leaves_clean_text_alone() -> None:
    assert fix_mojibake("Crème brûlée à 3 €") == "Crème brûlée à 3 €"


def test_join_texts_skips_empty_parts() -> None:
    assert join_texts("title", "", "desc") == "title - desc"
    assert join_texts("", "") == ""


@given(st.text(alphabet=st.characters(blacklist_characters="&<>"), max_size=200))
def test_clean_text_is_idempotent_and_trimmed_without_markup(s: str) -> None:
    once = clean_text(s)
    assert clean_text(once) == once
    assert once == once.strip()
    assert "  " not in once


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("&<>;/abltgmp# ")) | st.characters(), max_size=120))
def test_clean_text_with_markup_settles_and_never_grows(s: str) -> None:
    """Text escaped more than twice ("&amp;amp;lt;b&amp;amp;gt;") still holds markup after one pass, so strict
    idempotence cannot hold there; repeated passes must settle quickly without ever growing the text."""
    passes = [clean_text(s)]
    for _ in range(4):
        passes.append(clean_text(passes[-1]))
    assert passes[-1] == passes[-2]
    assert all(len(b) <= len(a) for a, b in itertools.pairwise(passes))
    assert "  " not in passes[0] and passes[0] == passes[0].strip()


def test_triple_escaped_markup_needs_a_second_pass() -> None:
    once = clean_text("&amp;amp;lt;b&amp;amp;gt;bold")
    assert once == "&lt;b&gt;bold"
    assert clean_text(once) == "bold"


@pytest.mark.realdata
def test_clean_real_challenge_rows(shared_data) -> None:
    df = pd.read_csv(shared_data / "rakuten" / "text" / "labelled_texts.csv")
    head = df[df["source"] == "x_train_head"]
    cleaned = head["description"].map(clean_text)
    raw_html = head["description"].fillna("").str.contains(r"<br|<p>|&eacute;|&#39;", regex=True)
    assert raw_html.sum() > 50  # the real rows do carry HTML and entities
    assert not cleaned.str.contains(r"<br|<p>|</?strong>|&eacute;|&#39;|&amp;", regex=True).any()
    assert cleaned.str.contains("é").sum() > 100
    assert "L'Huile" in " ".join(head["designation"].map(clean_text))

"""Text cleaning as the paper does (HTML tags, entities, whitespace) plus mojibake repair.

Pure functions: no I/O, no state. ``clean_text`` is idempotent on its own output.
"""

from __future__ import annotations

import html
import re
import unicodedata

# A tag starts right after "<" (or "</"): "a < b and c > d" is text, not a tag.
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9:-]*(\s[^<>]{0,500})?/?>")
_BREAK_TAG = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6])\s*/?\s*>", re.IGNORECASE)
# Entities written with stray spaces in scraped listings ("& lt;", "&amp ;") are decoded as well.
_SPACED_ENTITY = re.compile(r"&\s+(#?\w{1,8})\s*;")
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Typical UTF-8-read-as-Latin-1 sequences: "Ã©" for "é", "â€™" for "’".
_MOJIBAKE = re.compile(r"[ÃÂâ][\x80-\xbf€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ ¡-¿]")


def fix_mojibake(text: str) -> str:
    """Undo UTF-8 text that was decoded as Latin-1/cp1252, when doing so is lossless.

    Only applied when the text shows a mojibake pattern and re-decoding succeeds; otherwise returned unchanged.
    """
    if not _MOJIBAKE.search(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            repaired = text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        return repaired
    return text


def clean_text(text: object) -> str:
    """Return ``text`` without HTML tags, with entities decoded and whitespace collapsed.

    Non-strings (``None``, ``NaN``) become ``""``. Entities are decoded twice because scraped listings often hold
    double-escaped text (``&amp;eacute;``). Block-level tags become spaces so words never fuse together.
    """
    if not isinstance(text, str):
        return ""
    s = _SPACED_ENTITY.sub(r"&\1;", text)
    s = html.unescape(html.unescape(s))
    s = _BREAK_TAG.sub(" ", s)
    s = _TAG.sub(" ", s)
    s = fix_mojibake(s)
    s = unicodedata.normalize("NFC", s)
    s = _CONTROL.sub(" ", s).replace("\u00a0", " ")
    return _SPACE.sub(" ", s).strip()


def join_texts(*parts: str, sep: str = " - ") -> str:
    """Join non-empty cleaned parts (e.g. title and description) with ``sep``."""
    return sep.join(p for p in parts if p)

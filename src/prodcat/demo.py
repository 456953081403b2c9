"""A small SYNTHETIC catalog for the built-in demo and for tests.

Everything here is generated: procedurally drawn product pictures (one shape family per category, random colours,
jitter and background noise), templated French/English titles and descriptions with HTML noise, a few empty
descriptions, a few missing or corrupt image files and a known fraction of flipped labels (the true label is kept in
the ``true_label`` column so label-noise audits can be checked). Titles are deliberately ambiguous for part of the
products so that the image carries information the text lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

# category -> (French noun, English noun, drawing routine)
CATEGORIES: dict[str, tuple[str, str, str]] = {
    "t-shirts": ("t-shirt", "t-shirt", "tee"),
    "mugs": ("mug", "mug", "mug"),
    "shoes": ("chaussures", "shoes", "shoe"),
    "books": ("livre", "book", "book"),
    "lamps": ("lampe", "lamp", "lamp"),
    "watches": ("montre", "watch", "watch"),
    "bags": ("sac", "bag", "bag"),
    "toys": ("jouet", "toy", "star"),
}
BRANDS = ["Lumio", "Verano", "Kestrel", "Ozen", "Parisot", "Nordvik", "Alto", "Brisa"]
COLOURS = [
    ("rouge", "red", (200, 40, 40)),
    ("bleu", "blue", (40, 70, 200)),
    ("vert", "green", (40, 160, 70)),
    ("noir", "black", (30, 30, 30)),
    ("jaune", "yellow", (225, 200, 40)),
    ("rose", "pink", (230, 120, 170)),
]
ADJECTIVES = ["classique", "premium", "élégant", "vintage", "léger", "durable", "compact", "original"]
DESCRIPTIONS = [
    "<p>Produit de qualit&eacute; sup&eacute;rieure.</p><br />Livraison rapide &amp; soign&eacute;e.",
    "<b>Neuf</b> - id&eacute;al pour offrir. <br/>Garantie 2 ans.",
    "Great value &amp; fast shipping.<br>Satisfaction guaranteed!",
    "<ul><li>Mati&egrave;re : coton</li><li>Entretien facile</li></ul>",
    "Taille unique. Couleur conforme &agrave; la photo&nbsp;!",
]


@dataclass
class DemoSpec:
    """Size and noise of the synthetic catalog."""

    n_per_class: int = 60
    image_size: int = 96
    flip_rate: float = 0.05
    ambiguous_rate: float = 0.35  # titles that do not name the product type
    missing_image_rate: float = 0.03
    empty_description_rate: float = 0.1
    seed: int = 0


def _draw(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    colour = COLOURS[rng.integers(len(COLOURS))][2]
    c = size / 2 + rng.normal(0, size * 0.05, 2)
    s = size * rng.uniform(0.28, 0.38)
    x, y = c
    if kind == "tee":
        d.polygon(
            [
                (x - s, y - s * 0.6),
                (x - s * 0.4, y - s),
                (x + s * 0.4, y - s),
                (x + s, y - s * 0.6),
                (x + s * 0.7, y - s * 0.2),
                (x + s * 0.5, y - s * 0.4),
                (x + s * 0.5, y + s),
                (x - s * 0.5, y + s),
                (x - s * 0.5, y - s * 0.4),
                (x - s * 0.7, y - s * 0.2),
            ],
            fill=colour,
        )
    elif kind == "mug":
        d.rectangle([x - s * 0.6, y - s * 0.7, x + s * 0.4, y + s * 0.8], fill=colour)
        d.ellipse(
            [x + s * 0.2, y - s * 0.4, x + s * 0.9, y + s * 0.4], outline=colour, width=max(2, size // 24)
        )
    elif kind == "shoe":
        d.polygon(
            [
                (x - s, y + s * 0.5),
                (x - s, y - s * 0.1),
                (x - s * 0.3, y - s * 0.2),
                (x + s * 0.2, y + s * 0.1),
                (x + s, y + s * 0.2),
                (x + s, y + s * 0.5),
            ],
            fill=colour,
        )
        d.rectangle([x - s, y + s * 0.5, x + s, y + s * 0.65], fill=(40, 40, 40))
    elif kind == "book":
        d.rectangle([x - s * 0.7, y - s, x + s * 0.7, y + s], fill=colour)
        for k in range(3):
            yy = y - s * 0.5 + k * s * 0.3
            d.line([x - s * 0.4, yy, x + s * 0.4, yy], fill=(250, 250, 250), width=max(1, size // 48))
    elif kind == "lamp":
        d.polygon(
            [
                (x - s * 0.7, y - s * 0.1),
                (x - s * 0.3, y - s),
                (x + s * 0.3, y - s),
                (x + s * 0.7, y - s * 0.1),
            ],
            fill=colour,
        )
        d.rectangle([x - s * 0.06, y - s * 0.1, x + s * 0.06, y + s * 0.8], fill=(90, 90, 90))
        d.rectangle([x - s * 0.4, y + s * 0.8, x + s * 0.4, y + s], fill=(90, 90, 90))
    elif kind == "watch":
        d.rectangle([x - s * 0.25, y - s, x + s * 0.25, y + s], fill=(60, 60, 60))
        d.ellipse(
            [x - s * 0.55, y - s * 0.55, x + s * 0.55, y + s * 0.55],
            fill=colour,
            outline=(20, 20, 20),
            width=2,
        )
    elif kind == "bag":
        d.polygon(
            [
                (x - s * 0.8, y + s),
                (x - s * 0.6, y - s * 0.3),
                (x + s * 0.6, y - s * 0.3),
                (x + s * 0.8, y + s),
            ],
            fill=colour,
        )
        d.arc([x - s * 0.4, y - s, x + s * 0.4, y - s * 0.1], 180, 360, fill=colour, width=max(2, size // 24))
    else:  # star
        pts = [
            (
                x + (s if k % 2 == 0 else s * 0.45) * math.cos(math.pi * k / 5 - math.pi / 2),
                y + (s if k % 2 == 0 else s * 0.45) * math.sin(math.pi * k / 5 - math.pi / 2),
            )
            for k in range(10)
        ]
        d.polygon(pts, fill=colour)
    img = img.rotate(float(rng.normal(0, 8)), fillcolor=bg)
    noise = rng.normal(0, 10, (size, size, 3))
    arr = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.SMOOTH)


def _title(cat: str, rng: np.random.Generator, ambiguous: bool) -> str:
    fr, en, _ = CATEGORIES[cat]
    brand = BRANDS[rng.integers(len(BRANDS))]
    col_fr, col_en, _ = COLOURS[rng.integers(len(COLOURS))]
    adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
    if ambiguous:  # weak title: brand, colour and adjective only
        return (
            f"{brand} {adj} {col_fr}"
            if rng.random() < 0.5
            else f"{brand} {col_en} edition {rng.integers(100, 999)}"
        )
    if rng.random() < 0.5:
        return f"{fr.capitalize()} {adj} {col_fr} - {brand}"
    return f"{brand} {col_en} {en} &amp; more"


def make_demo_catalog(out_dir: str | Path, spec: DemoSpec | None = None) -> Path:
    """Write the synthetic catalog to ``out_dir`` (``catalog.csv`` + ``images/``) and return the CSV path."""
    spec = spec or DemoSpec()
    rng = np.random.default_rng(spec.seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cats = list(CATEGORIES)
    rows = []
    for ci, cat in enumerate(cats):
        for k in range(spec.n_per_class):
            pid = f"P{ci:02d}{k:04d}"
            ambiguous = rng.random() < spec.ambiguous_rate
            desc = (
                ""
                if rng.random() < spec.empty_description_rate
                else DESCRIPTIONS[rng.integers(len(DESCRIPTIONS))]
            )
            image = f"images/{pid}.png"
            if rng.random() < spec.missing_image_rate:
                image = f"images/{pid}_missing.png"  # named but absent: a missing modality
            else:
                _draw(CATEGORIES[cat][2], rng, spec.image_size).save(out / image)
            rows.append(
                {
                    "id": pid,
                    "title": _title(cat, rng, ambiguous),
                    "description": desc,
                    "image": image,
                    "true_label": cat,
                }
            )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=spec.seed).reset_index(drop=True)
    flip = rng.random(len(df)) < spec.flip_rate
    wrong = [cats[(cats.index(t) + int(rng.integers(1, len(cats)))) % len(cats)] for t in df["true_label"]]
    df["label"] = np.where(flip, wrong, df["true_label"])
    (out / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    df.loc[0, "image"] = "images/corrupt.png"  # one unreadable image, reported as missing modality
    path = out / "catalog.csv"
    df[["id", "title", "description", "image", "label", "true_label"]].to_csv(path, index=False)
    return path

"""The screenshot of the review page in the docs (docs/img/review.png), made from real products.

A stratified sample of the fashion catalog (``--per-class`` products of each of its 55 classes) is trained on with
a light config (TF-IDF + EfficientNet-Lite0 embeddings, from the shared embedding cache when warm), audited with
``prodcat audit --model``, and served with ``prodcat review``; Chromium (Playwright, the system binary) accepts the
suggestion on two products with the keyboard and opens the relabel type-ahead on the third, then the page is
captured.

    python benchmarks/review_screenshot.py --out docs/img/review.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _review_server import ReviewServer  # noqa: E402

CONFIG = """\
text_models:
  - {name: tfidf, params: {max_chars: 2000}}
image_models:
  - name: embed:efficientnet-lite0
    params: {embedder_params: {image_size: 160, aspect: auto, extra_stages: 3}}
n_folds: 3
validation_fraction: 0.1
fusion: {method: logistic}
calibration: {n_folds: 3}
"""


def prodcat(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "prodcat", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--catalog", type=Path, default=ROOT.parent / "shared" / "data" / "fashion" / "products.csv"
    )
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--work", type=Path, default=ROOT / "bench-output" / "review-screenshot")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "review.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    import pandas as pd
    from playwright.sync_api import expect, sync_playwright

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(args.catalog, dtype=str, keep_default_na=False)
    sample = df.groupby("label").sample(n=args.per_class, random_state=0)  # every class has 42 or more
    sample["image"] = [str((args.catalog.parent / p).resolve()) for p in sample["image"]]
    catalog = work / "catalog.csv"
    sample[["id", "title", "label", "image"]].to_csv(catalog, index=False)
    (work / "config.yaml").write_text(CONFIG)
    if not (work / "model" / "manifest.json").exists():
        prodcat("train", str(catalog), "--out", str(work / "model"), "-c", str(work / "config.yaml"))
    if not (work / "audit" / "issues.csv").exists():
        prodcat("audit", str(catalog), "--model", str(work / "model"), "--out", str(work / "audit"), "--thumbnails",
                "none", "--folds", "3")  # fmt: skip
    decisions = work / "decisions.csv"
    decisions.unlink(missing_ok=True)
    server = ReviewServer(
        [
            str(catalog),
            "--model",
            str(work / "model"),
            "--audit",
            str(work / "audit"),
            "--decisions",
            str(decisions),
            "--reviewer",
            "ana",
        ],
        log=work / "server.log",
    )
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
            page.goto(server.url + "/#size=20")
            page.wait_for_selector(".item.cur img")
            for n in (1, 2):  # accept the first two suggestions
                page.keyboard.press("a")
                expect(page.locator("#history li")).to_have_count(n)
            page.keyboard.press("r")  # the relabel type-ahead, open on the third product
            page.keyboard.type("Sa")
            page.wait_for_load_state("networkidle")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        server.stop()
    print(f"screenshot written to {args.out}; decisions in {decisions}")


if __name__ == "__main__":
    main()

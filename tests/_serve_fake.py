"""A deterministic keyword-based stand-in for ``prodcat.predict.Predictor``, and a launcher serving it.

Used by tests/test_serve.py (in process), tests/test_serve_uvicorn.py and benchmarks/bench_serve.py --fake (a real
uvicorn process)::

    python tests/_serve_fake.py --port 0      # prints "PORT <n>" once listening, then serves until killed

The fake follows the Predictor interface exactly (``classes``, ``metadata``, ``predict_frame(df, *, top_k)``) and,
with ``strict=True``, raises on any image that is neither bytes nor None so that a server passing a client's string
through would fail loudly.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from typing import Any

import numpy as np
import pandas as pd

from prodcat.image.decode import decode_image

KEYWORDS = {
    "Tshirts": ("tshirt", "t-shirt", "tee"),
    "Shoes": ("shoe", "sneaker", "boot"),
    "Watches": ("watch",),
    "Handbags": ("bag", "handbag", "purse"),
    "Jeans": ("jean", "denim"),
    "Sunglasses": ("sunglass", "shades"),
}
CLASSES = [*KEYWORDS, "Other"]


class FakePredictor:
    """Scores: 1 for every class, +4 per keyword found in title + description, +2 for the class picked by the
    image's mean brightness; probabilities are the normalised scores.

    Parameters
    ----------
    delay_s, per_row_s : simulated model time per call and per row (seconds).
    fail_on : a word; a frame containing it in a title makes ``predict_frame`` raise RuntimeError.
    strict : raise TypeError on a ``str`` image (the server must only ever pass bytes or None).
    """

    def __init__(
        self, *, delay_s: float = 0.0, per_row_s: float = 0.0, fail_on: str | None = None, strict: bool = True
    ) -> None:
        self.classes = list(CLASSES)
        self.metadata: dict[str, Any] = {
            "name": "fake-keywords",
            "text_model": "keywords",
            "image_model": None,
        }
        self.delay_s, self.per_row_s, self.fail_on, self.strict = delay_s, per_row_s, fail_on, strict
        self.calls: list[int] = []  # rows per call
        self.image_types: set[type] = set()
        self._lock = threading.Lock()

    def _scores(self, title: str, description: str, image: Any) -> tuple[np.ndarray, bool, str | None]:
        scores = np.ones(len(self.classes))
        text = f"{title} {description}".lower()
        for i, words in enumerate(KEYWORDS.values()):
            scores[i] += 4 * sum(w in text for w in words)
        error: str | None = "no image"  # what prodcat.predict.Predictor reports for a missing image
        if image is not None:
            decoded = decode_image(image)
            if decoded.image is not None:
                brightness = float(np.asarray(decoded.image, dtype=np.float32).mean())
                scores[int(brightness) % len(self.classes)] += 2
            error = decoded.reason
        return scores / scores.sum(), error is None, error

    def predict_frame(self, df: pd.DataFrame, *, top_k: int = 5) -> pd.DataFrame:
        for image in df["image"]:
            self.image_types.add(type(image))
            if self.strict and not (image is None or isinstance(image, bytes)):
                raise TypeError(f"the server passed a {type(image).__name__} image")
        if self.fail_on is not None and df["title"].str.contains(self.fail_on, regex=False).any():
            raise RuntimeError(f"failing on purpose: {self.fail_on!r}")
        with self._lock:
            self.calls.append(len(df))
        time.sleep(self.delay_s + self.per_row_s * len(df))
        rows = []
        for pid, title, description, image in df[["id", "title", "description", "image"]].itertuples(
            index=False
        ):
            proba, image_ok, error = self._scores(title, description, image)
            order = np.argsort(-proba, kind="stable")[:top_k]
            rows.append(
                {
                    "id": pid,
                    "label": self.classes[order[0]],
                    "probability": float(proba[order[0]]),
                    "confidence": float(proba[order[0]]),
                    "decision": "auto" if proba[order[0]] >= 0.9 else "review",
                    "top_labels": [self.classes[i] for i in order],
                    "top_probabilities": [float(proba[i]) for i in order],
                    "text_available": bool(f"{title}{description}".strip()),
                    "image_available": image_ok,
                    "image_error": error,
                }
            )
        return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from prodcat.serve import ServeSettings, create_app

    p = argparse.ArgumentParser(description="Serve FakePredictor with uvicorn on a loopback port.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed as 'PORT <n>')")
    p.add_argument("--delay-ms", type=float, default=0.0, help="simulated model time per call")
    p.add_argument("--per-row-ms", type=float, default=0.0, help="simulated model time per row")
    p.add_argument("--max-body-mb", type=float, default=16.0)
    p.add_argument("--max-image-pixels", type=int, default=25_000_000)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--merge-wait-ms", type=float, default=50.0)
    args = p.parse_args(argv)
    settings = ServeSettings(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_image_pixels=args.max_image_pixels,
        max_batch=args.max_batch,
        merge_wait_ms=args.merge_wait_ms,
    )
    fake = FakePredictor(delay_s=args.delay_ms / 1e3, per_row_s=args.per_row_ms / 1e3)
    app = create_app(fake, settings=settings)
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections accepted from such a socket (else every
    # keep-alive response waits ~40 ms for a delayed ACK; see prodcat.serve.app.tcp_listener)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))  # bound here, so the port is known before uvicorn starts: no race
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()

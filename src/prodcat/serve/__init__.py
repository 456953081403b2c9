"""HTTP prediction server (FastAPI + uvicorn) for a trained model bundle: ``prodcat serve MODEL_DIR``.

See ``docs/serving.md``. ``create_app(predictor, settings=...)`` builds the app around any loaded predictor;
``run(model_dir, ...)`` loads a bundle once and serves it.
"""

from __future__ import annotations

from prodcat.serve.app import create_app, load_predictor, run
from prodcat.serve.runtime import Predictor
from prodcat.serve.schemas import ServeSettings

__all__ = ["Predictor", "ServeSettings", "create_app", "load_predictor", "run"]

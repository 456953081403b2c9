"""prodcat: multimodal (text + image) e-commerce product categorisation.

Reproduces the SIGIR 2020 eCom Rakuten challenge winner (decision-level late fusion of a text and an image
classifier, confident-learning label cleaning, majority-vote ensembles) and packages it for catalog teams:
train, evaluate, audit labels, batch-predict and serve.
"""

from __future__ import annotations

__version__ = "0.1.0"

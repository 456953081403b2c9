"""The review page (``prodcat review``): a queue of products to check, decisions saved as they are made.

- :mod:`prodcat.review.decisions`: the decisions file (append + fsync CSV), its replay and
  :func:`~prodcat.review.decisions.apply_decisions` (``prodcat train --decisions``);
- :mod:`prodcat.review.queue`: the queue (audit suspects + ``review`` predictions) and its filtered, sorted pages;
- :mod:`prodcat.review.app`: the FastAPI app (page, JSON API, thumbnails by product id, CSRF checks).

Importing this package imports neither FastAPI nor a model: training reads decisions without them.
"""

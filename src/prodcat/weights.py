"""Pickle-free persistence of the fitted torch networks inside prodcat's estimators (fine-tuned image and text
models): the weights travel as plain numpy arrays, which skops saves and prodcat's allow-list admits."""

from __future__ import annotations

from typing import Any

import numpy as np


class NumpyWeightsMixin:
    """Pickle-free persistence of a fitted torch module attribute (``_module_attr``): saved as ``{name: numpy
    array}`` (plain arrays, on prodcat's skops allow-list) under ``_weights_attr``; loading calls
    ``_rebuild(weights)``, which builds the architecture from the estimator's parameters and loads the values.
    Attributes named in ``_unsaved`` (live resources) are left out. Put it before ``BaseEstimator`` in the bases."""

    _module_attr = "model_"
    _weights_attr = "model_weights_"
    _unsaved: tuple[str, ...] = ()

    def _rebuild(self, weights: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._unsaved}
        net = state.pop(self._module_attr, None)
        if net is not None:
            state[self._weights_attr] = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights = state.pop(self._weights_attr, None)
        self.__dict__.update(state)
        if weights is not None:
            setattr(self, self._module_attr, self._rebuild(weights))

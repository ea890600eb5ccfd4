"""The one interface every inference backend implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mm_perception.runtime.spec import TensorSpec


@runtime_checkable
class InferenceBackend(Protocol):
    """A loaded model that maps named numpy inputs to named numpy outputs.

    ``run`` validates the feeds against :attr:`inputs` first (names, dtype, rank, fixed
    dims, consistent dynamic dims; :class:`~mm_perception.core.errors.FeedError`), then
    returns host numpy arrays keyed by output name, shaped and typed as :attr:`outputs`
    (dynamic dims resolved). Backends are not thread-safe: one caller at a time.
    """

    name: str

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]]
            ) -> dict[str, npt.NDArray[np.generic]]: ...

    def close(self) -> None: ...

"""PyTorch backend: an ``nn.Module`` behind :class:`~mm_perception.runtime.InferenceBackend`.

The module's ``forward`` takes one tensor per input spec, positionally in spec order, and
returns a tuple of tensors in output-spec order (a single tensor when there is one output).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from mm_perception.core.errors import BackendUnavailableError, SpecMismatchError
from mm_perception.runtime.config import DeviceName
from mm_perception.runtime.spec import TensorSpec, validate_feeds, validate_outputs


class TorchBackend:
    """Runs ``module`` in eval mode under ``torch.inference_mode()`` on ``device``.

    The module is moved to ``device`` and put in eval mode (in place: it is the caller's
    object). ``threads`` sets torch's intra-op thread count, which is process-wide in torch.
    """

    name = "torch"

    def __init__(self, module: nn.Module, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec], *, device: DeviceName = "cpu",
                 threads: int | None = None) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch backend: device 'cuda' requested but CUDA is "
                                          "not available (torch.cuda.is_available() is False)")
        if threads is not None:
            torch.set_num_threads(threads)
        self._device = torch.device(device)
        self._module: nn.Module | None = module.to(self._device).eval()
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def run(self, feeds: Mapping[str, npt.NDArray[np.generic]]
            ) -> dict[str, npt.NDArray[np.generic]]:
        """Numpy in, numpy out (host arrays, see the output specs)."""
        if self._module is None:
            raise RuntimeError("torch backend is closed")
        sizes = validate_feeds(self._inputs, feeds)
        # np.array(copy) for read-only arrays: torch.from_numpy warns on non-writable memory
        args = [torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous
                                 else np.array(a, order="C")).to(self._device)
                for a in (feeds[s.name] for s in self._inputs)]
        with torch.inference_mode():
            result = self._module(*args)
        tensors = (result,) if isinstance(result, torch.Tensor) else tuple(result)
        if len(tensors) != len(self._outputs):
            raise SpecMismatchError(f"torch backend: module returned {len(tensors)} outputs, "
                                    f"expected {len(self._outputs)} "
                                    f"({[s.name for s in self._outputs]})")
        out = {spec.name: t.detach().cpu().numpy()
               for spec, t in zip(self._outputs, tensors, strict=True)}
        validate_outputs(self._outputs, out, sizes, self.name)
        return out

    def close(self) -> None:
        self._module = None

"""tests/gpu runs only where CUDA is present (TensorRT / CUDA parity tests live here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "tests/gpu" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_tf32() -> Iterator[None]:
    """TF32 off in torch for every GPU test, restored after it.

    torch's cuDNN convolutions and cuBLAS matmuls may use TF32 on Ampere+: not a float32
    reference for the fp32 parity bounds. Saved and restored by hand, not with monkeypatch:
    ``matmul.allow_tf32`` is a ``__getattr__`` / ``__setattr__`` property of torch's
    cuBLASModule, which pytest >= 9.2's monkeypatch undoes with a ``delattr`` the object does
    not support (an error at every teardown).
    """
    try:
        import torch
    except ImportError:
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = False
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved

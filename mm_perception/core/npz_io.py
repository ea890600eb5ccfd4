"""Reading ``.npz`` dataset shards with one clear error for every way a file can be bad.

``np.load`` fails on a damaged shard in many ways (a text file reads as a pickle and raises
``ValueError``, a cut archive ``BadZipFile`` or ``EOFError``, a missing array ``KeyError``);
datasets that users build over hours and copy between machines meet all of them. Every
dataset loader reads through :func:`read_npz`, so the error always names the file and says
what it should have been, never a traceback from inside numpy.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError

#: what np.load and reading its arrays raise for a file that is not what it should be
_BAD_FILE = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile)


@contextmanager
def read_npz(path: str | Path, what: str) -> Iterator[Any]:
    """``np.load(path)`` (no pickles) as a context manager.

    Args:
        path: the ``.npz`` file.
        what: what it should be, for the message (e.g. ``"BEV dataset shard"``).

    Yields:
        The open ``NpzFile``; arrays read inside the block (and anything the block raises
        for missing or malformed content: KeyError, ValueError) count as the file's fault.

    Raises:
        ConfigError: naming the file, for a missing, damaged or malformed file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            yield data
    except _BAD_FILE as exc:
        raise ConfigError(f"{path} is not a readable {what}: {type(exc).__name__}: {exc}"
                          ) from exc


__all__ = ["read_npz"]

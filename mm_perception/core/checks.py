"""Small value checks shared by the components' config validation (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy int / float), not a bool.

    A bool is an ``int`` to Python, but ``True`` where a distance is expected is a
    configuration mistake, not the number 1. Finiteness is the caller's rule to check.
    """
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


__all__ = ["is_real"]

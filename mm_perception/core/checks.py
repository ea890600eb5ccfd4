"""Small value checks shared by the components' config validation (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import ObjectClass


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy int / float), not a bool.

    A bool is an ``int`` to Python, but ``True`` where a distance is expected is a
    configuration mistake, not the number 1. Finiteness is the caller's rule to check.
    """
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


def check_numbers(config: Any, names: Iterable[str], may_be_zero: Iterable[str] = ()) -> None:
    """Validate and normalise number fields of a frozen dataclass config in place.

    Each field in ``names`` must be a real number (:func:`is_real`), finite, and ``> 0``
    (``>= 0`` for the fields in ``may_be_zero``); it is stored back as a Python float (call
    from ``__post_init__``).

    Raises:
        ConfigError: naming ``<ClassName>.<field>``, the rule and the value.
    """
    cls = type(config).__name__
    zero_ok = set(may_be_zero)
    for name in names:
        value = getattr(config, name)
        low_ok = is_real(value) and (value >= 0 if name in zero_ok else value > 0)
        if not (low_ok and math.isfinite(value)):
            bound = ">= 0" if name in zero_ok else "> 0"
            raise ConfigError(f"{cls}.{name} must be a finite number {bound}, got {value!r}")
        object.__setattr__(config, name, float(value))


def object_classes(values: Any, key: str) -> tuple[ObjectClass, ...]:
    """A config's class list (names such as ``"car"`` or ObjectClass members) as a tuple of
    :class:`ObjectClass`.

    Raises:
        ConfigError: naming ``key``, for a value that is not a sequence of class names.
    """
    try:
        return tuple(ObjectClass(c) for c in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be class names from "
                          f"{[c.value for c in ObjectClass]}, got {values!r}") from None


__all__ = ["check_numbers", "is_real", "object_classes"]

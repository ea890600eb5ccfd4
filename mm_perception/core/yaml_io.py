"""Strict YAML loading for configuration files (rigs, scenarios).

PyYAML's safe loader keeps the last of two equal keys silently; a config file with a
duplicated key is almost always a mistake, so :func:`load_yaml_file` rejects it, and turns
every way a file can fail to load into one :class:`ConfigError` that starts with the path.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from mm_perception.core.errors import ConfigError


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode,
                              deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                _construct_unique_mapping)


def load_yaml_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a YAML file strictly.

    Args:
        path: the file.
        what: what the file is, for messages (``"rig"``, ``"scenario"``).

    Raises:
        ConfigError: ``<path>: <what> file not found`` / ``cannot read`` / ``invalid YAML``
            (duplicate keys included).
    """
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as stream:
            return yaml.load(stream, Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{source}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the {what} file: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None


__all__ = ["UniqueKeyLoader", "load_yaml_file"]

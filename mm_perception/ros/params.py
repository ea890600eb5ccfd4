"""Node parameters described by a JSON schema (``config/schema/<node>.schema.json``).

Each node's parameters are the flat properties of one JSON schema (draft 2020-12): the
property name is the ROS parameter name (dots group them, units are in the name:
``sync.timeout_s``), and ``default``, ``description``, ``type``, ``minimum``/``maximum``,
``enum`` and array ``items`` say the rest. The schema is the single description of a node's
parameters:

* :func:`declare_from_schema` declares every parameter on the node at construction with its
  default and description, *dynamically typed*, so that a wrong type given in a params file
  or on the command line does not kill the process at start-up but fails the ``configure``
  transition with a message naming the parameter;
* :func:`read_validated` reads the current values at ``configure`` and validates them with
  ``jsonschema``; :class:`ParameterError` names every bad parameter, its value and the rule.

``config/<node>.param.yaml`` (``/**: ros__parameters:``) holds the same defaults for users to
copy; a unit test keeps the two in agreement.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from mm_perception.core.errors import ConfigError

#: environment variable that points at a config directory (wins over the defaults)
CONFIG_ENV = "MM_PERCEPTION_CONFIG"


class ParameterError(ConfigError):
    """One or more node parameters are invalid (the message names each)."""


def config_dir() -> Path:
    """The directory with ``rigs/``, ``schema/`` and the ``*.param.yaml`` files.

    Order: ``$MM_PERCEPTION_CONFIG``; the source checkout's ``config/`` (next to the
    package); the installed ``share/mm_perception/config`` (ament index, then
    ``sys.prefix``).
    """
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "config"
    if (checkout / "schema").is_dir():
        return checkout
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("mm_perception")) / "config"
        if (share / "schema").is_dir():
            return share
    except Exception:  # not in an ament index: fall through to the prefix
        pass
    import sys

    prefix = Path(sys.prefix) / "share" / "mm_perception" / "config"
    if (prefix / "schema").is_dir():
        return prefix
    raise ConfigError(f"no mm_perception config directory found (looked at ${CONFIG_ENV}, "
                      f"{checkout}, the ament index and {prefix})")


@cache
def load_schema(node: str, directory: str | None = None) -> Mapping[str, Any]:
    """The JSON schema of node kind ``node`` (``config/schema/<node>.schema.json``)."""
    path = Path(directory) if directory else config_dir()
    path = path / "schema" / f"{node}.schema.json"
    try:
        schema: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no parameter schema for node {node!r}: {path} is missing") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise ConfigError(f"{path}: a node schema must be an object with properties")
    for name, prop in schema["properties"].items():
        if "default" not in prop:
            raise ConfigError(f"{path}: parameter {name!r} has no default")
    return schema


def defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter name -> default value, from a node schema."""
    return {name: prop["default"] for name, prop in schema["properties"].items()}


def validate(values: Mapping[str, Any], schema: Mapping[str, Any], node: str) -> dict[str, Any]:
    """Check parameter values against the node schema.

    Returns:
        A plain dict copy of ``values``.

    Raises:
        ParameterError: naming every invalid parameter, its value and the violated rule.
    """
    import jsonschema

    data = dict(values)
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        name = ".".join(str(p) for p in err.absolute_path) if err.absolute_path else ""
        if not name and err.validator == "additionalProperties":
            problems.append(f"{err.message} (parameters not in the schema of {node!r})")
            continue
        top = str(err.absolute_path[0]) if err.absolute_path else name
        problems.append(f"parameter {top!r} = {data.get(top)!r}: {err.message}")
    if problems:
        raise ParameterError(f"invalid parameters for {node}: " + "; ".join(problems))
    return data


def declare_from_schema(node: Any, schema: Mapping[str, Any]) -> None:
    """Declare every schema property as a dynamically typed ROS parameter with its default
    and description (units and bounds appended), on an rclpy node."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, prop in schema["properties"].items():
        text = str(prop.get("description", ""))
        bounds = [f"{k} {prop[k]}" for k in ("minimum", "exclusiveMinimum", "maximum",
                                             "exclusiveMaximum") if k in prop]
        if "enum" in prop:
            bounds.append(f"one of {prop['enum']}")
        if bounds:
            text = f"{text} ({', '.join(bounds)})"
        descriptor = ParameterDescriptor(name=name, description=text, dynamic_typing=True)
        node.declare_parameter(name, prop["default"], descriptor)


def read_validated(node: Any, schema: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Current values of the schema's parameters on ``node``, validated (see :func:`validate`).

    A parameter explicitly set to an empty array reads back as ``[]`` whatever ROS type it
    arrived with; an array parameter that is unset reads as ``[]`` too (an empty YAML list in
    a params file has no element type, and rcl leaves the parameter NOT_SET).
    """
    values: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        value = node.get_parameter(name).value
        if isinstance(value, tuple | list) or type(value).__name__ == "array":
            value = list(value)
        elif value is None and prop.get("type") == "array":
            value = []
        values[name] = value
    return validate(values, schema, kind)


def load_param_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """Parameters for ``node_name`` from a ROS 2 params YAML (``/**`` and the node's own
    section, the latter winning), as a flat dict with dotted names."""
    import yaml

    text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a params file maps node names to ros__parameters")
    out: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ConfigError(f"{path}: section {key!r} has no ros__parameters")
        out.update(_flatten(section["ros__parameters"] or {}))
    return out


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


__all__ = ["CONFIG_ENV", "ParameterError", "config_dir", "declare_from_schema", "defaults",
           "load_param_file", "load_schema", "read_validated", "validate"]

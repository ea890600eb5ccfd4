"""Actor bodies: agents of five classes and the ego, built from several coloured parts (numpy).

Every actor is an :class:`~mm_perception.sim.spec.ActorModel` in its own frame (origin at the
centre of the footprint on the ground, x forward, y left, z up): a ground-truth box of size
``(length, width, height)`` spanning ``z in [0, height]`` and parts that all lie inside it
(:class:`ActorModel` checks). A model is a deterministic function of its class, its size and
its colours (:func:`build_actor_model`); :func:`make_actor_model` draws the size from the
realistic ranges of :data:`SIZE_RANGES` and the colours from per-class palettes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import KeyedConfigError
from mm_perception.core.types import ObjectClass
from mm_perception.sim.spec import ActorModel, ActorPart, ActorState, Material

F64 = npt.NDArray[np.float64]
RGBA = tuple[float, float, float, float]

#: realistic size ranges per class: ((length lo, hi), (width lo, hi), (height lo, hi)), m
#: (cars: compact to large saloon/SUV; trucks: rigid 2-3 axle lorries; buses: city buses;
#: pedestrians: footprint incl. arm swing, 5th-95th percentile adult height; cyclists: bicycle
#: with rider)
SIZE_RANGES: Mapping[ObjectClass, tuple[tuple[float, float], ...]] = MappingProxyType({
    ObjectClass.CAR: ((3.8, 5.0), (1.7, 2.0), (1.4, 1.7)),
    ObjectClass.TRUCK: ((7.0, 10.0), (2.4, 2.6), (3.0, 3.8)),
    ObjectClass.BUS: ((10.0, 12.5), (2.5, 2.6), (3.0, 3.3)),
    ObjectClass.PEDESTRIAN: ((0.45, 0.7), (0.45, 0.7), (1.55, 1.95)),
    ObjectClass.CYCLIST: ((1.6, 1.9), (0.55, 0.7), (1.6, 1.9)),
})

#: agent classes (the ego uses UNKNOWN)
AGENT_CLASSES: tuple[ObjectClass, ...] = tuple(SIZE_RANGES)

_CAR_PAINT: tuple[RGBA, ...] = (
    (0.92, 0.92, 0.92, 1.0), (0.72, 0.73, 0.75, 1.0), (0.08, 0.08, 0.09, 1.0),
    (0.45, 0.46, 0.48, 1.0), (0.70, 0.08, 0.07, 1.0), (0.10, 0.22, 0.55, 1.0),
    (0.12, 0.30, 0.18, 1.0), (0.85, 0.70, 0.10, 1.0), (0.55, 0.35, 0.20, 1.0))
_CARGO: tuple[RGBA, ...] = (
    (0.95, 0.95, 0.95, 1.0), (0.80, 0.80, 0.78, 1.0), (0.20, 0.35, 0.60, 1.0),
    (0.75, 0.15, 0.10, 1.0), (0.85, 0.55, 0.10, 1.0))
_BUS_PAINT: tuple[RGBA, ...] = (
    (0.90, 0.75, 0.10, 1.0), (0.85, 0.12, 0.10, 1.0), (0.15, 0.40, 0.70, 1.0),
    (0.92, 0.92, 0.92, 1.0), (0.15, 0.55, 0.30, 1.0))
_SHIRT: tuple[RGBA, ...] = (
    (0.80, 0.15, 0.15, 1.0), (0.15, 0.30, 0.70, 1.0), (0.90, 0.90, 0.90, 1.0),
    (0.15, 0.15, 0.15, 1.0), (0.95, 0.55, 0.10, 1.0), (0.30, 0.60, 0.25, 1.0),
    (0.95, 0.85, 0.20, 1.0), (0.55, 0.25, 0.55, 1.0))
_TROUSERS: tuple[RGBA, ...] = (
    (0.12, 0.15, 0.30, 1.0), (0.10, 0.10, 0.10, 1.0), (0.35, 0.30, 0.25, 1.0),
    (0.45, 0.45, 0.48, 1.0), (0.20, 0.25, 0.45, 1.0))
_SKIN: tuple[RGBA, ...] = (
    (0.96, 0.80, 0.69, 1.0), (0.88, 0.67, 0.52, 1.0), (0.76, 0.55, 0.40, 1.0),
    (0.55, 0.38, 0.26, 1.0), (0.36, 0.24, 0.16, 1.0))
_BIKE: tuple[RGBA, ...] = (
    (0.10, 0.10, 0.10, 1.0), (0.75, 0.10, 0.10, 1.0), (0.10, 0.35, 0.75, 1.0),
    (0.90, 0.90, 0.90, 1.0), (0.20, 0.60, 0.30, 1.0))

#: colour roles per class and the palette each is drawn from
PALETTES: Mapping[ObjectClass, Mapping[str, tuple[RGBA, ...]]] = MappingProxyType({
    ObjectClass.CAR: MappingProxyType({"body": _CAR_PAINT}),
    ObjectClass.TRUCK: MappingProxyType({"cab": _CAR_PAINT, "cargo": _CARGO}),
    ObjectClass.BUS: MappingProxyType({"body": _BUS_PAINT}),
    ObjectClass.PEDESTRIAN: MappingProxyType({"shirt": _SHIRT, "trousers": _TROUSERS,
                                              "skin": _SKIN}),
    ObjectClass.CYCLIST: MappingProxyType({"bike": _BIKE, "shirt": _SHIRT,
                                           "trousers": _TROUSERS, "skin": _SKIN}),
})

_HEADLIGHT: RGBA = (1.0, 0.97, 0.85, 1.0)
_TAILLIGHT: RGBA = (0.80, 0.05, 0.05, 1.0)
_GLASS: RGBA = (0.12, 0.16, 0.20, 1.0)


def _part(shape: str, center: tuple[float, float, float], size: tuple[float, float, float],
          material: Material, rgba: RGBA | None = None, axis: str = "z") -> ActorPart:
    return ActorPart(shape, np.array(center), np.array(size), material, axis, rgba)


def _wheel(x: float, y: float, diameter: float, width: float) -> ActorPart:
    return _part("cylinder", (x, y, diameter / 2), (diameter, diameter, width), Material.TIRE,
                 axis="y")


def _car_parts(size: F64, body: RGBA) -> list[ActorPart]:
    """Body, glass cabin, 4 tyres (axis y), 2 headlights, 2 tail lights."""
    ln, w, h = (float(v) for v in size)
    d = min(0.42 * h, 0.7)                 # tyre diameter
    tw = min(0.22, 0.12 * w)               # tyre width
    axle = 0.31 * ln                       # wheelbase ~ 0.62 length
    z_body_lo, z_body_hi = 0.45 * d, 0.62 * h
    parts = [_part("box", (0.0, 0.0, (z_body_lo + z_body_hi) / 2),
                   (ln, w - 0.02, z_body_hi - z_body_lo), Material.VEHICLE_PAINT, body),
             _part("box", (-0.06 * ln, 0.0, (z_body_hi + h) / 2),
                   (0.52 * ln, 0.88 * w, h - z_body_hi), Material.GLASS, _GLASS)]
    parts += [_wheel(sx * axle, sy * (w - tw) / 2, d, tw) for sx in (1, -1) for sy in (1, -1)]
    z_light = 0.5 * (z_body_lo + z_body_hi) + 0.1 * (z_body_hi - z_body_lo)
    lsize = (0.04, 0.18 * w, 0.12 * (z_body_hi - z_body_lo) + 0.04)
    for sy in (1, -1):
        parts.append(_part("box", (ln / 2 - 0.02, sy * 0.33 * w, z_light), lsize, Material.GLASS,
                           _HEADLIGHT))
        parts.append(_part("box", (-ln / 2 + 0.02, sy * 0.33 * w, z_light), lsize, Material.GLASS,
                           _TAILLIGHT))
    return parts


def _truck_parts(size: F64, cab: RGBA, cargo: RGBA) -> list[ActorPart]:
    """Cab, windscreen, cargo box, chassis, 6 wheels (3 axles)."""
    ln, w, h = (float(v) for v in size)
    d = 1.0
    cab_len = 2.3
    cab_h = min(0.8 * h, 3.0)
    parts = [
        _part("box", (ln / 2 - cab_len / 2, 0.0, (0.55 + cab_h) / 2),
              (cab_len - 0.04, w - 0.02, cab_h - 0.55), Material.VEHICLE_PAINT, cab),
        _part("box", (ln / 2 - 0.02, 0.0, 0.55 + 0.72 * (cab_h - 0.55)),
              (0.04, w - 0.2, 0.4 * (cab_h - 0.55)), Material.GLASS, _GLASS),
        _part("box", (-cab_len / 2 - 0.05, 0.0, (1.15 + h) / 2),
              (ln - cab_len - 0.1, w, h - 1.15), Material.METAL, cargo),
        _part("box", (0.0, 0.0, 0.8), (ln - 0.4, 0.9 * w, 0.35), Material.METAL,
              (0.15, 0.15, 0.15, 1.0)),
    ]
    tw = 0.3
    for x in (ln / 2 - 1.4, -ln / 2 + 2.9, -ln / 2 + 1.6):
        for sy in (1, -1):
            parts.append(_wheel(x, sy * (w - tw) / 2, d, tw))
    return parts


def _bus_parts(size: F64, body: RGBA) -> list[ActorPart]:
    """Body, window band, windscreen, destination sign, 4 wheels."""
    ln, w, h = (float(v) for v in size)
    d = 1.0
    z_lo = 0.3
    parts = [
        _part("box", (0.0, 0.0, (z_lo + h) / 2), (ln - 0.04, w - 0.04, h - z_lo),
              Material.VEHICLE_PAINT, body),
        _part("box", (-0.1, 0.0, 0.70 * h), (ln - 1.2, w, 0.28 * h), Material.GLASS, _GLASS),
        _part("box", (ln / 2 - 0.02, 0.0, 0.62 * h), (0.04, w - 0.3, 0.45 * h), Material.GLASS,
              _GLASS),
        _part("box", (ln / 2 - 0.02, 0.0, 0.92 * h), (0.04, 0.6 * w, 0.08 * h), Material.GLASS,
              (0.95, 0.60, 0.10, 1.0)),
    ]
    tw = 0.3
    for x in (ln / 2 - 2.5, -ln / 2 + 3.0):
        for sy in (1, -1):
            parts.append(_wheel(x, sy * (w - tw) / 2, d, tw))
    return parts


def _pedestrian_parts(size: F64, shirt: RGBA, trousers: RGBA, skin: RGBA) -> list[ActorPart]:
    """2 leg capsules, torso, 2 arm capsules, head sphere."""
    ln, w, h = (float(v) for v in size)
    leg_r = min(0.075, 0.11 * w)
    hip = 0.48 * h
    parts = [_part("capsule", (0.0, sy * 0.18 * w, hip / 2),
                   (2 * leg_r, 2 * leg_r, hip - 2 * leg_r), Material.CLOTH, trousers)
             for sy in (1, -1)]
    shoulder = 0.82 * h
    torso_w = min(0.62 * w, w - 4 * 0.05)
    parts.append(_part("box", (0.0, 0.0, (hip + shoulder) / 2),
                       (min(0.5 * ln, 0.28), torso_w, shoulder - hip + 0.04), Material.CLOTH,
                       shirt))
    arm_r = 0.045
    arm_lo = 0.50 * h
    for sy in (1, -1):
        parts.append(_part("capsule", (0.0, sy * (torso_w / 2 + arm_r), (arm_lo + shoulder) / 2),
                           (2 * arm_r, 2 * arm_r, shoulder - arm_lo - 2 * arm_r), Material.SKIN,
                           skin))
    head_d = 0.125 * h
    parts.append(_part("sphere", (0.0, 0.0, h - head_d / 2), (head_d, head_d, head_d),
                       Material.SKIN, skin))
    return parts


def _cyclist_parts(size: F64, bike: RGBA, shirt: RGBA, trousers: RGBA,
                   skin: RGBA) -> list[ActorPart]:
    """2 wheels (axis y), frame, handlebar, rider legs, torso, arms, head."""
    ln, w, h = (float(v) for v in size)
    d = min(0.68, ln / 2 - 0.05)
    xf, xr = ln / 2 - d / 2, -ln / 2 + d / 2
    parts = [_wheel(xf, 0.0, d, 0.05), _wheel(xr, 0.0, d, 0.05)]
    frame_z = d / 2 + 0.2
    parts.append(_part("box", ((xf + xr) / 2, 0.0, frame_z), (xf - xr, 0.05, 0.06),
                       Material.METAL, bike))
    bar_x = xf - 0.12
    bar_z = d + 0.35
    parts.append(_part("box", (bar_x, 0.0, bar_z), (0.05, 0.95 * w, 0.04), Material.METAL, bike))
    seat_x, seat_z = xr + 0.35 * (xf - xr), d / 2 + 0.45
    parts.append(_part("box", (seat_x + 0.1, 0.0, seat_z / 2 + 0.15), (0.18, 0.3, seat_z - 0.1),
                       Material.CLOTH, trousers))
    shoulder = 0.85 * h
    parts.append(_part("box", (seat_x + 0.12, 0.0, (seat_z + shoulder) / 2),
                       (0.3, min(0.4, w - 0.1), shoulder - seat_z), Material.CLOTH, shirt))
    arm_len = bar_x - seat_x - 0.2
    for sy in (1, -1):
        parts.append(_part("capsule", ((bar_x + seat_x + 0.2) / 2, sy * 0.2,
                                       (bar_z + shoulder) / 2),
                           (0.08, 0.08, max(arm_len - 0.08, 0.05)), Material.SKIN, skin, "x"))
    head_d = min(0.22, 0.13 * h)
    parts.append(_part("sphere", (seat_x + 0.2, 0.0, h - head_d / 2), (head_d,) * 3,
                       Material.SKIN, skin))
    return parts


def _color(colors: Mapping[str, Any], role: str, key: str) -> RGBA:
    value = colors[role]
    arr = np.asarray(value, dtype=np.float64) if _is_numeric_seq(value) else None
    if arr is None or arr.shape not in ((3,), (4,)) or not np.all(np.isfinite(arr)) \
            or np.any(arr < 0) or np.any(arr > 1):
        raise KeyedConfigError(f"{key}.{role}", f"expected [r, g, b] or [r, g, b, a] in [0, 1], "
                               f"got {value!r}")
    if arr.shape == (3,):
        arr = np.append(arr, 1.0)
    return (float(arr[0]), float(arr[1]), float(arr[2]), float(arr[3]))


def _is_numeric_seq(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray) and all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
        for v in value)


def build_actor_model(object_class: ObjectClass, size: Any, colors: Mapping[str, Any],
                      key: str = "model") -> ActorModel:
    """The model of an agent of a given size and colours (deterministic).

    Args:
        object_class: one of :data:`AGENT_CLASSES`.
        size: ``(3,)`` length, width, height, m (all > 0).
        colors: role -> ``[r, g, b(, a)]`` in [0, 1], exactly the roles of
            ``PALETTES[object_class]`` (e.g. ``body`` for a car).
        key: key path used in error messages.

    Raises:
        KeyedConfigError: unknown class, bad size, unknown/missing colour role, bad colour.
    """
    cls = ObjectClass(object_class)
    if cls not in SIZE_RANGES:
        raise KeyedConfigError(f"{key}.class", f"no model for class {cls.value!r} (allowed: "
                               f"{', '.join(c.value for c in AGENT_CLASSES)})")
    dims = _check_size(size, f"{key}.size")
    roles = PALETTES[cls]
    unknown = sorted(set(colors) - set(roles))
    if unknown:
        raise KeyedConfigError(f"{key}.colors.{unknown[0]}", f"unknown colour role for a "
                               f"{cls.value} (allowed: {', '.join(roles)})")
    missing = [r for r in roles if r not in colors]
    if missing:
        raise KeyedConfigError(f"{key}.colors", f"missing colour role(s) {missing}")
    rgba = {role: _color(colors, role, f"{key}.colors") for role in roles}
    if cls == ObjectClass.CAR:
        parts = _car_parts(dims, rgba["body"])
    elif cls == ObjectClass.TRUCK:
        parts = _truck_parts(dims, rgba["cab"], rgba["cargo"])
    elif cls == ObjectClass.BUS:
        parts = _bus_parts(dims, rgba["body"])
    elif cls == ObjectClass.PEDESTRIAN:
        parts = _pedestrian_parts(dims, rgba["shirt"], rgba["trousers"], rgba["skin"])
    else:
        parts = _cyclist_parts(dims, rgba["bike"], rgba["shirt"], rgba["trousers"], rgba["skin"])
    return ActorModel(cls, dims, tuple(parts))


def _check_size(size: Any, key: str) -> F64:
    if not _is_numeric_seq(size) or len(size) != 3:
        raise KeyedConfigError(key, f"expected [length, width, height] in m, got {size!r}")
    dims = np.array(size, dtype=np.float64)
    if not np.all(np.isfinite(dims)) or np.any(dims <= 0):
        raise KeyedConfigError(key, f"length, width and height must be positive, got "
                               f"{dims.tolist()}")
    if np.any(dims > 30.0):
        raise KeyedConfigError(key, f"an agent larger than 30 m is not realistic, got "
                               f"{dims.tolist()}")
    return dims


def draw_size(object_class: ObjectClass, rng: np.random.Generator) -> F64:
    """``(3,)`` length, width, height drawn uniformly from :data:`SIZE_RANGES`, m."""
    ranges = np.array(SIZE_RANGES[ObjectClass(object_class)])
    return rng.uniform(ranges[:, 0], ranges[:, 1])


def draw_colors(object_class: ObjectClass, rng: np.random.Generator) -> dict[str, RGBA]:
    """Role -> RGBA drawn from the class palettes (with a small brightness jitter)."""
    out: dict[str, RGBA] = {}
    for role, palette in PALETTES[ObjectClass(object_class)].items():
        base = np.array(palette[int(rng.integers(len(palette)))])
        rgb = np.clip(base[:3] * rng.uniform(0.9, 1.1), 0.0, 1.0)
        out[role] = (float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0)
    return out


def make_actor_model(object_class: ObjectClass, rng: np.random.Generator) -> ActorModel:
    """A random model of class ``object_class``: size from :data:`SIZE_RANGES`, colours from
    :data:`PALETTES`, drawn from ``rng`` (size first, then colours)."""
    size = draw_size(object_class, rng)
    return build_actor_model(object_class, size.tolist(), draw_colors(object_class, rng))


#: ego body sizes per platform (length, width, height), m
EGO_SIZES: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "vehicle": (4.6, 1.9, 1.5), "robot": (0.7, 0.55, 0.9)})


def make_ego_model(platform: str) -> ActorModel:
    """The ego's body (class UNKNOWN); its frame is ``base_link`` (footprint centre).

    ``vehicle``: a 4.6 x 1.9 x 1.5 m car (same parts as an agent car, white).
    ``robot``: a 0.7 x 0.55 x 0.9 m mobile base (chassis, 4 wheels, bumper, mast and a
    sensor head at the top of the mast).

    Raises:
        KeyedConfigError: unknown platform.
    """
    if platform == "vehicle":
        size = np.array(EGO_SIZES["vehicle"])
        return ActorModel(ObjectClass.UNKNOWN, size,
                          tuple(_car_parts(size, (0.95, 0.95, 0.95, 1.0))))
    if platform == "robot":
        ln, w, h = EGO_SIZES["robot"]
        orange = (0.95, 0.45, 0.05, 1.0)
        parts = [
            _part("box", (0.0, 0.0, 0.24), (ln - 0.04, w - 0.1, 0.3), Material.METAL, orange),
            _part("box", (ln / 2 - 0.03, 0.0, 0.12), (0.06, w - 0.14, 0.08), Material.TIRE),
            _part("box", (-0.15, 0.0, 0.6), (0.08, 0.08, 0.6), Material.METAL,
                  (0.3, 0.3, 0.32, 1.0)),
            _part("box", (-0.1, 0.0, 0.85), (0.22, 0.2, 0.1), Material.METAL,
                  (0.15, 0.15, 0.17, 1.0)),
        ]
        parts += [_wheel(sx * 0.22, sy * (w - 0.05) / 2, 0.18, 0.05)
                  for sx in (1, -1) for sy in (1, -1)]
        return ActorModel(ObjectClass.UNKNOWN, np.array([ln, w, h]), tuple(parts))
    raise KeyedConfigError("platform", f"unknown platform {platform!r} (allowed: "
                           f"{', '.join(EGO_SIZES)})")


def model_colors(model: ActorModel) -> dict[str, RGBA]:
    """Inverse of :func:`build_actor_model` for the colours: role -> RGBA of an agent model.

    Raises:
        ValueError: the model was not made by :func:`build_actor_model`.
    """
    cls = model.object_class
    parts = model.parts
    if cls == ObjectClass.CAR or cls == ObjectClass.BUS:
        roles = {"body": parts[0].rgba}
    elif cls == ObjectClass.TRUCK:
        roles = {"cab": parts[0].rgba, "cargo": parts[2].rgba}
    elif cls == ObjectClass.PEDESTRIAN:
        roles = {"shirt": parts[2].rgba, "trousers": parts[0].rgba, "skin": parts[-1].rgba}
    elif cls == ObjectClass.CYCLIST:
        roles = {"bike": parts[2].rgba, "shirt": parts[5].rgba, "trousers": parts[4].rgba,
                 "skin": parts[-1].rgba}
    else:
        raise ValueError(f"no colour roles for class {cls.value!r}")
    out: dict[str, RGBA] = {}
    for role, rgba in roles.items():
        if rgba is None:
            raise ValueError(f"{cls.value} model has no colour for {role!r}")
        out[role] = rgba
    return out


# ---------------------------------------------------------------------------- footprints


def footprints(xy_yaw: Any, half_sizes: Any) -> F64:
    """Footprint corners of many upright boxes.

    Args:
        xy_yaw: ``(N, 3)`` centre ``x, y`` (m) and ``yaw`` (rad), world frame.
        half_sizes: ``(N, 2)`` half length and half width, m.

    Returns:
        ``(N, 4, 2)`` float64 corners, counter-clockwise from front-right (world frame, m).
    """
    pose = np.asarray(xy_yaw, dtype=np.float64).reshape(-1, 3)
    half = np.asarray(half_sizes, dtype=np.float64).reshape(-1, 2)
    signs = np.array([[1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]])
    local = signs[None, :, :] * half[:, None, :]                     # (N, 4, 2)
    c, s = np.cos(pose[:, 2])[:, None], np.sin(pose[:, 2])[:, None]
    x = pose[:, 0:1] + c * local[..., 0] - s * local[..., 1]
    y = pose[:, 1:2] + s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y], axis=-1)


def footprint(state: ActorState, model: ActorModel) -> F64:
    """``(4, 2)`` world corners of an actor's ground-truth box footprint (counter-clockwise
    from front-right), m."""
    return footprints([[state.x, state.y, state.yaw]], [model.size[:2] / 2])[0]


def overlap_matrix(corners: Any, tol: float = 1e-9) -> npt.NDArray[np.bool_]:
    """Pairwise overlap of convex quadrilaterals by the separating axis theorem.

    Args:
        corners: ``(N, 4, 2)`` corners of N rectangles (any consistent winding), m.
        tol: boxes whose projections overlap by less than ``tol`` (m) on some axis count as
            separate (touching is not a collision).

    Returns:
        ``(N, N)`` bool, symmetric, False on the diagonal.
    """
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    n = c.shape[0]
    edges = np.stack([c[:, 1] - c[:, 0], c[:, 2] - c[:, 1]], axis=1)  # (N, 2, 2)
    norms = np.linalg.norm(edges, axis=-1, keepdims=True)
    axes = edges / np.where(norms > 0, norms, 1.0)
    normals = np.stack([-axes[..., 1], axes[..., 0]], axis=-1)         # (N, 2, 2)
    proj = np.einsum("ncd,mkd->mnkc", c, normals)                      # (M axes-owner, N, 2, 4)
    lo, hi = proj.min(axis=3), proj.max(axis=3)                         # (M, N, 2)
    own = np.arange(n)
    lo_own, hi_own = lo[own, own], hi[own, own]                         # (N, 2)
    sep = np.any((lo >= hi_own[:, None, :] - tol) | (hi <= lo_own[:, None, :] + tol), axis=2)
    sep = sep | sep.T
    out = ~sep
    np.fill_diagonal(out, False)
    return out


def boxes_overlap(a_corners: Any, b_corners: Any) -> bool:
    """Whether two ``(4, 2)`` footprints (convex quadrilaterals) overlap (separating axes)."""
    return bool(overlap_matrix(np.stack([np.asarray(a_corners, dtype=np.float64),
                                         np.asarray(b_corners, dtype=np.float64)]))[0, 1])


def find_collisions(states: Sequence[ActorState],
                    models: Mapping[int, ActorModel]) -> list[tuple[int, int]]:
    """Pairs of actors whose footprints overlap.

    Args:
        states: actor states (ego id 0 and agents).
        models: actor id -> model, for every id in ``states``.

    Returns:
        ``(id_a, id_b)`` pairs with ``id_a < id_b``, sorted.
    """
    if len(states) < 2:
        return []
    ids = np.array([st.actor_id for st in states])
    pose = np.array([[st.x, st.y, st.yaw] for st in states])
    half = np.array([models[st.actor_id].size[:2] / 2 for st in states])
    hits = overlap_matrix(footprints(pose, half))
    i, j = np.nonzero(np.triu(hits, 1))
    pairs = sorted((int(min(ids[a], ids[b])), int(max(ids[a], ids[b]))) for a, b in zip(i, j,
                                                                                         strict=True))
    return pairs


__all__ = ["AGENT_CLASSES", "EGO_SIZES", "PALETTES", "SIZE_RANGES", "boxes_overlap",
           "build_actor_model", "draw_colors", "draw_size", "find_collisions", "footprint",
           "footprints", "make_actor_model", "make_ego_model", "model_colors", "overlap_matrix"]

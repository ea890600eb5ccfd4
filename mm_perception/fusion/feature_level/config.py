"""Configuration of the feature-level (BEV) fusion model.

The bird's-eye-view grid lives in ``base_link`` at the set stamp (x forward, y left, z up,
origin on the ground under the vehicle's footprint centre). Cell ``(i, j)`` covers
``x in [x_min + i * cell_m, x_min + (i + 1) * cell_m)`` and
``y in [y_min + j * cell_m, y_min + (j + 1) * cell_m)``; BEV tensors are ``(C, nx, ny)``
(rows along x, columns along y) and a flat cell index is ``i * ny + j``.

Modalities are named ``camera``, ``lidar``, ``radar`` (:data:`MODALITIES`, also the order of
the model's ``present`` input).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import ObjectClass

#: classes the model detects (index = heatmap channel)
CLASSES: tuple[ObjectClass, ...] = (ObjectClass.CAR, ObjectClass.TRUCK, ObjectClass.BUS,
                                    ObjectClass.PEDESTRIAN, ObjectClass.CYCLIST)
#: modality names, in the order of the model's ``present`` input
MODALITIES: tuple[str, ...] = ("camera", "lidar", "radar")
#: the rig the default model is trained for
DEFAULT_RIG = Path(__file__).resolve().parents[3] / "config" / "rigs" / "car.yaml"
#: fusers selectable by config
FUSERS: tuple[str, ...] = ("concat", "attention")
#: per-point input features of the LiDAR pillar encoder (see the processor)
LIDAR_POINT_FEATURES = 9
#: per-point input features of the radar pillar encoder (see the processor)
RADAR_POINT_FEATURES = 9


def _pos(value: Any, key: str, integer: bool = False) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else (
        isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(float(value)))
    if not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{key} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class BevGrid:
    """The BEV grid (metres, ``base_link``).

    Attributes:
        x_range_m / y_range_m: ``(min, max)`` extent; each span must be a whole number of
            cells.
        z_range_m: heights of points used (others dropped), m above the ground plane.
        cell_m: cell edge, m.
    """

    x_range_m: tuple[float, float] = (-50.0, 50.0)
    y_range_m: tuple[float, float] = (-50.0, 50.0)
    z_range_m: tuple[float, float] = (-1.0, 4.0)
    cell_m: float = 1.0

    def __post_init__(self) -> None:
        _pos(self.cell_m, "BevGrid.cell_m")
        for key in ("x_range_m", "y_range_m", "z_range_m"):
            try:
                val = tuple(float(v) for v in getattr(self, key))
            except (TypeError, ValueError):
                raise ConfigError(f"BevGrid.{key} must be (min, max) metres, got "
                                  f"{getattr(self, key)!r}") from None
            if len(val) != 2 or not all(math.isfinite(v) for v in val) or val[0] >= val[1]:
                raise ConfigError(f"BevGrid.{key} must be (min, max) with min < max, got "
                                  f"{getattr(self, key)!r}")
            object.__setattr__(self, key, val)
        for key in ("x_range_m", "y_range_m"):
            lo, hi = getattr(self, key)
            cells = (hi - lo) / self.cell_m
            if abs(cells - round(cells)) > 1e-6 or round(cells) % 4:
                raise ConfigError(f"BevGrid.{key} span {hi - lo} m is not a multiple of 4 "
                                  f"cells of {self.cell_m} m (the backbone halves the grid "
                                  f"twice)")

    @property
    def nx(self) -> int:
        return round((self.x_range_m[1] - self.x_range_m[0]) / self.cell_m)

    @property
    def ny(self) -> int:
        return round((self.y_range_m[1] - self.y_range_m[0]) / self.cell_m)


def _grid_from(data: object) -> BevGrid:
    """A :class:`BevGrid` from a mapping (a JSON config), unknown keys refused by name."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"BevModelConfig.grid must be a mapping, got {data!r}")
    unknown = sorted(set(data) - {f.name for f in fields(BevGrid)})
    if unknown:
        raise ConfigError(f"BevModelConfig.grid: unknown key(s) {unknown}")
    return BevGrid(**data)


#: keys added to :class:`BevModelConfig` after weights were first saved -> the value that
#: weights saved without the key were trained with (their ``config.json`` lacks it, and
#: today's default would decode them wrongly)
SAVED_BEFORE_KEY: dict[str, Any] = {"regression_radius_cells": 0}


@dataclass(frozen=True)
class BevModelConfig:
    """Architecture and decoding of the BEV fusion detector.

    Attributes:
        grid: the BEV grid.
        modalities: modalities the model has encoders for (a subset of :data:`MODALITIES`);
            single-modality baselines are models with one.
        fuser: ``concat`` (channel concatenation + conv) or ``attention`` (per-cell
            cross-attention over the modality features).
        bev_channels: channels of each modality's BEV features and of the fused map.
        backbone_channels: channels of the two downsampled backbone stages.
        camera_channels: channels of the camera features lifted to BEV.
        depth_min_m / depth_max_m / depth_bins: the camera's depth distribution (uniform
            bins along the optical axis).
        lift_heights_m: heights above the ground at which each BEV cell is looked up in the
            image (the lift samples a column of the cell).
        attention_heads: heads of the attention fuser.
        lidar_points_per_pillar / radar_points_per_pillar: points kept per BEV cell (the
            first ones; PointPillars' dense layout).
        score_threshold: minimum heatmap score of a decoded object.
        max_objects: at most this many objects per frame.
        nms_radius_m: a peak within this BEV distance of a higher one (any class) is dropped.
        position_std_m / yaw_std_rad / velocity_std_mps: 1-sigma of the output covariance.
        regression_radius_cells: the box regressions (offset, height, size, yaw, velocity)
            are trained on the cells within this Chebyshev radius of each object's centre
            cell, the offset relative to each cell, so that a heatmap peak one cell off the
            centre still decodes the right box (long vehicles peak a cell off at 1 m cells);
            the offset output then spans ``[-r, 1 + r]`` cells. 0: the centre cell only
            (CenterPoint; offset in ``[0, 1]``). A saved ``config.json`` without the key
            (written before it existed) loads as 0, see :data:`SAVED_BEFORE_KEY`.
    """

    grid: BevGrid = field(default_factory=BevGrid)
    modalities: tuple[str, ...] = MODALITIES
    fuser: str = "concat"
    bev_channels: int = 32
    backbone_channels: tuple[int, int] = (64, 96)
    camera_channels: int = 32
    depth_min_m: float = 1.0
    depth_max_m: float = 61.0
    depth_bins: int = 30
    lift_heights_m: tuple[float, ...] = (0.5, 1.25, 2.0)
    attention_heads: int = 4
    lidar_points_per_pillar: int = 32
    radar_points_per_pillar: int = 8
    score_threshold: float = 0.2
    max_objects: int = 100
    nms_radius_m: float = 1.0
    position_std_m: float = 0.5
    yaw_std_rad: float = 0.2
    velocity_std_mps: float = 1.5
    regression_radius_cells: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.grid, Mapping):
            object.__setattr__(self, "grid", _grid_from(self.grid))
        if not isinstance(self.grid, BevGrid):
            raise ConfigError(f"BevModelConfig.grid must be a BevGrid, got {self.grid!r}")
        mods = tuple(self.modalities) if not isinstance(self.modalities, str) else ()
        if not mods or any(m not in MODALITIES for m in mods) or len(set(mods)) != len(mods):
            raise ConfigError(f"BevModelConfig.modalities must be distinct names from "
                              f"{list(MODALITIES)}, got {self.modalities!r}")
        object.__setattr__(self, "modalities", tuple(m for m in MODALITIES if m in mods))
        if self.fuser not in FUSERS:
            raise ConfigError(f"BevModelConfig.fuser must be one of {list(FUSERS)}, got "
                              f"{self.fuser!r}")
        for key in ("bev_channels", "camera_channels", "depth_bins", "attention_heads",
                    "max_objects", "lidar_points_per_pillar", "radar_points_per_pillar"):
            _pos(getattr(self, key), f"BevModelConfig.{key}", integer=True)
        if self.bev_channels % self.attention_heads:
            raise ConfigError(f"BevModelConfig.bev_channels ({self.bev_channels}) must be a "
                              f"multiple of attention_heads ({self.attention_heads})")
        r = self.regression_radius_cells
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 3:
            raise ConfigError(f"BevModelConfig.regression_radius_cells must be an integer in "
                              f"0..3, got {r!r}")
        chans = tuple(self.backbone_channels)
        if len(chans) != 2:
            raise ConfigError(f"BevModelConfig.backbone_channels must be 2 integers, got "
                              f"{self.backbone_channels!r}")
        for c in chans:
            _pos(c, "BevModelConfig.backbone_channels", integer=True)
        object.__setattr__(self, "backbone_channels", chans)
        for key in ("depth_min_m", "depth_max_m", "nms_radius_m", "position_std_m",
                    "yaw_std_rad", "velocity_std_mps"):
            _pos(getattr(self, key), f"BevModelConfig.{key}")
        if self.depth_min_m >= self.depth_max_m:
            raise ConfigError(f"BevModelConfig.depth_min_m ({self.depth_min_m}) must be < "
                              f"depth_max_m ({self.depth_max_m})")
        try:
            heights = tuple(float(h) for h in self.lift_heights_m)
        except (TypeError, ValueError):
            raise ConfigError(f"BevModelConfig.lift_heights_m must be heights in metres, got "
                              f"{self.lift_heights_m!r}") from None
        if not heights or not all(math.isfinite(h) for h in heights):
            raise ConfigError(f"BevModelConfig.lift_heights_m must be finite heights, got "
                              f"{self.lift_heights_m!r}")
        object.__setattr__(self, "lift_heights_m", heights)
        _pos(self.score_threshold, "BevModelConfig.score_threshold")
        if not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"BevModelConfig.score_threshold must be in (0, 1), got "
                              f"{self.score_threshold!r}")

    @property
    def num_classes(self) -> int:
        return len(CLASSES)

    @property
    def depth_step_m(self) -> float:
        return (self.depth_max_m - self.depth_min_m) / self.depth_bins

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, saved: bool = True) -> BevModelConfig:
        """Config from its :meth:`to_dict` form.

        Args:
            data: the mapping; unknown keys are an error.
            saved: True for a config saved beside weights: a key missing from it takes the
                value the weights were trained with before the key existed
                (:data:`SAVED_BEFORE_KEY`), not today's default. False for a partial config
                written by hand for training: missing keys take the defaults.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"BevModelConfig: unknown key(s) {unknown}")
        kw = ({k: v for k, v in SAVED_BEFORE_KEY.items() if k not in data} if saved
              else {})
        kw.update(data)
        if "grid" in kw:
            kw["grid"] = _grid_from(kw["grid"])
        for key in ("modalities", "backbone_channels", "lift_heights_m"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, *, saved: bool = True) -> BevModelConfig:
        """Config from a JSON file (``saved``: see :meth:`from_dict`)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the BEV model config {path}: {exc}") from exc
        return cls.from_dict(data, saved=saved)


__all__ = ["CLASSES", "DEFAULT_RIG", "FUSERS", "LIDAR_POINT_FEATURES", "MODALITIES",
           "RADAR_POINT_FEATURES", "SAVED_BEFORE_KEY", "BevGrid", "BevModelConfig"]

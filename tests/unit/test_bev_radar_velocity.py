"""Velocity of decoded BEV objects from the radar returns in their boxes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass
from mm_perception.fusion.feature_level import detector as detector_module
from mm_perception.fusion.feature_level.detector import BevDetector, BevDetectorConfig
from mm_perception.fusion.feature_level.processor import RawFrame
from mm_perception.fusion.feature_level.radar_velocity import (
    RadarVelocityConfig,
    refine_velocity,
)


def obj(x: float, y: float, yaw: float, label: ObjectClass = ObjectClass.TRUCK,
        length: float = 8.0, width: float = 2.5) -> DetectedObject:
    return DetectedObject(box=Box3D(np.array([x, y, 1.5]), np.array([length, width, 3.0]), yaw),
                          label=label, score=0.9, velocity=np.zeros(3), sources=("feature",))


def returns(o: DetectedObject, v: np.ndarray, n: int = 6, noise: float = 0.1,
            seed: int = 0, origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """``n`` returns spread over the box, radial velocity over ground ``v . u`` + noise,
    ``u`` the line of sight from a radar at ``origin`` (base_link x, y)."""
    rng = np.random.default_rng(seed)
    h = np.array([np.cos(o.box.yaw), np.sin(o.box.yaw)])
    side = np.array([-h[1], h[0]])
    half_l, half_w = 0.45 * o.box.size[0], 0.45 * o.box.size[1]
    xy = (o.box.center[:2] + np.outer(rng.uniform(-half_l, half_l, n), h)
          + np.outer(rng.uniform(-half_w, half_w, n), side))
    u = (xy - origin) / np.linalg.norm(xy - origin, axis=1, keepdims=True)
    vr = u @ v + rng.normal(0, noise, n)
    return np.column_stack([xy, np.full(n, 1.0), vr, np.full(n, 10.0)]).astype(np.float32)


def test_vehicle_moving_along_its_heading_gets_the_measured_speed() -> None:
    # a lorry crossing ahead at 45 degrees, 7 m/s; the head said 0 m/s
    o = obj(25.0, 20.0, np.pi / 4)
    v = 7.0 * np.array([np.cos(np.pi / 4), np.sin(np.pi / 4)])
    (out,) = refine_velocity([o], returns(o, v))
    assert out.velocity is not None
    np.testing.assert_allclose(out.velocity[:2], v, atol=0.3)
    assert out.velocity[2] == 0.0 and out.sources == ("feature", "radar_velocity")
    # driving away from us, reversing: the sign follows the Doppler
    o2 = obj(30.0, 0.0, 0.0, ObjectClass.CAR, 4.5, 1.8)
    (out2,) = refine_velocity([o2], returns(o2, np.array([-5.0, 0.0]), seed=1))
    assert out2.velocity is not None
    np.testing.assert_allclose(out2.velocity[:2], [-5.0, 0.0], atol=0.2)


def test_left_alone_when_the_radar_cannot_tell() -> None:
    o = obj(0.0, 30.0, 0.0)  # crossing at right angles to the line of sight
    v = np.array([8.0, 0.0])
    assert refine_velocity([o], returns(o, v))[0] is o
    o = obj(25.0, 0.0, 0.0)
    r = returns(o, np.array([6.0, 0.0]))
    two = RadarVelocityConfig(min_returns=2)
    assert refine_velocity([o], r[:1], two)[0] is o  # fewer than min_returns
    # by default one return is enough: its radial velocity over the cosine
    (single,) = refine_velocity([o], r[:1])
    u = r[0, :2] / np.linalg.norm(r[0, :2])
    assert single.velocity is not None
    np.testing.assert_allclose(single.velocity[:2], [r[0, 3] / u[0], 0.0], rtol=1e-5)
    ped = obj(10.0, 0.0, 0.0, ObjectClass.PEDESTRIAN, 0.6, 0.6)
    assert refine_velocity([ped], returns(ped, np.array([1.5, 0.0]), n=4))[0] is ped
    off = RadarVelocityConfig(enabled=False)
    assert refine_velocity([o], r, off)[0] is o
    assert refine_velocity([o], np.zeros((0, 5), np.float32))[0] is o
    # returns outside the box (plus margin) do not count
    for axis, shift in ((0, 9.0), (1, 3.0)):  # along the heading / across it
        far = r.copy()
        far[:, axis] += shift
        assert refine_velocity([o], far)[0] is o
    # disagreeing returns (another object, the ground) are not averaged into a speed
    mixed = r.copy()
    mixed[::2, 3] = -6.0
    assert refine_velocity([o], mixed)[0] is o


def test_non_finite_returns_are_ignored() -> None:
    o = obj(25.0, 0.0, 0.0)
    r = returns(o, np.array([6.0, 0.0]))
    bad = np.concatenate([r, np.array([[25.0, 0.0, 1.0, np.nan, 0.0],
                                       [np.inf, 0.0, 1.0, 3.0, 0.0]], np.float32)])
    (out,) = refine_velocity([o], bad)
    assert out.velocity is not None and np.all(np.isfinite(out.velocity))
    np.testing.assert_allclose(out.velocity[:2], [6.0, 0.0], atol=0.2)


def test_line_of_sight_from_the_radar_that_measured_each_return() -> None:
    # a car crossing 5 m ahead of a bumper radar at (3.6, -0.8): seen from base_link the
    # lines of sight are tilted by ~20 degrees, enough to misjudge the speed by ~2 m/s
    o = obj(8.6, 3.0, np.pi / 2, ObjectClass.CAR, 4.5, 1.8)
    v = np.array([0.0, 6.0])
    radar_at = (3.6, -0.8)
    r = returns(o, v, n=8, noise=0.05, origin=radar_at)
    origins = np.tile(np.array([[*radar_at, 0.5]], np.float32), (len(r), 1))
    (out,) = refine_velocity([o], r, origins=origins)
    assert out.velocity is not None and "radar_velocity" in out.sources
    np.testing.assert_allclose(out.velocity[:2], v, atol=0.15)
    (approx,) = refine_velocity([o], r)  # from base_link: biased (or not trusted at all)
    assert approx.velocity is not None and np.linalg.norm(approx.velocity[:2] - v) > 1.0
    # two radars in one frame: each return keeps its own origin
    o2 = obj(-9.0, -4.0, 0.0, ObjectClass.CAR, 4.5, 1.8)
    rear_at = (-1.0, -0.8)
    r2 = returns(o2, np.array([-4.0, 0.0]), n=8, noise=0.05, origin=rear_at, seed=3)
    both = np.concatenate([r, r2])
    org2 = np.concatenate([origins, np.tile(np.array([[*rear_at, 0.5]], np.float32),
                                            (len(r2), 1))])
    out1, out2 = refine_velocity([o, o2], both, origins=org2)
    assert out1.velocity is not None and out2.velocity is not None
    np.testing.assert_allclose(out1.velocity[:2], v, atol=0.15)
    np.testing.assert_allclose(out2.velocity[:2], [-4.0, 0.0], atol=0.15)
    # a return whose origin is not finite is ignored; a wrong shape is refused
    bad = origins.copy()
    bad[0] = np.nan
    (out3,) = refine_velocity([o], r, origins=bad)
    assert out3.velocity is not None
    np.testing.assert_allclose(out3.velocity[:2], v, atol=0.15)
    with pytest.raises(ValueError, match="origins"):
        refine_velocity([o], r, origins=origins[:, :2])
    with pytest.raises(ValueError, match="origins"):
        refine_velocity([o], r, origins=origins[1:])


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"min_returns": 0}, "min_returns"),
    ({"min_rms_cos": 1.5}, "min_rms_cos"),
    ({"max_residual_mps": 0.0}, "max_residual_mps"),
    ({"box_margin_m": -1.0}, "box_margin_m"),
    ({"classes": ("lorry",)}, "classes"),
    ({"enabled": "yes"}, "enabled"),
])
def test_config_errors_name_the_field(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        RadarVelocityConfig(**kwargs)


def test_detector_refines_only_when_the_radar_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    seen_origins: list[Any] = []

    def spy(objects: Any, radar: np.ndarray, config: Any, origins: Any) -> list[DetectedObject]:
        calls.append(len(radar))
        seen_origins.append(origins)
        return list(objects)

    monkeypatch.setattr(detector_module, "refine_velocity", spy)
    rng = np.random.default_rng(0)
    radar = np.column_stack([rng.uniform(5, 30, (12, 2)), np.ones(12), rng.normal(0, 3, 12),
                             np.full(12, 5.0)]).astype(np.float32)
    lidar = np.column_stack([rng.uniform(-20, 20, (300, 2)), rng.uniform(0, 2, 300),
                             np.full(300, 50.0)]).astype(np.float32)
    origins = np.tile(np.array([[2.0, 0.0, 0.5]], np.float32), (12, 1))
    raw = RawFrame(lidar=lidar, radar=radar, images=(), cameras=(), T_cam_base=(),
                   radar_origins=origins)
    BevDetector().detect_frame(raw, 0)
    assert calls == [12]
    np.testing.assert_array_equal(seen_origins[0], origins)  # the radars' positions
    BevDetector(BevDetectorConfig(drop_modalities=("radar",))).detect_frame(raw, 0)
    assert calls == [12]
    with pytest.raises(ConfigError, match="radar_velocity"):
        BevDetectorConfig(radar_velocity=None)  # type: ignore[arg-type]

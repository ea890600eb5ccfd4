"""Output-level fusion: association, covariance-weighted merge, class/velocity sources,
existence, degenerate inputs. References are hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mm_perception.core.errors import ConfigError
from mm_perception.core.types import Box3D, DetectedObject, ObjectClass, SensorKind
from mm_perception.fusion.output_level import (
    OutputLevelConfig,
    OutputLevelFusion,
    SourceNoise,
    _info_merge,
    _inv_small,
)


def _cov(pos_var: tuple[float, float, float], yaw_var: float = 0.01,
         vel_var: float = 1.0) -> np.ndarray:
    return np.diag([*pos_var, yaw_var, vel_var, vel_var]).astype(np.float64)


def _obj(x: float, y: float, z: float = 1.0, *, yaw: float = 0.0,
         size: tuple[float, float, float] = (4.5, 1.8, 1.6),
         label: ObjectClass = ObjectClass.CAR, score: float = 0.8,
         probs: dict[str, float] | None = None, velocity: tuple[float, ...] | None = None,
         cov: np.ndarray | None = None, frame_id: str = "base_link") -> DetectedObject:
    return DetectedObject(Box3D(np.array([x, y, z]), np.array(size), yaw, frame_id), label,
                          score, stamp_ns=5, class_probs=probs or {},
                          velocity=None if velocity is None else np.array(velocity),
                          covariance=cov)


def test_two_sensors_merge_to_covariance_weighted_mean() -> None:
    lidar = _obj(10.0, 0.0, 1.0, cov=_cov((0.04, 0.04, 0.04)))
    camera = _obj(11.0, 0.5, 1.2, cov=_cov((1.0, 0.25, 0.25)))
    out = OutputLevelFusion().fuse({"lidar": [lidar], "camera": [camera]}, 7)
    assert len(out) == 1
    o = out[0]
    # information form, diagonal: x = (x1/v1 + x2/v2) / (1/v1 + 1/v2)
    assert o.box.center[0] == pytest.approx((10 / 0.04 + 11 / 1.0) / (25 + 1), abs=1e-12)
    assert o.box.center[1] == pytest.approx((0 / 0.04 + 0.5 / 0.25) / (25 + 4), abs=1e-12)
    assert o.box.center[2] == pytest.approx((1 / 0.04 + 1.2 / 0.25) / (25 + 4), abs=1e-12)
    assert o.covariance is not None
    np.testing.assert_allclose(np.diag(o.covariance)[:3], [1 / 26, 1 / 29, 1 / 29],
                               rtol=1e-12)
    assert o.stamp_ns == 7
    assert set(o.sources) == {"lidar", "camera"}
    assert o.score == pytest.approx(1 - 0.2 * 0.2)


def test_correlated_covariances_merge_in_information_form() -> None:
    p1 = np.array([[0.5, 0.2, 0.0], [0.2, 0.3, 0.05], [0.0, 0.05, 0.2]])
    p2 = np.array([[0.2, -0.1, 0.0], [-0.1, 0.6, 0.0], [0.0, 0.0, 0.4]])
    c1, c2 = _cov((1, 1, 1)), _cov((1, 1, 1))
    c1[:3, :3], c2[:3, :3] = p1, p2
    x1, x2 = np.array([20.0, 3.0, 1.0]), np.array([20.6, 2.5, 0.8])
    out = OutputLevelFusion().fuse({"lidar": [_obj(*x1, cov=c1)],
                                    "radar": [_obj(*x2, cov=c2)]}, 0)
    assert len(out) == 1
    # the 2x2 x 3x3 case by hand would be long; the textbook formula with explicit inverses
    info = np.linalg.inv(p1) + np.linalg.inv(p2)
    p = np.linalg.inv(info)
    x = p @ (np.linalg.inv(p1) @ x1 + np.linalg.inv(p2) @ x2)
    np.testing.assert_allclose(out[0].box.center, x, atol=1e-10)
    assert out[0].covariance is not None
    np.testing.assert_allclose(out[0].covariance[:3, :3], p, atol=1e-12)


def test_far_apart_objects_stay_separate() -> None:
    # 3 m apart with 0.2 m std: far outside the chi-square gate (but within max distance)
    lidar = _obj(10.0, 0.0, cov=_cov((0.04, 0.04, 0.04)))
    radar = _obj(10.0, 3.0, cov=_cov((0.04, 0.04, 0.04)))
    fusion = OutputLevelFusion()
    out = fusion.fuse({"lidar": [lidar], "radar": [radar]}, 0)
    assert len(out) == 2
    assert fusion.stats["matched"] == 0
    # with loose covariances the same pair is within the gate
    loose = OutputLevelFusion().fuse(
        {"lidar": [_obj(10.0, 0.0, cov=_cov((4.0, 4.0, 4.0)))],
         "radar": [_obj(10.0, 3.0, cov=_cov((4.0, 4.0, 4.0)))]}, 0)
    assert len(loose) == 1
    # beyond max_distance_m nothing matches, whatever the covariance
    far = OutputLevelFusion(OutputLevelConfig(max_distance_m=2.0)).fuse(
        {"lidar": [_obj(10.0, 0.0, cov=_cov((100.0, 100.0, 100.0)))],
         "radar": [_obj(10.0, 3.0, cov=_cov((100.0, 100.0, 100.0)))]}, 0)
    assert len(far) == 2


def test_camera_only_object_kept_with_lower_existence() -> None:
    lidar = _obj(10.0, 0.0, score=0.8)
    camera_same = _obj(10.3, 0.1, score=0.8)
    camera_only = _obj(30.0, -8.0, score=0.8)
    cfg = OutputLevelConfig(single_sensor_existence_factor=0.4)
    out = OutputLevelFusion(cfg).fuse({"lidar": [lidar], "camera": [camera_same, camera_only]},
                                      0)
    assert len(out) == 2
    by_x = sorted(out, key=lambda o: o.box.center[0])
    fused, single = by_x
    assert single.sources == ("camera",)
    assert single.existence_prob == pytest.approx(0.8 * 0.4)
    assert fused.existence_prob == pytest.approx(1 - 0.2 * 0.2)
    assert fused.existence_prob > single.existence_prob
    # the score is the existence: a single-sensor object ranks below a confirmed one
    assert single.score == pytest.approx(single.existence_prob)
    assert fused.score > single.score


def test_class_from_camera_when_present() -> None:
    lidar = _obj(10.0, 0.0, label=ObjectClass.TRUCK, probs={"truck": 0.7, "car": 0.3})
    camera = _obj(10.2, 0.0, label=ObjectClass.CAR, probs={"car": 0.6, "truck": 0.4})
    radar = _obj(10.1, 0.1, label=ObjectClass.UNKNOWN)
    out = OutputLevelFusion().fuse({"radar": [radar], "lidar": [lidar], "camera": [camera]}, 0)
    assert len(out) == 1
    assert out[0].label is ObjectClass.CAR
    assert dict(out[0].class_probs) == {"car": 0.6, "truck": 0.4}
    # without a camera: LiDAR's class wins over the radar's
    out2 = OutputLevelFusion().fuse({"radar": [radar], "lidar": [lidar]}, 0)
    assert out2[0].label is ObjectClass.TRUCK


def test_same_rank_classes_multiply() -> None:
    a = _obj(10.0, 0.0, label=ObjectClass.CAR, probs={"car": 0.6, "truck": 0.4})
    b = _obj(10.1, 0.0, label=ObjectClass.CAR, probs={"car": 0.3, "truck": 0.7})
    out = OutputLevelFusion().fuse({"camera_left": [a], "camera_right": [b]}, 0)
    assert len(out) == 1
    # 0.18 vs 0.28, normalised
    assert out[0].class_probs["car"] == pytest.approx(0.18 / 0.46)
    assert out[0].label is ObjectClass.TRUCK


def test_velocity_from_radar() -> None:
    radar_cov = _cov((0.5, 1.0, 1.0), vel_var=0.09)
    lidar = _obj(10.0, 0.0, velocity=(1.0, 1.0, 0.0), cov=_cov((0.04, 0.04, 0.04),
                                                                 vel_var=4.0))
    radar = _obj(10.2, 0.3, velocity=(7.5, -0.5, 0.0), cov=radar_cov)
    camera = _obj(10.1, 0.0)
    out = OutputLevelFusion().fuse({"camera": [camera], "lidar": [lidar],
                                    "radar": [radar]}, 0)
    assert len(out) == 1
    assert out[0].velocity is not None and out[0].covariance is not None
    np.testing.assert_allclose(out[0].velocity, [7.5, -0.5, 0.0])
    np.testing.assert_allclose(out[0].covariance[4:6, 4:6], np.eye(2) * 0.09)
    # no velocity anywhere: None, and the configured "unknown" variance
    out2 = OutputLevelFusion().fuse({"camera": [camera]}, 0)
    assert out2[0].velocity is None and out2[0].covariance is not None
    assert out2[0].covariance[4, 4] == pytest.approx(10.0 ** 2)


def test_three_sensors_one_object() -> None:
    lists = {"lidar_top": [_obj(15.0, 2.0)], "radar_front": [_obj(15.4, 2.3)],
             "camera_front": [_obj(14.6, 1.9)]}
    out = OutputLevelFusion().fuse(lists, 3)
    assert len(out) == 1
    assert set(out[0].sources) == {"lidar_top", "radar_front", "camera_front"}
    assert out[0].score == pytest.approx(1 - 0.2 ** 3)
    # size from the LiDAR
    lists["lidar_top"] = [_obj(15.0, 2.0, size=(4.0, 2.0, 1.5))]
    out = OutputLevelFusion().fuse(lists, 3)
    np.testing.assert_allclose(out[0].box.size, [4.0, 2.0, 1.5])


def test_result_does_not_depend_on_mapping_order() -> None:
    lists = {"camera": [_obj(14.6, 1.9)], "lidar": [_obj(15.0, 2.0)],
             "radar": [_obj(15.4, 2.3)]}
    a = OutputLevelFusion().fuse(lists, 0)
    b = OutputLevelFusion().fuse(dict(reversed(list(lists.items()))), 0)
    np.testing.assert_array_equal(a[0].box.center, b[0].box.center)


def test_empty_inputs() -> None:
    fusion = OutputLevelFusion()
    assert fusion.fuse({}, 0) == []
    assert fusion.fuse({"lidar": [], "radar": [], "camera": []}, 0) == []
    assert fusion.stats["output"] == 0
    # one modality only: passed through with the single-sensor existence
    out = fusion.fuse({"radar": [_obj(5.0, 1.0), _obj(20.0, -3.0)], "camera": []}, 0)
    assert len(out) == 2
    assert all(o.existence_prob == pytest.approx(0.8 * 0.5) for o in out)
    assert all(o.covariance is not None for o in out)


def test_nan_box_dropped_and_counted() -> None:
    bad = _obj(10.0, 0.0)
    # a Box3D refuses NaN on construction; patch one to act like a corrupted input
    object.__setattr__(bad.box, "center", np.array([np.nan, 0.0, 1.0]))
    nan_cov = _cov((0.04, 0.04, 0.04))
    nan_cov[0, 0] = np.nan
    good = _obj(30.0, 0.0, cov=nan_cov)
    fusion = OutputLevelFusion()
    out = fusion.fuse({"lidar": [bad, good], "camera": [_obj(30.5, 0.0)]}, 0)
    assert fusion.stats["dropped_non_finite"] == 1
    assert fusion.stats["invalid_covariance"] == 1
    assert len(out) == 1
    assert np.all(np.isfinite(out[0].box.center))
    assert out[0].covariance is not None and np.all(np.isfinite(out[0].covariance))


def test_wrong_frame_dropped_and_counted() -> None:
    fusion = OutputLevelFusion()
    out = fusion.fuse({"lidar": [_obj(10.0, 0.0, frame_id="lidar_top"), _obj(20.0, 0.0)]}, 0)
    assert len(out) == 1
    assert fusion.stats["dropped_wrong_frame"] == 1


def test_yaw_merge_across_pi() -> None:
    lidar = _obj(10.0, 0.0, yaw=3.1, cov=_cov((0.04, 0.04, 0.04), yaw_var=0.01))
    camera = _obj(10.0, 0.0, yaw=-3.1, cov=_cov((0.04, 0.04, 0.04), yaw_var=0.03))
    out = OutputLevelFusion().fuse({"lidar": [lidar], "camera": [camera]}, 0)
    assert len(out) == 1
    # weights 100 and 33.3: 3.1 + 0.25 * wrap(-3.1 - 3.1), wrapped
    expected = 3.1 + 0.25 * (2 * math.pi - 6.2)
    diff = (out[0].box.yaw - expected + math.pi) % (2 * math.pi) - math.pi
    assert abs(diff) < 1e-12
    assert out[0].covariance is not None
    assert out[0].covariance[3, 3] == pytest.approx(1 / (100 + 1 / 0.03))
    # equal weights: exactly the wrap point, never the naive mean 0
    camera_eq = _obj(10.0, 0.0, yaw=-3.1, cov=_cov((0.04, 0.04, 0.04), yaw_var=0.01))
    eq = OutputLevelFusion().fuse({"lidar": [lidar], "camera": [camera_eq]}, 0)
    assert abs(abs(eq[0].box.yaw) - math.pi) < 1e-12


def test_yaw_merge_is_modulo_pi() -> None:
    """A radar heading along the velocity (westwards, -3.0 rad) and a camera box axis
    (0.0 rad, no front) are one heading: the merge must not average them into a
    perpendicular box (-1.7 rad before the fix, an oncoming bus turned across the road)."""
    radar = _obj(10.0, 0.0, yaw=-3.0, cov=_cov((0.5, 1.0, 1.0), yaw_var=1.34 ** 2))
    camera = _obj(10.2, 0.1, yaw=0.0, cov=_cov((1.0, 1.0, 1.0), yaw_var=1.57 ** 2))
    out = OutputLevelFusion().fuse({"radar": [radar], "camera": [camera]}, 0)
    assert len(out) == 1
    w_r, w_c = 1 / 1.34 ** 2, 1 / 1.57 ** 2
    # the camera axis taken as -pi, 0.14 rad beyond the radar heading
    expected = -3.0 - w_c / (w_r + w_c) * (math.pi - 3.0)
    diff = (out[0].box.yaw - expected + math.pi) % (2 * math.pi) - math.pi
    assert abs(diff) < 1e-12
    assert abs(math.sin(out[0].box.yaw)) < 0.1  # along the road, not across it


def test_one_to_one_assignment_with_many_objects() -> None:
    rng = np.random.default_rng(3)
    xy = np.column_stack([np.arange(50) * 6.0, rng.uniform(-20, 20, 50)])
    lidar = [_obj(x, y, cov=_cov((0.04, 0.04, 0.04))) for x, y in xy]
    radar = [_obj(x + 0.2, y - 0.2, cov=_cov((0.25, 0.25, 0.25))) for x, y in xy[::-1]]
    out = OutputLevelFusion().fuse({"lidar": lidar, "radar": radar}, 0)
    assert len(out) == 50
    assert all(len(o.sources) == 2 for o in out)


def test_unknown_list_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="front_thing"):
        OutputLevelFusion().fuse({"front_thing": [_obj(1.0, 0.0)]}, 0)
    cfg = OutputLevelConfig(sensor_kinds={"front_thing": SensorKind.RADAR})
    assert len(OutputLevelFusion(cfg).fuse({"front_thing": [_obj(1.0, 0.0)]}, 0)) == 1


BUS = dict(size=(11.0, 2.5, 3.2), label=ObjectClass.BUS)


def _side_returns() -> list[DetectedObject]:
    """Radar objects (sized as cars, 1.5 m std) centred on the near side face of a bus
    parked at (30, -3.2) whose inner face is at y = -1.95."""
    return [_obj(x, y, cov=_cov((2.25, 2.25, 1.0))) for x, y in
            ((26.0, -1.9), (30.0, -2.0), (34.5, -1.8))]


def test_radar_clusters_along_a_bus_are_absorbed_not_new_objects() -> None:
    bus = _obj(30.0, -3.2, 1.6, cov=_cov((0.25, 0.02, 0.02)), **BUS)  # type: ignore[arg-type]
    fusion = OutputLevelFusion(OutputLevelConfig(single_sensor_existence_factor=0.5))
    out = fusion.fuse({"lidar": [bus], "radar": _side_returns()}, 0)
    # one of the three matches the bus, the other two are pieces of it: left as objects,
    # two 1.8-m wide car boxes centred on the bus's face would reach about 0.8 m into the
    # lane beside it
    assert len(out) == 1 and out[0].label is ObjectClass.BUS
    assert fusion.stats["absorbed_fragments"] == 2
    assert out[0].sources[:2] == ("lidar", "radar")
    # the radar saw the bus: it is not a single-sensor object
    assert out[0].existence_prob == pytest.approx(1 - 0.2 * 0.2)
    # switched off, they stay objects of their own
    off = OutputLevelFusion(OutputLevelConfig(fragment_margin_m=None))
    assert len(off.fuse({"lidar": [bus], "radar": _side_returns()}, 0)) == 3
    assert off.stats["absorbed_fragments"] == 0


def test_road_users_and_neighbours_of_a_bus_are_not_absorbed() -> None:
    bus = _obj(30.0, -3.2, 1.6, cov=_cov((0.25, 0.02, 0.02)), **BUS)  # type: ignore[arg-type]
    walker = _obj(33.0, -1.7, size=(0.6, 0.6, 1.7), label=ObjectClass.PEDESTRIAN,
                  cov=_cov((0.5, 0.5, 0.5)))
    cyclist = _obj(27.0, -1.6, size=(1.8, 0.6, 1.7), label=ObjectClass.CYCLIST,
                   cov=_cov((0.5, 0.5, 0.5)))
    # a car parked right behind the bus: its centre is 7.9 m from the bus's (5.5 + 0.5 +
    # 1.9 m): outside the grown box
    behind = _obj(22.1, -3.2, cov=_cov((0.5, 0.5, 0.5)))
    # a car overtaking in the next lane, 1.45 m beside the bus's inner face
    beside = _obj(30.0, -0.5, cov=_cov((0.1, 0.1, 0.1)))
    fusion = OutputLevelFusion()
    out = fusion.fuse({"lidar": [bus],
                       "camera": [walker, cyclist, behind, beside]}, 0)
    assert fusion.stats["absorbed_fragments"] == 0
    labels = sorted(o.label.value for o in out)
    assert labels == ["bus", "car", "car", "cyclist", "pedestrian"]


def test_a_fragment_goes_to_the_object_it_lies_in() -> None:
    # two parked trucks; a radar piece inside the second one marks only that one as seen
    a = _obj(20.0, -3.2, 1.6, cov=_cov((0.04, 0.04, 0.04)), size=(8.0, 2.5, 3.5),
             label=ObjectClass.TRUCK)
    b = _obj(32.0, -3.2, 1.6, cov=_cov((0.04, 0.04, 0.04)), size=(8.0, 2.5, 3.5),
             label=ObjectClass.TRUCK)
    piece = _obj(34.0, -2.2, cov=_cov((0.04, 0.04, 0.04)))  # far outside the tight gate
    fusion = OutputLevelFusion(OutputLevelConfig(single_sensor_existence_factor=0.5))
    out = fusion.fuse({"lidar": [a, b], "radar": [piece]}, 0)
    assert fusion.stats["absorbed_fragments"] == 1 and len(out) == 2
    by_x = sorted(out, key=lambda o: o.box.center[0])
    assert by_x[0].existence_prob == pytest.approx(0.8 * 0.5)   # only the LiDAR saw it
    assert by_x[1].existence_prob == pytest.approx(1 - 0.2)     # the radar covered it too
    assert "radar" not in by_x[1].sources  # absorbed, not merged: nothing of it is used


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"gate": 0.0}, "gate"),
    ({"gate": math.nan}, "gate"),
    ({"max_distance_m": -1.0}, "max_distance_m"),
    ({"single_sensor_existence_factor": 0.0}, "single_sensor_existence_factor"),
    ({"single_sensor_existence_factor": 1.5}, "1.5"),
    ({"class_priority": ("camera", "camera")}, "class_priority"),
    ({"velocity_priority": ("sonar",)}, "sonar"),
    ({"size_priority": ("odometry",)}, "size_priority"),
    ({"noise": {SensorKind.LIDAR: SourceNoise((0.1, 0.1, 0.1), 0.1, 1.0)}}, "noise"),
    ({"sensor_kinds": {"x": "odometry"}}, "odometry"),
    ({"frame_id": ""}, "frame_id"),
    ({"class_prob_floor": 1.0}, "class_prob_floor"),
    ({"fragment_margin_m": -0.1}, "fragment_margin_m"),
    ({"fragment_margin_m": math.inf}, "fragment_margin_m"),
    ({"fragment_margin_m": "0.5"}, "fragment_margin_m"),
])
def test_config_validation(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        OutputLevelConfig(**kwargs)  # type: ignore[arg-type]


def test_source_noise_validation() -> None:
    with pytest.raises(ConfigError, match="position_std_m"):
        SourceNoise((0.1, 0.0, 0.1), 0.1, 1.0)
    with pytest.raises(ConfigError, match="yaw_std_rad"):
        SourceNoise((0.1, 0.1, 0.1), -1.0, 1.0)


def test_single_sensor_penalty_only_where_another_sensor_looked() -> None:
    """A LiDAR object outside the radar's field of view is not unconfirmed; one inside it
    that the radar did not report is; an object two sensors report never is."""
    cfg = OutputLevelConfig(single_sensor_existence_factor=0.5)
    lidar = [_obj(20.0, 0.0, score=0.8), _obj(-20.0, 0.0, score=0.8), _obj(40.0, 5.0)]
    radar = [_obj(40.2, 5.1, score=0.8)]

    def radar_fov(xyz: np.ndarray) -> np.ndarray:
        return xyz[:, 0] > 0.0  # looks forward only

    out = OutputLevelFusion(cfg).fuse({"lidar": lidar, "radar": radar}, 0,
                                      coverage={"radar": radar_fov})
    by_x = {round(o.box.center[0]): o for o in out}
    assert by_x[-20].score == pytest.approx(0.8) and by_x[-20].existence_prob == \
        pytest.approx(0.8)
    assert by_x[20].score == pytest.approx(0.4) and by_x[20].existence_prob == \
        pytest.approx(0.4)
    assert by_x[40].score == pytest.approx(1 - 0.2 * 0.2)
    # without coverage every present list covers everything (the radar list is there)
    out = OutputLevelFusion(cfg).fuse({"lidar": lidar, "radar": radar}, 0)
    assert {round(o.box.center[0]): round(o.score, 3) for o in out}[-20] == 0.4
    # a single list: nobody else looked, nothing is unconfirmed
    out = OutputLevelFusion(cfg).fuse({"lidar": lidar}, 0)
    assert all(o.score == pytest.approx(0.8) for o in out)


@pytest.mark.parametrize("dim", [2, 3])
def test_closed_form_inverse_and_merge_equal_per_object_linalg(dim: int) -> None:
    """The batched closed-form inverse / information merge against ``np.linalg`` applied
    object by object."""
    rng = np.random.default_rng(dim)
    k = 50
    a = rng.normal(size=(k, dim, dim))
    p1 = a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(dim)
    b = rng.normal(size=(k, dim, dim))
    p2 = b @ np.swapaxes(b, 1, 2) + 0.05 * np.eye(dim)
    x1, x2 = rng.normal(size=(k, dim)) * 10, rng.normal(size=(k, dim)) * 10
    inv = _inv_small(p1)
    x, p = _info_merge(x1, p1, x2, p2)
    for i in range(k):
        np.testing.assert_allclose(inv[i], np.linalg.inv(p1[i]), rtol=1e-9, atol=1e-9)
        i1, i2 = np.linalg.inv(p1[i]), np.linalg.inv(p2[i])
        want_p = np.linalg.inv(i1 + i2)
        np.testing.assert_allclose(p[i], 0.5 * (want_p + want_p.T), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(x[i], want_p @ (i1 @ x1[i] + i2 @ x2[i]), rtol=1e-9,
                                   atol=1e-9)


def test_class_probs_of_a_merged_object_stay_read_only_and_inputs_unchanged() -> None:
    lidar = _obj(10.0, 0.0, probs={"car": 0.6, "truck": 0.4})
    camera = _obj(10.2, 0.1, probs={"truck": 0.7, "car": 0.3})
    camera2 = _obj(10.1, 0.0, probs={"truck": 0.5, "car": 0.5})
    out = OutputLevelFusion().fuse({"lidar": [lidar], "camera": [camera],
                                    "camera_2": [camera2]}, 7)
    assert len(out) == 1
    with pytest.raises(TypeError):
        out[0].class_probs["car"] = 1.0  # type: ignore[index]
    assert dict(camera.class_probs) == {"truck": 0.7, "car": 0.3}
    assert dict(lidar.class_probs) == {"car": 0.6, "truck": 0.4}
    assert out[0].class_probs["truck"] == pytest.approx(0.35 / 0.5)

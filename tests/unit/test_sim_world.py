"""MujocoWorld: model building from a WorldSpec, geom bookkeeping, poses and ray casting."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

os.environ.setdefault("MUJOCO_GL", "osmesa")  # offscreen CPU rendering; before mujoco

import numpy as np
import pytest

from mm_perception.core.types import ObjectClass
from mm_perception.sim.spec import (
    ActorModel,
    ActorPart,
    ActorState,
    Material,
    StaticBox,
    WorldSpec,
)
from mm_perception.sim.world import PARK_Z, MujocoWorld

MATERIALS = list(Material)


def _v(*values: float) -> np.ndarray:
    """A float64 vector (the spec types are annotated as arrays)."""
    return np.array(values, dtype=np.float64)


def _box_actor(cls: ObjectClass, size: tuple[float, float, float],
               material: Material = Material.VEHICLE_PAINT) -> ActorModel:
    """An actor made of one box filling its ground-truth box."""
    part = ActorPart("box", _v(0.0, 0.0, size[2] / 2), _v(*size), material)
    return ActorModel(cls, _v(*size), (part,))


def _car() -> ActorModel:
    return ActorModel(ObjectClass.CAR, _v(4.0, 1.8, 1.5), (
        ActorPart("box", _v(0.0, 0.0, 0.6), _v(4.0, 1.8, 0.8), Material.VEHICLE_PAINT),
        ActorPart("box", _v(-0.3, 0.0, 1.25), _v(2.0, 1.6, 0.5), Material.GLASS),
        ActorPart("cylinder", _v(1.3, 0.0, 0.35), _v(0.7, 0.7, 1.8), Material.TIRE,
                  axis="y"),
    ))


def _spec() -> WorldSpec:
    static = (
        StaticBox("road", _v(0.0, 0.0, 0.01), _v(100.0, 8.0, 0.02), 0.0, Material.ASPHALT),
        StaticBox("wall", _v(30.0, 0.0, 2.0), _v(0.4, 20.0, 4.0), 0.0, Material.WALL),
        StaticBox("shelf", _v(-10.0, 10.0, 1.0), _v(2.0, 1.0, 2.0), math.pi / 4,
                  Material.SHELF),
    )
    actors = {3: _car(), 7: _box_actor(ObjectClass.PEDESTRIAN, (0.5, 0.6, 1.8),
                                       Material.CLOTH)}
    ego = _box_actor(ObjectClass.UNKNOWN, (4.5, 2.0, 1.6))
    return WorldSpec(static, actors, ego, ground_material=Material.GRASS)


@pytest.fixture()
def world() -> Iterator[MujocoWorld]:
    with MujocoWorld(_spec()) as w:
        yield w


def _ray(world: MujocoWorld, origin: tuple[float, float, float],
         direction: tuple[float, float, float], max_range: float = 200.0) -> tuple[int, float]:
    d = np.asarray(direction, dtype=np.float64)
    geom, dist, _ = world.cast_rays(np.asarray(origin, float), (d / np.linalg.norm(d))[None],
                                    max_range)
    return int(geom[0]), float(dist[0])


def test_model_has_every_geom_with_its_actor_and_material(world: MujocoWorld) -> None:
    # ground + 3 static + ego (1 part) + car (3 parts) + pedestrian (1 part)
    assert world.ngeom == 1 + 3 + 1 + 3 + 1
    assert world.geom_actor.shape == world.geom_material.shape == (world.ngeom,)
    assert world.geom_actor.dtype == world.geom_material.dtype == np.int32
    counts = {int(a): int(n) for a, n in zip(*np.unique(world.geom_actor, return_counts=True),
                                             strict=True)}
    assert counts == {-1: 4, 0: 1, 3: 3, 7: 1}
    # the MuJoCo body of each geom is the actor's mocap body
    for gid in range(world.ngeom):
        aid = int(world.geom_actor[gid])
        body = int(world.model.geom_bodyid[gid])
        if aid < 0:
            assert body == 0
        else:
            assert body == world.actor_body_id[aid]
            assert world.model.body_mocapid[body] >= 0
    car_mats = sorted(MATERIALS[i] for i in world.geom_material[world.geom_actor == 3])
    assert car_mats == sorted([Material.VEHICLE_PAINT, Material.GLASS, Material.TIRE])
    static_mats = {world.static_names[int(g)]: MATERIALS[world.geom_material[g]]
                   for g in np.flatnonzero(world.geom_actor == -1)}
    assert static_mats == {"ground": Material.GRASS, "road": Material.ASPHALT,
                           "wall": Material.WALL, "shelf": Material.SHELF}
    assert world.actor_class == {0: ObjectClass.UNKNOWN, 3: ObjectClass.CAR,
                                 7: ObjectClass.PEDESTRIAN}


def test_colours_come_from_part_or_material() -> None:
    red = (1.0, 0.0, 0.0, 1.0)
    ego = _box_actor(ObjectClass.UNKNOWN, (4.0, 2.0, 1.5))
    actor = ActorModel(ObjectClass.CAR, _v(4.0, 2.0, 1.5), (
        ActorPart("box", _v(0, 0, 0.5), _v(4.0, 2.0, 1.0), Material.VEHICLE_PAINT, rgba=red),
        ActorPart("box", _v(0, 0, 1.25), _v(2.0, 2.0, 0.5), Material.GLASS),
    ))
    with MujocoWorld(WorldSpec((), {1: actor}, ego)) as w:
        m = w.model
        rgba = {int(g): tuple(m.mat_rgba[m.geom_matid[g]].round(4))
                for g in np.flatnonzero(w.geom_actor == 1)}
        assert sorted(rgba.values()) == sorted([red, (0.15, 0.2, 0.25, 1.0)])


def test_actors_are_parked_until_given_a_pose(world: MujocoWorld) -> None:
    # straight down onto the car's future place: only the road is there
    geom, dist = _ray(world, (5.0, 0.0, 10.0), (0.0, 0.0, -1.0))
    assert world.static_names[geom] == "road"
    assert dist == pytest.approx(10.0 - 0.02, abs=1e-9)
    assert np.all(world.data.mocap_pos[:, 2] == PARK_Z)


def test_set_states_moves_the_actor_and_rays_see_it(world: MujocoWorld) -> None:
    world.set_states([ActorState(3, 5.0, 0.0, 0.0)])
    geom, dist = _ray(world, (5.0, 0.0, 10.0), (0.0, 0.0, -1.0))
    assert int(world.geom_actor[geom]) == 3
    assert dist == pytest.approx(10.0 - 1.5, abs=1e-9)  # glass roof top at 1.5 m
    # from the side at 0.6 m height: the body (width 1.8) is hit at y = 0.9
    geom, dist = _ray(world, (5.0, 10.0, 0.6), (0.0, -1.0, 0.0))
    assert int(world.geom_actor[geom]) == 3 and dist == pytest.approx(10.0 - 0.9, abs=1e-9)

    # yaw 90 deg: now the car's length (4.0) lies along y
    world.set_states([ActorState(3, 5.0, 0.0, math.pi / 2)])
    geom, dist = _ray(world, (5.0, 10.0, 0.6), (0.0, -1.0, 0.0))
    assert int(world.geom_actor[geom]) == 3 and dist == pytest.approx(10.0 - 2.0, abs=1e-9)
    # the old place is empty
    geom, dist = _ray(world, (5.0 + 1.5, 0.0, 10.0), (0.0, 0.0, -1.0))
    assert world.static_names.get(geom) == "road"

    # the pedestrian did not move; moving it does not move the car
    world.set_states([ActorState(7, -5.0, 2.0, 0.0, z=0.5)])
    geom, dist = _ray(world, (-5.0, 2.0, 10.0), (0.0, 0.0, -1.0))
    assert int(world.geom_actor[geom]) == 7 and dist == pytest.approx(10.0 - 2.3, abs=1e-9)
    geom, _ = _ray(world, (5.0, 10.0, 0.6), (0.0, -1.0, 0.0))
    assert int(world.geom_actor[geom]) == 3


def test_cylinder_part_axis_and_size(world: MujocoWorld) -> None:
    # the car's "axle" cylinder: diameter 0.7, length 1.8 along the car's y, centre x = 1.3
    world.set_states([ActorState(3, 0.0, 0.0, 0.0)])
    # (below the body box, which starts at z = 0.2)
    geom, dist = _ray(world, (1.3, 10.0, 0.1), (0.0, -1.0, 0.0))
    assert MATERIALS[world.geom_material[geom]] is Material.TIRE
    assert dist == pytest.approx(10.0 - 0.9, abs=1e-9)  # flat cap at y = 0.9
    geom, dist = _ray(world, (10.0, 0.0, 0.1), (-1.0, 0.0, 0.0))
    assert MATERIALS[world.geom_material[geom]] is Material.TIRE
    # round side, 0.25 below the axis: x = 1.3 + sqrt(0.35^2 - 0.25^2)
    assert dist == pytest.approx(10.0 - 1.3 - math.sqrt(0.35**2 - 0.25**2), abs=1e-9)


def test_static_box_yaw(world: MujocoWorld) -> None:
    # the shelf (2 x 1, yaw 45 deg) at (-10, 10): along its long diagonal axis it is 1 m deep
    d = np.array([math.cos(math.pi / 4), math.sin(math.pi / 4), 0.0])
    origin = np.array([-10.0, 10.0, 1.0]) - 10.0 * d
    geom, dist = _ray(world, tuple(origin), tuple(d))
    assert world.static_names[geom] == "shelf"
    assert dist == pytest.approx(10.0 - 1.0, abs=1e-9)


def test_rays_ignore_the_ego_body(world: MujocoWorld) -> None:
    world.set_states([ActorState(0, 0.0, 0.0, 0.0), ActorState(3, 10.0, 0.0, 0.0)])
    # from inside the ego box, straight ahead: the car's rear at x = 8
    geom, dist = _ray(world, (0.0, 0.0, 0.6), (1.0, 0.0, 0.0))
    assert int(world.geom_actor[geom]) == 3 and dist == pytest.approx(8.0, abs=1e-9)
    # from outside the ego, pointing at it: nothing of the ego is ever hit
    geom, _ = _ray(world, (0.0, 10.0, 0.6), (0.0, -1.0, 0.0))
    assert int(world.geom_actor[geom]) != 0


def test_unknown_actor_and_bad_pose_raise(world: MujocoWorld) -> None:
    with pytest.raises(ValueError, match="unknown actor id 5"):
        world.set_states([ActorState(5, 0.0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="non-finite"):
        world.set_states([ActorState(3, float("nan"), 0.0, 0.0)])
    with pytest.raises(ValueError, match="unknown actor id 9"):
        world.hide([9])


def test_hide_parks_an_actor(world: MujocoWorld) -> None:
    world.set_states([ActorState(3, 5.0, 0.0, 0.0)])
    world.hide([3])
    geom, _ = _ray(world, (5.0, 0.0, 10.0), (0.0, 0.0, -1.0))
    assert world.static_names.get(geom) == "road"


def test_same_spec_builds_the_same_model() -> None:
    with MujocoWorld(_spec()) as a, MujocoWorld(_spec()) as b:
        for name in ("geom_size", "geom_pos", "geom_quat", "geom_type", "mat_rgba"):
            assert np.array_equal(getattr(a.model, name), getattr(b.model, name)), name
        assert np.array_equal(a.geom_actor, b.geom_actor)


def test_cast_rays_checks_its_input(world: MujocoWorld) -> None:
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        world.cast_rays(np.zeros(3), np.zeros((4, 2)), 10.0)
    geom, dist, normal = world.cast_rays(np.zeros(3), np.zeros((0, 3)), 10.0)
    assert geom.shape == dist.shape == (0,) and normal.shape == (0, 3)
    world.close()
    with pytest.raises(RuntimeError, match="closed"):
        world.cast_rays(np.zeros(3), np.ones((1, 3)), 10.0)


def test_ray_normals_face_the_ray(world: MujocoWorld) -> None:
    geom, dist, normal = world.cast_rays(np.array([20.0, 0.0, 2.0]),
                                         np.array([[1.0, 0.0, 0.0]]), 100.0)
    assert world.static_names[int(geom[0])] == "wall"
    assert dist[0] == pytest.approx(9.8, abs=1e-9)
    assert normal[0] == pytest.approx([-1.0, 0.0, 0.0], abs=1e-9)

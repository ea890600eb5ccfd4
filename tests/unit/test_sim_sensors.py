"""Simulated camera, LiDAR and radar against independent references.

References: CameraModel.project / unproject (the rig's lens model, itself checked against
OpenCV), MuJoCo ray casts, the actors' ground-truth boxes and the analytic radial velocity
of rigid-body motion.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator

os.environ.setdefault("MUJOCO_GL", "osmesa")  # offscreen CPU rendering; before mujoco

import cv2
import mujoco
import numpy as np
import pytest

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.sensor_models import LidarModel, RadarModel
from mm_perception.core.types import ObjectClass
from mm_perception.sim.camera_sim import CameraSim, CameraSimConfig
from mm_perception.sim.lidar_sim import LidarReturns, LidarSim, LidarSimConfig
from mm_perception.sim.radar_sim import RadarReturns, RadarSim, RadarSimConfig
from mm_perception.sim.spec import (
    ActorModel,
    ActorPart,
    ActorState,
    Material,
    StaticBox,
    WorldSpec,
)
from mm_perception.sim.world import MujocoWorld

MATERIALS = list(Material)


def _v(*values: float) -> np.ndarray:
    """A float64 vector (the spec types are annotated as arrays)."""
    return np.array(values, dtype=np.float64)
#: optical frame (z fwd, x right, y down) in base_link (x fwd, y left, z up)
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
CAM_POS = np.array([1.0, 0.0, 1.4])
T_BASE_CAM = SE3(R_BASE_OPTICAL, CAM_POS)

PINHOLE = CameraModel(640, 480, 450.0, 450.0, 319.5, 239.5)
PLUMB_BOB = CameraModel(640, 480, 400.0, 400.0, 322.0, 237.0, "plumb_bob",
                        (-0.33, 0.11, 0.0005, -0.0004, -0.015))
FISHEYE = CameraModel(640, 480, 380.0, 380.0, 320.0, 240.0, "equidistant",
                      (0.02, -0.01, 0.003, -0.001))


def _box_actor(cls: ObjectClass, size: tuple[float, float, float],
               material: Material = Material.VEHICLE_PAINT,
               rgba: tuple[float, float, float, float] | None = None) -> ActorModel:
    part = ActorPart("box", _v(0.0, 0.0, size[2] / 2), _v(*size), material, rgba=rgba)
    return ActorModel(cls, _v(*size), (part,))


def _car() -> ActorModel:
    return ActorModel(ObjectClass.CAR, _v(4.4, 1.8, 1.5), (
        ActorPart("box", _v(0.0, 0.0, 0.6), _v(4.4, 1.8, 0.8), Material.VEHICLE_PAINT),
        ActorPart("box", _v(-0.3, 0.0, 1.25), _v(2.2, 1.6, 0.5), Material.GLASS),
        ActorPart("cylinder", _v(1.4, 0.75, 0.33), _v(0.66, 0.66, 0.25), Material.TIRE,
                  axis="y"),
        ActorPart("cylinder", _v(-1.4, -0.75, 0.33), _v(0.66, 0.66, 0.25), Material.TIRE,
                  axis="y"),
    ))


def _ego() -> ActorModel:
    return _box_actor(ObjectClass.UNKNOWN, (4.6, 2.0, 1.7), rgba=(0.0, 0.0, 1.0, 1.0))


def _spec() -> WorldSpec:
    static = (
        StaticBox("road", _v(0.0, 0.0, 0.01), _v(200.0, 10.0, 0.02), 0.0, Material.ASPHALT),
        StaticBox("mark_l", _v(0.0, 1.75, 0.0225), _v(200.0, 0.15, 0.005), 0.0,
                  Material.LANE_MARKING),
        StaticBox("mark_r", _v(0.0, -1.75, 0.0225), _v(200.0, 0.15, 0.005), 0.0,
                  Material.LANE_MARKING),
        StaticBox("wall", _v(40.0, 0.0, 3.0), _v(0.4, 60.0, 6.0), 0.0, Material.WALL),
    )
    actors = {
        1: _box_actor(ObjectClass.CAR, (2.0, 2.0, 2.0), rgba=(1.0, 0.0, 0.0, 1.0)),
        2: _box_actor(ObjectClass.UNKNOWN, (0.5, 23.0, 10.0), Material.CONCRETE,
                      rgba=(0.9, 0.9, 0.1, 1.0)),
        3: _car(),
        4: _box_actor(ObjectClass.TRUCK, (8.0, 2.5, 3.2), Material.METAL),
        5: _box_actor(ObjectClass.PEDESTRIAN, (0.5, 0.6, 1.8), Material.CLOTH),
        6: _car(),
    }
    return WorldSpec(static, actors, _ego(), ground_material=Material.GRASS)


@pytest.fixture(scope="module")
def world() -> Iterator[MujocoWorld]:
    with MujocoWorld(_spec()) as w:
        yield w


def _place(world: MujocoWorld, *states: ActorState) -> None:
    """Ego at the origin, the given actors where stated, every other actor hidden."""
    world.set_states([ActorState(0, 0.0, 0.0, 0.0), *states])
    given = {s.actor_id for s in states}
    world.hide([a for a in world.actor_body_id if a not in given and a != 0])


def _actor_local(points_world: np.ndarray, state: ActorState) -> np.ndarray:
    return SE3.from_xy_yaw(state.x, state.y, state.yaw, state.z).inverse().apply(points_world)


def _inside_box(local: np.ndarray, size: np.ndarray, margin: float) -> np.ndarray:
    half = size / 2
    return ((np.abs(local[:, 0]) <= half[0] + margin) & (np.abs(local[:, 1]) <= half[1] + margin)
            & (local[:, 2] >= -margin) & (local[:, 2] <= size[2] + margin))


# ====================================================================== camera

@pytest.fixture(scope="module")
def cameras(world: MujocoWorld) -> Iterator[dict[str, CameraSim]]:
    sims = {name: CameraSim(world, cam, T_BASE_CAM)
            for name, cam in (("pinhole", PINHOLE), ("plumb_bob", PLUMB_BOB),
                              ("fisheye", FISHEYE))}
    yield sims
    for sim in sims.values():
        sim.close()


def test_render_outputs_have_the_rig_camera_shape(world: MujocoWorld,
                                                  cameras: dict[str, CameraSim]) -> None:
    _place(world, ActorState(1, 12.0, 3.0, 0.0))
    for name, sim in cameras.items():
        img = sim.render(SE3())
        assert img.rgb.shape == (480, 640, 3) and img.rgb.dtype == np.uint8, name
        assert img.depth is not None and img.depth.shape == (480, 640), name
        assert img.depth.dtype == np.float32
        assert img.instance is not None and img.instance.shape == (480, 640), name
        assert img.instance.dtype == np.int32
        # the render is never coarser than the rig camera
        assert sim.render_camera.fx >= sim.camera.fx * 0.999
        assert sim.render_camera.distortion_model == "none"


def test_async_render_sees_the_world_as_it_was_when_asked(
        world: MujocoWorld, cameras: dict[str, CameraSim]) -> None:
    """render_async copies the actor poses at the call: moving the world right after (as
    the simulator does while the frame renders on the camera's thread) changes nothing, and
    the images equal a synchronous render's, lights included."""
    sim = cameras["plumb_bob"]
    _place(world, ActorState(1, 12.0, 3.0, 0.0))
    expected = sim.render(SE3())
    futures = [sim.render_async(SE3())]
    _place(world, ActorState(1, 20.0, -4.0, 1.0))  # at once, while the first one renders
    futures.append(sim.render_async(SE3()))
    first, second = (f.result() for f in futures)
    np.testing.assert_array_equal(first.rgb, expected.rgb)
    np.testing.assert_array_equal(first.instance, expected.instance)
    np.testing.assert_array_equal(first.depth, expected.depth)
    assert not np.array_equal(second.instance, expected.instance)  # the moved box
    assert second.instance is not None and (second.instance == 1).sum() > 100


def test_closed_camera_refuses_to_render(world: MujocoWorld) -> None:
    sim = CameraSim(world, PINHOLE, T_BASE_CAM)
    sim.close()
    sim.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sim.render_async(SE3())


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_box_in_front_left_or_right_appears_on_that_side(
        world: MujocoWorld, cameras: dict[str, CameraSim], side: float) -> None:
    _place(world, ActorState(1, 12.0, 4.0 * side, 0.0))
    sim = cameras["pinhole"]
    img = sim.render(SE3())
    red = (img.rgb[..., 0] > 120) & (img.rgb[..., 1] < 40) & (img.rgb[..., 2] < 40)
    assert red.sum() > 500
    vs, us = np.nonzero(red)
    # left of the vehicle (+y) is the left of the image (small u)
    assert (us.mean() < 320) == (side > 0)
    # the box (z 0..2) is seen from 1.4 m: mostly below the horizon row (v = 239.5)
    assert vs.max() > 260 and vs.min() > 200
    # the instance mask covers the red pixels, and its extent is that of the projected
    # box corners (a pinhole silhouette of a box is the hull of its corners)
    assert img.instance is not None
    assert np.mean(img.instance[red] == 1) > 0.98
    corners = np.array([[x, y, z] for x in (11.0, 13.0) for y in (3.0, 5.0) for z in (0.0, 2.0)])
    corners[:, 1] *= side
    uv, valid = PINHOLE.project(T_BASE_CAM.inverse().apply(corners))
    assert valid.all()
    iv, iu = np.nonzero(img.instance == 1)
    assert iu.min() == pytest.approx(uv[:, 0].min() + 0.5, abs=1.0)
    assert iu.max() == pytest.approx(uv[:, 0].max() - 0.5, abs=1.0)
    assert iv.min() == pytest.approx(uv[:, 1].min() + 0.5, abs=1.0)
    assert iv.max() == pytest.approx(uv[:, 1].max() - 0.5, abs=1.0)


def test_pose_of_the_base_moves_the_view(world: MujocoWorld,
                                         cameras: dict[str, CameraSim]) -> None:
    _place(world, ActorState(1, 12.0, 4.0, 0.0))
    sim = cameras["pinhole"]
    # turning the vehicle left by 30 deg moves the box (at +18 deg) right of the centre
    img = sim.render(SE3.from_xy_yaw(0.0, 0.0, math.radians(30.0)))
    assert img.instance is not None
    _, us = np.nonzero(img.instance == 1)
    assert us.size > 100 and us.mean() > 330


@pytest.mark.parametrize("name", ["pinhole", "plumb_bob", "fisheye"])
def test_instance_mask_agrees_with_the_camera_model(
        world: MujocoWorld, cameras: dict[str, CameraSim], name: str) -> None:
    states = [ActorState(3, 10.0, 4.0, 0.4), ActorState(4, 32.0, -16.0, -0.2),
              ActorState(5, 6.0, -1.0, 1.0), ActorState(6, 22.0, 0.5, 2.5)]
    _place(world, *states)
    sim = cameras[name]
    img = sim.render(SE3())
    assert img.instance is not None
    T_cam_world = T_BASE_CAM.inverse()
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (0, 1)])
    agree, total = 0, 0
    for st in states:
        size = world.spec.actors[st.actor_id].size
        # corners pulled 8 cm inside the ground-truth box; for the car-shaped actors the
        # corners of their lower body (z in [0.2, 1.0]), which fills the box's footprint
        lo_z, hi_z = (0.2, 1.0) if st.actor_id in (3, 6) else (0.0, size[2])
        half = size[:2] / 2 - 0.08
        local = np.stack([signs[:, 0] * half[0], signs[:, 1] * half[1],
                          np.where(signs[:, 2] > 0, hi_z - 0.08, lo_z + 0.08)], axis=1)
        pts = SE3.from_xy_yaw(st.x, st.y, st.yaw).apply(local)
        # a corner hidden behind another object cannot agree: the ray from the camera to
        # it must first meet this actor (an independent geometric visibility check)
        rays = pts - CAM_POS
        geom, _, _ = world.cast_rays(CAM_POS, rays / np.linalg.norm(rays, axis=1)[:, None],
                                     500.0)
        visible = world.geom_actor[geom] == st.actor_id
        uv, valid = sim.camera.project(T_cam_world.apply(pts))
        use = valid & visible
        ids = img.instance[np.rint(uv[use, 1]).astype(int), np.rint(uv[use, 0]).astype(int)]
        agree += int(np.sum(ids == st.actor_id))
        total += int(use.sum())
    assert total >= 24, total
    assert agree / total >= 0.95, (agree, total)


def test_depth_matches_ray_casts_on_box_faces(world: MujocoWorld,
                                              cameras: dict[str, CameraSim]) -> None:
    # two fronto-parallel faces (the wall at x = 39.8 and the red box's rear at x = 9)
    _place(world, ActorState(1, 10.0, -2.0, 0.0))
    for name in ("pinhole", "plumb_bob"):
        sim = cameras[name]
        img = sim.render(SE3())
        assert img.depth is not None
        vv, uu = np.mgrid[4:480:6, 4:640:6]
        uv = np.stack([uu.ravel(), vv.ravel()], axis=1).astype(float)
        rays = sim.camera.unproject(uv)  # (x, y, 1) in the optical frame
        ok = np.isfinite(rays[:, 0])
        uv, rays = uv[ok], rays[ok]
        dirs = T_BASE_CAM.rotate(rays / np.linalg.norm(rays, axis=1, keepdims=True))
        geom, dist, normal = world.cast_rays(T_BASE_CAM.translation, dirs, 500.0)
        # optical z of the hit = distance along the ray * cos(angle to the axis)
        z_ref = dist / np.linalg.norm(rays, axis=1)
        on_faces = np.isin(geom, [g for g, n in world.static_names.items() if n == "wall"]) \
            | (world.geom_actor[np.maximum(geom, 0)] == 1) & (geom >= 0)
        # faces square to the optical axis (a slanted face changes depth within a pixel)
        on_faces &= normal[:, 0] < -0.999
        # keep face interiors: the neighbours 3 px away see the same geom
        for du, dv in ((3, 0), (-3, 0), (0, 3), (0, -3)):
            nb = sim.camera.unproject(uv + np.array([du, dv]))
            nb_dirs = T_BASE_CAM.rotate(nb / np.linalg.norm(nb, axis=1, keepdims=True))
            g2, _, _ = world.cast_rays(T_BASE_CAM.translation, nb_dirs, 500.0)
            on_faces &= g2 == geom
        assert on_faces.sum() > 300, name
        d_img = img.depth[uv[on_faces, 1].astype(int), uv[on_faces, 0].astype(int)]
        err = np.abs(d_img - z_ref[on_faces])
        assert np.all(err < 0.02), (name, float(err.max()))
        # the wall (39.8 - 1.0 from the camera) and the box rear (9.0 - 1.0) are both seen
        assert np.any(np.abs(d_img - 38.8) < 0.02) and np.any(np.abs(d_img - 8.0) < 0.02)


def test_sky_has_no_depth_and_no_instance(world: MujocoWorld,
                                          cameras: dict[str, CameraSim]) -> None:
    _place(world)
    img = cameras["pinhole"].render(SE3.from_rpy(0.0, -0.5, 0.0))  # pitched up 29 deg
    assert img.depth is not None and img.instance is not None
    assert np.all(np.isnan(img.depth[:20]))
    assert np.all(img.instance[:20] == -1)
    sky = img.rgb[:20].reshape(-1, 3).mean(axis=0)
    assert sky == pytest.approx(np.array(world.spec.lighting.sky_rgb) * 255, abs=3)


def test_distorted_vertical_edge_lands_where_the_lens_model_puts_it(
        world: MujocoWorld, cameras: dict[str, CameraSim]) -> None:
    # actor 2: a panel x in [6, 6.5], y in [-20, 3], z in [0, 10]; its left edge in the image
    # is the vertical line (6, 3, z), about 100 px from the left border where the lens
    # distortion is strong
    _place(world, ActorState(2, 6.25, -8.5, 0.0))
    sim = cameras["plumb_bob"]
    img = sim.render(SE3())
    assert img.instance is not None
    panel = img.instance == 2
    z = np.linspace(0.0, 10.0, 20001)
    edge = np.stack([np.full_like(z, 6.0), np.full_like(z, 3.0), z], axis=1)
    pts_cam = T_BASE_CAM.inverse().apply(edge)
    uv, valid = PLUMB_BOB.project(pts_cam, in_image=False)
    uv = uv[valid]
    order = np.argsort(uv[:, 1])
    # rows where the panel's left boundary is this edge: above its foot (z = 0), where the
    # bottom edge takes over, and where the panel does not reach the image border
    v_foot = uv[np.argmin(np.abs(z[valid])), 1]
    rows = np.flatnonzero(panel.any(axis=1) & ~panel[:, 0])
    rows = rows[rows < v_foot - 3]
    assert rows.size > 200
    u_meas = np.argmax(panel[rows], axis=1) - 0.5  # boundary between pixel u-1 and u

    u_ref = np.interp(rows, uv[order, 1], uv[order, 0])
    err = np.abs(u_meas - u_ref)
    assert np.max(err) <= 1.0, float(np.max(err))
    # the edge really is curved (so the test would catch a missing distortion) ...
    straight = np.interp(rows, [rows[0], rows[-1]], [u_ref[0], u_ref[-1]])
    assert np.max(np.abs(u_ref - straight)) > 5.0
    # ... and far from where an undistorted pinhole would put it
    uv_pin, _ = PINHOLE.project(pts_cam, in_image=False)
    assert np.min(np.abs(np.interp(rows, np.sort(uv_pin[:, 1]),
                                   uv_pin[np.argsort(uv_pin[:, 1]), 0]) - u_meas)) > 5.0


def test_ego_body_does_not_block_the_camera(world: MujocoWorld) -> None:
    # the camera sits inside the ego's box (x in [-2.3, 2.3], z in [0, 1.7])
    inside = SE3(R_BASE_OPTICAL, np.array([0.5, 0.0, 1.0]))
    _place(world, ActorState(1, 10.0, 0.0, 0.0))
    with CameraSim(world, PINHOLE, inside) as sim:
        img = sim.render(SE3())
    assert img.instance is not None and img.depth is not None
    assert img.instance[240, 320] == 1
    assert img.depth[240, 320] == pytest.approx(10.0 - 1.0 - 0.5, abs=0.02)
    assert not np.any(img.instance == 0)
    blue = (img.rgb[..., 2] > 150) & (img.rgb[..., 0] < 30) & (img.rgb[..., 1] < 30)
    assert not blue.any()  # the ego is blue


def test_pixels_outside_the_lens_model_are_blank(world: MujocoWorld) -> None:
    # a fold inside the image: past r ~ 0.85 (normalized) this lens maps back inwards
    folded = CameraModel(640, 480, 300.0, 300.0, 320.0, 240.0, "plumb_bob",
                         (-0.45, 0.0, 0.0, 0.0, 0.0))
    _place(world)
    with CameraSim(world, folded, T_BASE_CAM, depth=True, instance=False) as sim:
        assert not sim.valid.all() and sim.valid[240, 320]
        img = sim.render(SE3())
    assert img.instance is None and img.depth is not None
    assert np.all(img.rgb[~sim.valid] == 0)
    assert np.all(np.isnan(img.depth[~sim.valid]))


def test_rgb_only_and_determinism(world: MujocoWorld, cameras: dict[str, CameraSim]) -> None:
    _place(world, ActorState(3, 9.0, 3.5, 0.4), ActorState(5, 6.0, -2.0, 1.0))
    with CameraSim(world, PLUMB_BOB, T_BASE_CAM, depth=False, instance=False) as sim:
        a = sim.render(SE3())
        b = sim.render(SE3())
    assert a.depth is None and a.instance is None
    assert a.rgb.tobytes() == b.rgb.tobytes()
    full = cameras["plumb_bob"].render(SE3())
    again = cameras["plumb_bob"].render(SE3())
    assert full.rgb.tobytes() == a.rgb.tobytes() == again.rgb.tobytes()
    assert full.depth is not None and again.depth is not None
    assert full.depth.tobytes() == again.depth.tobytes()


def _reference_render(sim: CameraSim, T_world_base: SE3) -> tuple[np.ndarray, np.ndarray]:
    """The frame rendered the plain way, on the camera's own GL thread: the sky box drawn,
    and a segmentation pass of *every* geom for the ids. Returns the render-resolution
    ``rgb`` and ``actor id`` images (static, sky: -1)."""
    flags = mujoco.mjtRndFlag

    def run(data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        sim._gl.make_current()
        mujoco.mjv_updateScene(sim.world.model, data, sim._option, None, sim._free_cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, sim._scene)
        sim._set_camera(T_world_base @ sim.T_base_cam)
        sim._scene.flags[flags.mjRND_SKYBOX] = 1
        try:
            mujoco.mjr_render(sim._rect, sim._scene, sim._ctx)
            rgb = np.empty_like(sim._rgb_buf)
            mujoco.mjr_readPixels(rgb, None, sim._rect, sim._ctx)
        finally:
            sim._scene.flags[flags.mjRND_SKYBOX] = 0
        sim._scene.flags[flags.mjRND_SEGMENT] = sim._scene.flags[flags.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_render(sim._rect, sim._scene, sim._ctx)
            seg = np.empty_like(sim._seg_buf)
            mujoco.mjr_readPixels(seg, None, sim._rect, sim._ctx)
        finally:
            sim._scene.flags[flags.mjRND_SEGMENT] = sim._scene.flags[flags.mjRND_IDCOLOR] = 0
        ids = seg[..., 0].astype(np.int64) | (seg[..., 1].astype(np.int64) << 8)
        lut = np.full(int(sim._scene.ngeom) + 2, -1, dtype=np.int64)
        for i in range(int(sim._scene.ngeom)):
            g = sim._scene.geoms[i]
            if g.segid >= 0 and g.objtype == int(mujoco.mjtObj.mjOBJ_GEOM):
                lut[g.segid + 1] = max(int(sim.world.geom_actor[g.objid]), -1)
        return rgb, lut[ids]

    assert sim._worker is not None
    return sim._worker.submit(run).result()


@pytest.mark.parametrize("pitch", [0.0, -0.3])
def test_frame_equals_a_plain_sky_box_and_full_segmentation_render(
        world: MujocoWorld, pitch: float) -> None:
    """The camera fills the sky in instead of drawing it, and renders only agents in its id
    pass (kept where their depth is the lit pass's); both must give exactly what the plain
    way gives, with agents partly hidden behind static geometry (the wall at x = 40 m)
    and behind each other."""
    _place(world, ActorState(4, 41.5, 2.0, 0.3), ActorState(3, 12.0, 1.0, 0.2),
           ActorState(6, 18.0, 0.5, -0.4), ActorState(5, 9.0, -1.5, 1.0))
    with CameraSim(world, PINHOLE, T_BASE_CAM) as sim:
        pose = SE3.from_rpy(0.0, pitch, 0.0)
        img = sim.render(pose)
        rgb_ref, ids_ref = _reference_render(sim, pose)
        # into rig pixels with the camera's own resampling maps
        rgb_ref = cv2.remap(rgb_ref, sim._maps[0], sim._maps[1], cv2.INTER_LINEAR)
        ids_ref = ids_ref.reshape(-1)[sim._nn_index].reshape(PINHOLE.height, PINHOLE.width)
    assert img.instance is not None
    np.testing.assert_array_equal(img.rgb, rgb_ref)
    np.testing.assert_array_equal(img.instance, ids_ref)
    hidden = (ids_ref == -1)
    assert (img.instance == 4).sum() > 50 and (img.instance == 3).sum() > 500
    assert hidden.sum() > 1000


def test_too_wide_lens_is_rejected(world: MujocoWorld) -> None:
    wide = CameraModel(640, 480, 120.0, 120.0, 320.0, 240.0, "equidistant", (0.0,) * 4)
    with pytest.raises(ConfigError, match="max_half_angle_deg"):
        CameraSim(world, wide, T_BASE_CAM)
    with pytest.raises(ConfigError, match="max_render_px"):
        CameraSim(world, PINHOLE, T_BASE_CAM, config=CameraSimConfig(max_render_px=600))
    with pytest.raises(ConfigError, match="supersample"):
        CameraSimConfig(supersample=0.5)


# ====================================================================== LiDAR

LIDAR_POSE = SE3(translation=_v(0.0, 0.0, 1.9))


def _sweep(sim: LidarSim, T_world_lidar: SE3, seed: int) -> LidarReturns:
    rng = np.random.default_rng(seed)
    return LidarReturns.concatenate([sim.cast(T_world_lidar, sim.slice_columns(k), rng)
                                     for k in range(sim.n_slices)])


def test_lidar_points_on_actors_lie_in_their_boxes(world: MujocoWorld) -> None:
    states = [ActorState(3, 9.0, 3.5, 0.4), ActorState(4, 22.0, -6.0, -0.2),
              ActorState(5, 6.0, -2.0, 1.0), ActorState(6, -12.0, 5.0, 2.5)]
    _place(world, *states)
    model = LidarModel(range_noise_m=0.0, dropout=0.0)
    sim = LidarSim(world, model, LIDAR_POSE)
    T_world_lidar = SE3.from_xy_yaw(0.0, 0.0, 0.3) @ LIDAR_POSE
    ret = _sweep(sim, T_world_lidar, 0)
    pts_world = T_world_lidar.apply(ret.xyz.astype(np.float64))
    for st in states:
        sel = ret.actor_id == st.actor_id
        assert sel.sum() > 20, st.actor_id
        local = _actor_local(pts_world[sel], st)
        inside = _inside_box(local, world.spec.actors[st.actor_id].size, 0.1)
        assert inside.mean() >= 0.99, (st.actor_id, inside.mean())
    assert not np.any(ret.actor_id == 0)  # the LiDAR is inside the ego's box: never seen


def test_lidar_beam_pattern(world: MujocoWorld) -> None:
    _place(world)
    model = LidarModel(vertical_angles_deg=(-20.0, -10.0, -5.0, 0.0, 3.0), columns=360,
                       range_noise_m=0.0, dropout=0.0)
    sim = LidarSim(world, model, LIDAR_POSE, LidarSimConfig(n_slices=8))
    ret = _sweep(sim, LIDAR_POSE, 0)
    xyz = ret.xyz.astype(np.float64)
    r = np.linalg.norm(xyz, axis=1)
    assert np.allclose(r, ret.range, atol=1e-4)
    elev = np.degrees(np.arcsin(xyz[:, 2] / r))
    assert np.allclose(elev, np.asarray(model.vertical_angles_deg)[ret.ring], atol=1e-3)
    azim = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    # 1 deg per column, CCW, column 0 at the default start azimuth (180: behind, the seam)
    d = (azim - (180.0 + ret.column * 1.0)) % 360.0
    assert np.all(np.minimum(d, 360.0 - d) < 1e-3)
    # the wall ahead (x = 39.8) is hit by columns near 180, never by columns near 0
    on_wall = np.isin(ret.geom_id, [g for g, n in world.static_names.items() if n == "wall"])
    assert on_wall.any() and set(ret.column[on_wall] % 360) <= set(range(120, 240))
    # beams below the horizon hit the ground at h / tan(-elev)
    on_road = ret.geom_id == next(g for g, n in world.static_names.items() if n == "road")
    h = 1.9 - 0.02  # above the road surface
    assert np.sum(on_road & (ret.ring == 0)) > 100
    assert np.allclose(ret.range[on_road & (ret.ring == 0)],
                       h / math.sin(math.radians(20.0)), atol=1e-3)
    # times: column c fires c / (columns * rate) after the sweep start
    assert np.array_equal(ret.time_offset_ns,
                          np.rint(ret.column * 1e9 / (360 * 10.0)).astype(np.int64))
    assert ret.ring.dtype == np.uint16 and ret.column.dtype == np.int32
    assert ret.xyz.dtype == np.float32 and ret.intensity.dtype == np.float32


def test_slices_partition_the_sweep(world: MujocoWorld) -> None:
    sim = LidarSim(world, LidarModel(columns=1000), LIDAR_POSE)
    for n in (1, 7, 32, 1000):
        cols = np.concatenate([sim.slice_columns(k, n) for k in range(n)])
        assert np.array_equal(cols, np.arange(1000))
    assert sim.slice_time_offset_ns(0, 1) == round(499.5 * 1e9 / (1000 * 10.0))
    with pytest.raises(ValueError, match="slice index"):
        sim.slice_columns(32, 32)
    with pytest.raises(ValueError, match="columns must be in"):
        sim.cast(LIDAR_POSE, [1000], np.random.default_rng(0))
    with pytest.raises(ConfigError, match="n_slices"):
        LidarSim(world, LidarModel(columns=16), LIDAR_POSE)


def test_lidar_moving_between_slices_distorts_the_cloud(world: MujocoWorld) -> None:
    _place(world)
    # the sweep starting straight ahead: slice 0 / column 0 look at the wall
    model = LidarModel(range_noise_m=0.0, dropout=0.0, start_azimuth_deg=0.0)
    sim = LidarSim(world, model, LIDAR_POSE, LidarSimConfig(n_slices=4))
    rng = np.random.default_rng(0)
    # a slice cast 2 m further along x sees the wall ahead 2 m closer
    wall = [g for g, n in world.static_names.items() if n == "wall"]
    near = sim.cast(SE3(translation=_v(2.0, 0.0, 1.9)), sim.slice_columns(0), rng)
    far = sim.cast(LIDAR_POSE, sim.slice_columns(0), rng)
    sel_a = np.isin(near.geom_id, wall) & (near.column == 0)
    sel_b = np.isin(far.geom_id, wall) & (far.column == 0)
    rings, ia, ib = np.intersect1d(near.ring[sel_a], far.ring[sel_b], return_indices=True)
    assert rings.size >= 4
    a, b = near.xyz[sel_a][ia], far.xyz[sel_b][ib]
    assert np.allclose(b[:, 0] - a[:, 0], 2.0, atol=1e-4)
    assert np.allclose(b[:, 1:] * (39.8 - 2.0) / 39.8, a[:, 1:], atol=1e-4)


def test_lidar_dropout_and_noise_statistics(world: MujocoWorld) -> None:
    _place(world, ActorState(4, 15.0, 0.0, 0.0))
    clean = LidarSim(world, LidarModel(range_noise_m=0.0, dropout=0.0), LIDAR_POSE)
    noisy = LidarSim(world, LidarModel(range_noise_m=0.05, dropout=0.2, max_range_m=120.0),
                     LIDAR_POSE)
    cols = np.arange(1024)
    ref = clean.cast(LIDAR_POSE, cols, np.random.default_rng(1))
    got = noisy.cast(LIDAR_POSE, cols, np.random.default_rng(1))
    kept = len(got) / len(ref)
    assert kept == pytest.approx(0.8, abs=0.015)
    # match beams by (column, ring) and compare ranges
    key_ref = ref.column.astype(np.int64) * 64 + ref.ring
    key_got = got.column.astype(np.int64) * 64 + got.ring
    common, i_ref, i_got = np.intersect1d(key_ref, key_got, return_indices=True)
    assert common.size > 10_000
    err = got.range[i_got].astype(np.float64) - ref.range[i_ref]
    assert np.std(err) == pytest.approx(0.05, rel=0.05)
    assert abs(np.mean(err)) < 0.003


def test_lidar_range_limits(world: MujocoWorld) -> None:
    _place(world, ActorState(5, 1.5, 2.8, 0.0))
    model = LidarModel(min_range_m=3.2, max_range_m=30.0, range_noise_m=0.0, dropout=0.0)
    sim = LidarSim(world, model, LIDAR_POSE)
    ret = sim.cast(LIDAR_POSE, np.arange(1024), np.random.default_rng(0))
    assert ret.range.min() >= 3.2 and ret.range.max() <= 30.0
    # the wall at 39.8 m is beyond max range, the pedestrian at ~3.2 m partly inside min range
    wall = [g for g, n in world.static_names.items() if n == "wall"]
    assert not np.isin(ret.geom_id, wall).any()


def test_lidar_intensity_follows_material_reflectivity(world: MujocoWorld) -> None:
    _place(world)
    model = LidarModel(range_noise_m=0.0, dropout=0.0)
    sim = LidarSim(world, model, LIDAR_POSE)
    ret = sim.cast(LIDAR_POSE, np.arange(1024), np.random.default_rng(0))
    mats = world.geom_material[ret.geom_id]
    near = ret.range < 20.0
    paint = ret.intensity[(mats == MATERIALS.index(Material.LANE_MARKING)) & near]
    asphalt = ret.intensity[(mats == MATERIALS.index(Material.ASPHALT)) & near]
    assert paint.size > 20 and asphalt.size > 200
    assert np.median(paint) > 4.0 * np.median(asphalt)
    assert np.all(ret.intensity >= 0) and np.all(ret.intensity <= 255)
    # the wall, seen square-on at 39.8 m, by the formula:
    # 255 * reflectivity 0.30 * cos(incidence) * (10 / r)^2
    wall = (ret.geom_id == next(g for g, n in world.static_names.items() if n == "wall"))
    xyz = ret.xyz[wall].astype(np.float64)
    cos_inc = xyz[:, 0] / np.linalg.norm(xyz, axis=1)
    expected = 255.0 * 0.30 * cos_inc * (10.0 / ret.range[wall]) ** 2
    assert wall.sum() > 100
    assert np.allclose(ret.intensity[wall], expected, rtol=1e-5)


def test_lidar_is_deterministic(world: MujocoWorld) -> None:
    _place(world, ActorState(3, 9.0, 3.5, 0.4))
    sim = LidarSim(world, LidarModel(), LIDAR_POSE)
    a = _sweep(sim, LIDAR_POSE, 7)
    b = _sweep(sim, LIDAR_POSE, 7)
    c = _sweep(sim, LIDAR_POSE, 8)
    for f in ("xyz", "range", "intensity", "ring", "column", "actor_id", "geom_id"):
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes(), f
    assert a.range.tobytes() != c.range.tobytes()


# ====================================================================== radar

RADAR_MOUNT = SE3(translation=_v(2.3, 0.0, 0.6))


def _radar_scan(world: MujocoWorld, model: RadarModel, states: list[ActorState],
                ego_speed: float, seed: int, config: RadarSimConfig | None = None,
                ) -> tuple[RadarSim, SE3, np.ndarray, RadarReturns]:
    sim = RadarSim(world, model, RADAR_MOUNT, config)
    T_world_radar = RADAR_MOUNT
    v_radar = np.array([ego_speed, 0.0, 0.0])
    ret = sim.scan(T_world_radar, v_radar, {s.actor_id: s for s in states},
                   np.random.default_rng(seed))
    return sim, T_world_radar, v_radar, ret


def test_radar_doppler_matches_rigid_body_motion(world: MujocoWorld) -> None:
    states = [ActorState(4, 30.0, 4.0, 0.5, speed=12.0, yaw_rate=0.3),
              ActorState(3, 18.0, -5.0, 2.0, speed=-4.0, yaw_rate=-0.5),
              ActorState(5, 12.0, 3.0, -1.2, speed=1.5)]
    _place(world, *states)
    sigma_v = 0.1
    model = RadarModel(range_noise_m=0.0, azimuth_noise_deg=0.0, velocity_noise_mps=sigma_v,
                       false_alarms_per_scan=0.0)
    seen = {3: 0, 4: 0}
    for seed in range(3):
        _, T_wr, v_radar, ret = _radar_scan(world, model, states, 8.0, seed)
        p_world = T_wr.apply(ret.xyz.astype(np.float64))
        los = p_world - T_wr.translation
        los /= np.linalg.norm(los, axis=1, keepdims=True)
        for st in states:
            sel = ret.actor_id == st.actor_id
            if not sel.any():
                continue
            seen[st.actor_id] = seen.get(st.actor_id, 0) + int(sel.sum())
            v_rel = st.point_velocity(p_world[sel]) - v_radar
            expected = np.einsum("ij,ij->i", v_rel, los[sel])
            assert np.all(np.abs(ret.doppler[sel] - expected) <= 3 * sigma_v + 1e-4), st
            # and the points are on the actor
            inside = _inside_box(_actor_local(p_world[sel], st),
                                 world.spec.actors[st.actor_id].size, 0.1)
            assert inside.all()
    assert seen[3] > 0 and seen[4] > 0


def test_radar_static_returns_see_minus_the_radar_velocity(world: MujocoWorld) -> None:
    _place(world)
    sigma_v = 0.1
    model = RadarModel(range_noise_m=0.0, azimuth_noise_deg=0.0, velocity_noise_mps=sigma_v,
                       false_alarms_per_scan=0.0)
    _, T_wr, v_radar, ret = _radar_scan(world, model, [], 15.0, 3)
    assert len(ret) > 3  # the wall
    assert np.all(ret.actor_id == -1) and not ret.false_alarm.any()
    los = ret.xyz.astype(np.float64) / np.linalg.norm(ret.xyz, axis=1, keepdims=True)
    expected = -(T_wr.inverse().rotate(v_radar) @ los.T)
    assert np.all(np.abs(ret.doppler - expected) <= 3 * sigma_v + 1e-4)
    assert np.all(ret.doppler < -10.0)  # closing in on the wall ahead


def test_radar_sees_nothing_outside_its_field_of_view(world: MujocoWorld) -> None:
    # truck behind, pedestrian to the side (azimuth 80 deg > 60), car ahead
    states = [ActorState(4, -20.0, 0.0, 0.0), ActorState(5, 3.3, 6.0, 0.0),
              ActorState(3, 20.0, 2.0, 0.0)]
    _place(world, *states)
    model = RadarModel(false_alarms_per_scan=5.0)
    hits: set[int] = set()
    for seed in range(5):
        _, _, _, ret = _radar_scan(world, model, states, 0.0, seed)
        assert np.all(np.abs(ret.azimuth) <= math.radians(60.0) + 1e-6)
        assert np.all(np.abs(ret.elevation) <= math.radians(5.0) + 1e-6)
        assert np.all(ret.range <= 150.0)
        az = np.arctan2(ret.xyz[:, 1], ret.xyz[:, 0])
        assert np.all(np.abs(az) <= math.radians(60.0) + 1e-5)
        hits |= set(ret.actor_id.tolist())
    assert 3 in hits and 4 not in hits and 5 not in hits


def test_radar_false_alarm_statistics(world: MujocoWorld) -> None:
    _place(world)
    model = RadarModel(false_alarms_per_scan=3.0, max_range_m=100.0)
    cfg = RadarSimConfig(azimuth_step_deg=2.0, elevation_step_deg=5.0)
    sim = RadarSim(world, model, RADAR_MOUNT, cfg)
    rng = np.random.default_rng(11)
    counts, ranges, azims = [], [], []
    pose = SE3.from_xy_yaw(0.0, 0.0, math.pi)  # facing away from the wall: ground only
    for _ in range(300):
        ret = sim.scan(pose @ RADAR_MOUNT, np.zeros(3), {}, rng)
        assert np.all(ret.false_alarm)
        assert np.all(ret.actor_id[ret.false_alarm] == -1)
        counts.append(len(ret))
        ranges.append(ret.range)
        azims.append(ret.azimuth)
    mean = float(np.mean(counts))
    assert mean == pytest.approx(3.0, abs=0.3)  # 3 standard errors
    assert np.var(counts) / mean == pytest.approx(1.0, abs=0.3)  # Poisson
    r = np.concatenate(ranges)
    a = np.concatenate(azims)
    assert r.min() >= 0.5 and r.max() <= 100.0
    assert np.mean(r) == pytest.approx(50.25, abs=4.0)  # uniform in range
    assert np.all(np.abs(a) <= math.radians(60.0)) and abs(np.mean(a)) < 0.1


def test_radar_rcs_by_material_and_class(world: MujocoWorld) -> None:
    # same range and aspect: the metal truck's rear reflects far more than a pedestrian
    states = [ActorState(4, 30.0, 5.0, 0.0), ActorState(5, 30.0, -5.0, 0.0)]
    _place(world, *states)
    model = RadarModel(false_alarms_per_scan=0.0)
    cfg = RadarSimConfig(rcs_noise_db=0.0)
    truck: list[float] = []
    ped: list[float] = []
    for seed in range(4):
        _, _, _, ret = _radar_scan(world, model, states, 0.0, seed, cfg)
        k = np.bincount(ret.actor_id[ret.actor_id >= 0], minlength=6)
        # total RCS of an object = sum over its detections
        for aid, out in ((4, truck), (5, ped)):
            sel = ret.actor_id == aid
            if sel.any():
                out.append(10 * np.log10(np.sum(10 ** (ret.rcs[sel] / 10))))
        assert k[4] >= 1
    assert truck and min(truck) > 15.0  # metal 15 dBsm/m2 x ~8 m2 projected
    assert not ped or max(ped) < min(truck) - 15.0


def test_radar_keeps_the_strongest_detections(world: MujocoWorld) -> None:
    states = [ActorState(4, 30.0, 5.0, 0.0), ActorState(3, 20.0, -4.0, 0.3)]
    _place(world, *states)
    _, _, _, full = _radar_scan(world, RadarModel(false_alarms_per_scan=20.0), states, 5.0, 2)
    _, _, _, capped = _radar_scan(world, RadarModel(false_alarms_per_scan=20.0,
                                                    max_detections=5), states, 5.0, 2)
    assert len(full) > 5 and len(capped) == 5
    assert np.array_equal(np.sort(capped.rcs), np.sort(full.rcs)[-5:])


def test_radar_needs_the_state_of_every_hit_actor(world: MujocoWorld) -> None:
    states = [ActorState(4, 30.0, 0.0, 0.0)]
    _place(world, *states)
    sim = RadarSim(world, RadarModel(), RADAR_MOUNT)
    with pytest.raises(ValueError, match="actor 4 is hit but has no state"):
        sim.scan(RADAR_MOUNT, np.zeros(3), {}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="radar_velocity_world"):
        sim.scan(RADAR_MOUNT, np.zeros(2), {}, np.random.default_rng(0))


def test_radar_is_deterministic(world: MujocoWorld) -> None:
    states = [ActorState(4, 30.0, 4.0, 0.5, speed=12.0, yaw_rate=0.3),
              ActorState(3, 18.0, -5.0, 2.0, speed=-4.0)]
    _place(world, *states)
    model = RadarModel()
    runs = [_radar_scan(world, model, states, 8.0, seed)[3] for seed in (5, 5, 6)]
    fields = ("xyz", "range", "azimuth", "elevation", "doppler", "rcs", "actor_id",
              "false_alarm")
    for f in fields:
        assert getattr(runs[0], f).tobytes() == getattr(runs[1], f).tobytes(), f
    assert runs[0].doppler.tobytes() != runs[2].doppler.tobytes()


# ====================================================================== timings

def test_report_timings(capsys: pytest.CaptureFixture[str]) -> None:
    """Measures (does not assert) build, render, sweep and scan times of a busy scene."""
    rng = np.random.default_rng(0)
    static = tuple(StaticBox(f"b{i}", _v(rng.uniform(-60, 60), rng.uniform(-60, 60), 1.0),
                             _v(rng.uniform(1, 4), rng.uniform(1, 4), 2.0),
                             float(rng.uniform(0, 3)), Material.WALL) for i in range(100))
    actors = {i: _car() for i in range(1, 16)}
    t0 = time.perf_counter()
    world = MujocoWorld(WorldSpec(static, actors, _ego()))
    t_build = time.perf_counter() - t0
    states = [ActorState(i, float(rng.uniform(-40, 40)), float(rng.uniform(-40, 40)),
                         float(rng.uniform(-3, 3)), speed=5.0) for i in range(1, 16)]
    world.set_states([ActorState(0, 0.0, 0.0, 0.0), *states])
    with CameraSim(world, PLUMB_BOB, T_BASE_CAM) as cam:
        cam.render(SE3())
        t0 = time.perf_counter()
        for _ in range(3):
            img = cam.render(SE3())
        t_render = (time.perf_counter() - t0) / 3
    lidar = LidarSim(world, LidarModel(), LIDAR_POSE)
    t0 = time.perf_counter()
    sweep = _sweep(lidar, LIDAR_POSE, 0)
    t_sweep = time.perf_counter() - t0
    radar = RadarSim(world, RadarModel(), RADAR_MOUNT)
    radar.scan(RADAR_MOUNT, np.zeros(3), {s.actor_id: s for s in states}, rng)  # warm-up
    t0 = time.perf_counter()
    scan = radar.scan(RADAR_MOUNT, np.array([10.0, 0.0, 0.0]), {s.actor_id: s for s in states},
                      rng)
    t_scan = time.perf_counter() - t0
    world.close()
    assert img.rgb.shape == (480, 640, 3) and len(sweep) > 10_000 and len(scan) > 0
    with capsys.disabled():
        print(f"\n[sim timings] build (100 boxes, 15 cars) {t_build * 1e3:.1f} ms; "
              f"camera 640x480 rgb+depth+instance {t_render * 1e3:.1f} ms "
              f"(render {cam.render_camera.width}x{cam.render_camera.height}); "
              f"LiDAR 32x1024 sweep in 32 slices {t_sweep * 1e3:.1f} ms; "
              f"radar scan ({radar.directions.shape[0]} rays) {t_scan * 1e3:.1f} ms")


# ====================================================================== configs

@pytest.mark.parametrize(("factory", "match"), [
    (lambda: CameraSimConfig(near_m=0.0), "near_m"),
    (lambda: CameraSimConfig(far_m=0.01), "far_m"),
    (lambda: CameraSimConfig(supersample="2"), "supersample"),  # type: ignore[arg-type]
    (lambda: LidarSimConfig(n_slices=0), "n_slices"),
    (lambda: LidarSimConfig(intensity_scale=-1.0), "intensity_scale"),
    (lambda: RadarSimConfig(azimuth_step_deg=0.0), "azimuth_step_deg"),
    (lambda: RadarSimConfig(max_points_per_object=0), "max_points_per_object"),
    (lambda: RadarSimConfig(class_rcs_offset_db={"tank": 3.0}),  # type: ignore[dict-item]
     "unknown class 'tank'"),
    (lambda: RadarSimConfig(rcs_noise_db=float("nan")), "rcs_noise_db"),
])
def test_bad_sensor_configs_name_the_field(factory: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        factory()  # type: ignore[operator]

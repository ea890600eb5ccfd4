"""The MuJoCo side of the simulator: one kinematic model built from a :class:`WorldSpec`.

MuJoCo is used only for geometry (ray casting with ``mj_multiRay``) and offscreen rendering;
nothing is integrated. Every actor (the agents, ids >= 1, and the ego, id 0) is a *mocap*
body whose pose is written by :meth:`MujocoWorld.set_states` each step, then forward
kinematics places its geoms. Static boxes and the ground plane are world-body geoms.

Model layout:

- ground: an ``xy`` plane at ``z = 0`` of half size ``spec.half_extent_m``
  (colour of ``spec.ground_material``);
- one box geom per :class:`~mm_perception.sim.spec.StaticBox` (yaw about z);
- one mocap body per actor, its geoms the actor's parts in the actor frame (origin at the
  footprint centre on the ground, x forward, z up);
- geom groups: static geoms (ground included) are group 0, agents group 1, the ego group 2.
  Cameras hide group 2 and rays exclude the ego body, so the ego never blocks its own
  sensors;
- a directional "sun" (``spec.lighting``) plus the camera headlight as ambient fill, a flat
  sky box of ``lighting.sky_rgb``; shadows and multisampling are off (CPU rendering speed,
  and exact per-pixel ids in segmentation renders).

Before the first :meth:`~MujocoWorld.set_states` that names it, every actor is parked far
below the ground (invisible to cameras and rays); :meth:`~MujocoWorld.hide` parks actors
again (an agent that left the scene).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

os.environ.setdefault("MUJOCO_GL", "osmesa")  # offscreen CPU rendering; must precede mujoco

import mujoco
import numpy as np
import numpy.typing as npt

from mm_perception.core.types import ObjectClass
from mm_perception.sim.spec import (
    MATERIALS,
    ActorModel,
    ActorPart,
    ActorState,
    Material,
    WorldSpec,
)

I32 = npt.NDArray[np.int32]
F64 = npt.NDArray[np.float64]
T = TypeVar("T")

#: index of each material in ``geom_material`` (``list(Material)`` order)
MATERIAL_INDEX: dict[Material, int] = {m: i for i, m in enumerate(Material)}
#: geom groups (see the module docstring)
GROUP_STATIC, GROUP_AGENT, GROUP_EGO = 0, 1, 2
#: where actors without a pose are parked (far below the ground, beyond any sensor range)
PARK_Z = -10_000.0
#: actor id of static geoms (ground included) in ``geom_actor``
STATIC_ID = -1
EGO_ID = 0

#: specular / shininess per material (a little gloss on paint, glass and metal only)
_GLOSS: dict[Material, tuple[float, float]] = {
    Material.VEHICLE_PAINT: (0.5, 0.6),
    Material.GLASS: (0.8, 0.9),
    Material.METAL: (0.6, 0.5),
}


def _fmt(values: Iterable[float]) -> str:
    # repr-exact floats keep the model identical for identical specs (determinism)
    return " ".join(repr(float(v)) for v in values)


def _yaw_quat(yaw: float) -> tuple[float, float, float, float]:
    """MuJoCo quaternion ``(w, x, y, z)`` of a rotation by ``yaw`` about z."""
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


#: MuJoCo cylinders/capsules lie along their local z; this turns local z onto x / y / z
_AXIS_QUAT: dict[str, tuple[float, float, float, float]] = {
    "x": (math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0),   # +90 deg about y: z -> x
    "y": (math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0),  # -90 deg about x: z -> y
    "z": (1.0, 0.0, 0.0, 0.0),
}


class MujocoWorld:
    """The kinematic MuJoCo model of one scenario (see the module docstring).

    Attributes:
        spec: the world description it was built from.
        model, data: the MuJoCo model and its data (geom poses valid after ``set_states``).
        geom_actor: ``(ngeom,) int32`` actor id of each geom; -1 static / ground, 0 ego.
        geom_material: ``(ngeom,) int32`` index into ``list(Material)`` of each geom.
        geom_reflectivity: ``(ngeom,) float64`` LiDAR reflectivity of each geom's material.
        geom_rcs_dbsm_per_m2: ``(ngeom,) float64`` radar RCS density of each geom's material.
        ego_body_id: MuJoCo body id of the ego (for ray exclusion).
        actor_body_id: actor id -> MuJoCo body id (ego included).
        actor_class: actor id -> object class (ego: its model's class).
        static_names: geom id -> static box name for static box geoms ("ground" for the plane).

    Raises:
        ValueError: from :meth:`set_states` for an unknown actor id.
    """

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._closed = False
        xml, geom_names = self._build_xml(spec)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        m = self.model

        actor_ids = [EGO_ID, *sorted(int(k) for k in spec.actors)]
        self.actor_body_id: dict[int, int] = {}
        self._mocap_id: dict[int, int] = {}
        for aid in actor_ids:
            body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, _body_name(aid))
            self.actor_body_id[aid] = int(body)
            self._mocap_id[aid] = int(m.body_mocapid[body])
        self.ego_body_id = self.actor_body_id[EGO_ID]
        self.actor_class: dict[int, ObjectClass] = {EGO_ID: spec.ego.object_class}
        self.actor_class.update({int(k): v.object_class for k, v in spec.actors.items()})

        body_actor = np.full(m.nbody, STATIC_ID, dtype=np.int32)
        for aid, body in self.actor_body_id.items():
            body_actor[body] = aid
        self.geom_actor: I32 = body_actor[m.geom_bodyid].astype(np.int32)

        # geom names are "g<k>", k indexing the per-geom material / static name lists
        self.geom_material: I32 = np.empty(m.ngeom, dtype=np.int32)
        self.static_names: dict[int, str] = {}
        for gid in range(m.ngeom):
            k = int(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, gid)[1:])
            material, static_name = geom_names[k]
            self.geom_material[gid] = MATERIAL_INDEX[material]
            if static_name is not None:
                self.static_names[gid] = static_name
        materials = list(Material)
        self.geom_reflectivity: F64 = np.array(
            [MATERIALS[materials[i]].lidar_reflectivity for i in self.geom_material])
        self.geom_rcs_dbsm_per_m2: F64 = np.array(
            [MATERIALS[materials[i]].radar_rcs_dbsm_per_m2 for i in self.geom_material])
        for arr in (self.geom_actor, self.geom_material, self.geom_reflectivity,
                    self.geom_rcs_dbsm_per_m2):
            arr.setflags(write=False)

        self.data.mocap_pos[:] = (0.0, 0.0, PARK_Z)
        self.data.mocap_quat[:] = (1.0, 0.0, 0.0, 0.0)
        mujoco.mj_kinematics(self.model, self.data)
        # light (and camera) poses come from mj_camlight, not mj_kinematics; the sun is
        # fixed to the world body, so once is enough
        mujoco.mj_camlight(self.model, self.data)

    # ------------------------------------------------------------------ model building

    @staticmethod
    def _build_xml(spec: WorldSpec) -> tuple[str, list[tuple[Material, str | None]]]:
        """MJCF text of ``spec`` and, per geom name ``g<k>``, its material and static name."""
        geoms: list[tuple[Material, str | None]] = []
        materials: dict[tuple[Material, tuple[float, ...]], str] = {}

        def material(mat: Material, rgba: tuple[float, float, float, float] | None) -> str:
            key = (mat, tuple(rgba if rgba is not None else MATERIALS[mat].rgba))
            if key not in materials:
                materials[key] = f"m{len(materials)}"
            return materials[key]

        def geom(mat: Material, rgba: tuple[float, float, float, float] | None,
                 static_name: str | None, body: str) -> str:
            name = f"g{len(geoms)}"
            geoms.append((mat, static_name))
            return f'name="{name}" material="{material(mat, rgba)}" {body}'

        lines: list[str] = []
        lit = spec.lighting
        he = float(spec.half_extent_m)
        lines.append(f'<geom {geom(spec.ground_material, None, "ground", "")} type="plane" '
                     f'size="{_fmt((he, he, 1.0))}" group="{GROUP_STATIC}"/>')
        for box in spec.static:
            attrs = (f'type="box" pos="{_fmt(box.center)}" size="{_fmt(box.size / 2)}" '
                     f'quat="{_fmt(_yaw_quat(float(box.yaw)))}" group="{GROUP_STATIC}"')
            lines.append(f"<geom {geom(box.material, box.rgba, box.name, attrs)}/>")

        def body(aid: int, actor: ActorModel, group: int) -> str:
            parts = "".join(
                f"<geom {geom(p.material, p.rgba, None, _part_attrs(p, group))}/>"
                for p in actor.parts)
            return (f'<body name="{_body_name(aid)}" mocap="true" pos="0 0 {PARK_Z!r}">'
                    f"{parts}</body>")

        lines.append(body(EGO_ID, spec.ego, GROUP_EGO))
        for aid in sorted(int(k) for k in spec.actors):
            lines.append(body(aid, spec.actors[aid], GROUP_AGENT))

        assets = "".join(
            f'<material name="{name}" rgba="{_fmt(rgba)}" '
            f'specular="{_GLOSS.get(mat, (0.05, 0.1))[0]!r}" '
            f'shininess="{_GLOSS.get(mat, (0.05, 0.1))[1]!r}"/>'
            for (mat, rgba), name in materials.items())
        sky = _fmt(lit.sky_rgb)
        amb = float(lit.ambient)
        sun = float(lit.diffuse)
        # Geoms keep their default collision flags although nothing is simulated: MuJoCo
        # builds its per-body bounding volumes (which mj_multiRay uses to skip geoms per
        # ray) only for colliding geoms; without them a LiDAR sweep is ~5x slower.
        xml = f"""<mujoco model="mm_perception_world">
  <compiler angle="radian" autolimits="true"/>
  <option gravity="0 0 0"/>
  <statistic extent="{2 * he!r}" center="0 0 0"/>
  <visual>
    <global offwidth="640" offheight="480"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="{_fmt((amb, amb, amb))}" diffuse="0.1 0.1 0.1" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="flat" rgb1="{sky}" rgb2="{sky}"
             width="8" height="8"/>
    {assets}
  </asset>
  <worldbody>
    <light name="sun" directional="true" castshadow="false" pos="0 0 100"
           dir="{_fmt(lit.sun_direction)}" diffuse="{_fmt((sun, sun, sun))}"
           specular="0.2 0.2 0.2"/>
    {"".join(lines)}
  </worldbody>
</mujoco>"""
        return xml, geoms

    # ------------------------------------------------------------------ state

    @property
    def ngeom(self) -> int:
        return int(self.model.ngeom)

    def set_states(self, states: Sequence[ActorState]) -> None:
        """Move the given actors (world frame) and run forward kinematics.

        Actors not named keep their pose. Only ``x, y, z, yaw`` are used here (velocities
        matter to the radar, which receives the states itself).

        Raises:
            ValueError: an actor id that is not in the world, or a non-finite pose.
        """
        self._check_open()
        # one array write per field instead of one per actor: this runs for every sensor
        # event (32 LiDAR slices per sweep)
        mocap = np.empty(len(states), dtype=np.int64)
        pose = np.empty((len(states), 4))  # x, y, z, yaw
        for i, st in enumerate(states):
            aid = int(st.actor_id)
            m_id = self._mocap_id.get(aid)
            if m_id is None:
                raise ValueError(f"set_states: unknown actor id {aid} (world has "
                                 f"{sorted(self._mocap_id)})")
            mocap[i] = m_id
            pose[i] = (st.x, st.y, st.z, st.yaw)
        bad = ~np.isfinite(pose).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"set_states: actor {int(states[i].actor_id)} has a non-finite "
                             f"pose {tuple(pose[i].tolist())}")
        self.data.mocap_pos[mocap] = pose[:, :3]
        half = 0.5 * pose[:, 3]  # (w, x, y, z) of a rotation about z, as _yaw_quat
        quat = np.zeros((len(states), 4))
        quat[:, 0] = np.cos(half)
        quat[:, 3] = np.sin(half)
        self.data.mocap_quat[mocap] = quat
        mujoco.mj_kinematics(self.model, self.data)

    def hide(self, actor_ids: Iterable[int]) -> None:
        """Park actors far below the ground (out of every sensor's reach).

        Raises:
            ValueError: an unknown actor id.
        """
        self._check_open()
        for aid in actor_ids:
            mocap = self._mocap_id.get(int(aid))
            if mocap is None:
                raise ValueError(f"hide: unknown actor id {aid}")
            self.data.mocap_pos[mocap] = (0.0, 0.0, PARK_Z)
        mujoco.mj_kinematics(self.model, self.data)

    # ------------------------------------------------------------------ rays

    def cast_rays(self, origin: npt.ArrayLike, directions: npt.ArrayLike, max_range: float,
                  out: tuple[I32, F64, F64] | None = None) -> tuple[I32, F64, F64]:
        """Cast rays from one world point, ignoring the ego's own body.

        Args:
            origin: ``(3,)`` world point, m.
            directions: ``(N, 3)`` unit vectors, world frame.
            max_range: geoms farther than this are ignored, m.
            out: optional C-contiguous arrays of the three results' shapes and dtypes to
                write into (a caller filling one buffer slice by slice).

        Returns:
            ``geom_id (N,) int32`` (-1: no hit), ``dist (N,) float64`` metres along the ray
            (-1: no hit), ``normal (N, 3) float64`` unit surface normal at the hit, world
            frame (zeros where no hit).

        Raises:
            ValueError: ``directions`` is not ``(N, 3)``, or ``out`` does not fit.
        """
        self._check_open()
        pnt = np.ascontiguousarray(origin, dtype=np.float64).reshape(3)
        vec = np.ascontiguousarray(directions, dtype=np.float64)
        if vec.ndim != 2 or vec.shape[1] != 3:
            raise ValueError(f"directions must have shape (N, 3), got {vec.shape}")
        n = vec.shape[0]
        if out is None:
            geom_id, dist, normal = (np.empty(n, dtype=np.int32), np.empty(n),
                                     np.empty((n, 3)))
        else:
            geom_id, dist, normal = out
            if (geom_id.shape != (n,) or geom_id.dtype != np.int32
                    or dist.shape != (n,) or dist.dtype != np.float64
                    or normal.shape != (n, 3) or normal.dtype != np.float64
                    or not all(a.flags.c_contiguous for a in out)):
                raise ValueError(f"cast_rays: out must be C-contiguous int32 ({n},), "
                                 f"float64 ({n},) and float64 ({n}, 3) arrays")
        geom_id.fill(-1)
        normal.fill(0.0)
        if n:
            mujoco.mj_multiRay(self.model, self.data, pnt, vec.reshape(-1), None, 1,
                               self.ego_body_id, geom_id, dist, normal.reshape(-1), n,
                               float(max_range))
        dist[geom_id < 0] = -1.0
        return geom_id, dist, normal

    # ------------------------------------------------------------------ lifetime

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MujocoWorld is closed")

    def close(self) -> None:
        """Release the model (sensors built on this world must be closed first)."""
        self._closed = True

    def __enter__(self) -> MujocoWorld:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _body_name(actor_id: int) -> str:
    return "ego" if actor_id == EGO_ID else f"actor{actor_id}"


def _part_attrs(part: ActorPart, group: int) -> str:
    """MJCF attributes (type, size, pos, quat, group) of one actor part."""
    size = part.size
    if part.shape == "box":
        mj_size: tuple[float, ...] = tuple(size / 2)
        quat = _AXIS_QUAT["z"]
    elif part.shape == "sphere":
        mj_size = (size[0] / 2,)
        quat = _AXIS_QUAT["z"]
    else:  # cylinder / capsule: radius, half length of the straight part
        mj_size = (size[0] / 2, size[2] / 2)
        quat = _AXIS_QUAT[part.axis]
    return (f'type="{part.shape}" size="{_fmt(mj_size)}" pos="{_fmt(part.center)}" '
            f'quat="{_fmt(quat)}" group="{group}"')


class WorldWorker:
    """A thread that works on a private copy of a world's actor poses.

    MuJoCo's heavy calls (rendering and read-back, ray casting) release the GIL, so a sensor
    handing them to its worker lets the simulator step the traffic and the other sensors
    meanwhile (the cameras do). :meth:`submit` copies the world's actor poses *now* (the
    caller may move the world on at once); the job runs with them in the worker's own
    ``MjData``. Jobs run one at a time, in the order submitted, so the results are the same
    as calling them in line.

    Args:
        world: the world whose poses are copied.
        name: thread name prefix.
    """

    def __init__(self, world: MujocoWorld, name: str) -> None:
        self.world = world
        self._data = mujoco.MjData(world.model)
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1,
                                                                   thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(data, *args)`` on the worker with the world's actor poses as they are
        now (``data``: the worker's ``MjData``, kinematics done).

        Raises:
            RuntimeError: the worker is closed.
        """
        pool = self._open()
        src = self.world.data
        return pool.submit(self._run, src.mocap_pos.copy(), src.mocap_quat.copy(), fn, args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread and wait (thread-bound resources such as an
        OpenGL context are made and freed this way)."""
        return self._open().submit(fn, *args).result()

    def _open(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise RuntimeError("WorldWorker is closed")
        return self._pool

    def _run(self, pos: F64, quat: F64, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._data.mocap_pos[:] = pos
        self._data.mocap_quat[:] = quat
        mujoco.mj_kinematics(self.world.model, self._data)
        mujoco.mj_camlight(self.world.model, self._data)  # lights and cameras: the renders
        return fn(self._data, *args)

    def close(self) -> None:
        """Finish the jobs submitted, then stop the thread (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


__all__ = ["EGO_ID", "GROUP_AGENT", "GROUP_EGO", "GROUP_STATIC", "MATERIAL_INDEX", "PARK_Z",
           "STATIC_ID", "MujocoWorld", "WorldWorker"]

"""The scenario simulator: traffic + ego dynamics + MuJoCo sensors on one event timeline.

Time is integer nanoseconds since the scenario start (stamps add ``SimConfig.start_stamp_ns``).
The world advances in physics steps of ``physics_dt_ns``; every sensor event (a LiDAR slice, a
camera frame, a radar scan, an odometry sample) falling inside a step is evaluated at its own
time with the actor states interpolated between the step's ends, so sensors see the world
when they measure it:

- a LiDAR sweep of ``1 / rate_hz`` s is cast in ``lidar_slices`` slices; each slice fires its
  columns from the ego pose at the slice time against the world at that time, and its points
  carry that time (relative to the sweep start, the header stamp). A moving ego therefore
  gives real motion distortion, which deskewing removes exactly.
- cameras, radars and odometry are sampled at their rates with a fixed per-sensor phase.
  A camera frame renders on the camera's own thread (MuJoCo's render calls release the GIL)
  with the actor poses copied at its time, while the step goes on with the traffic and the
  LiDAR slices; the step waits for it at its end and puts it in its place among the outputs.

Every random draw comes from a generator seeded by (scenario seed, sensor, event index), so a
run is a pure function of (scenario, seed, rig, config): same inputs, byte-identical outputs.

Closed loop: :meth:`Simulator.reset` then :meth:`Simulator.step` with an
:class:`~mm_perception.sim.ego_dynamics.EgoCommand` (or a trajectory) advances one control
period and returns the sensor outputs, their ground truth and collision / off-road events.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mm_perception.core.calibration import Rig, SensorSpec
from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.core.sensor_models import (
    CameraStream,
    LidarModel,
    OdometryStream,
    RadarModel,
)
from mm_perception.core.types import CameraFrame, EgoState, PointCloud, RadarScan, SensorKind
from mm_perception.sim.ego_dynamics import (
    Autopilot,
    BicycleModel,
    EgoCommand,
    TrajectoryCommand,
    UnicycleModel,
    boxes_overlap,
    footprint,
    make_dynamics,
    off_road,
)
from mm_perception.sim.ground_truth import (
    GroundTruthFrame,
    GroundTruthObject,
    actor_pose,
    object_truth,
)
from mm_perception.sim.scenario import Scenario
from mm_perception.sim.spec import ActorState
from mm_perception.sim.traffic import TrafficModel

if TYPE_CHECKING:  # the sensor modules import MuJoCo; reset() imports them when needed
    from mm_perception.sim.lidar_sim import LidarSweep

NS = 1_000_000_000


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings.

    Attributes:
        physics_dt_ns: traffic / ego integration step, ns.
        control_period_ns: one :meth:`Simulator.step`, ns (a multiple of ``physics_dt_ns``).
        lidar_slices: slices per LiDAR sweep (each slice sees the world at its own time).
        start_stamp_ns: stamp of the scenario start, ns.
        camera_depth / camera_instance: render ground-truth depth / instance images.
        publish_latency_ns: receive time minus stamp for every message (the sweep end for a
            LiDAR), ns.
    """

    physics_dt_ns: int = 10_000_000
    control_period_ns: int = 50_000_000
    lidar_slices: int = 32
    start_stamp_ns: int = 1_700_000_000_000_000_000
    camera_depth: bool = True
    camera_instance: bool = True
    publish_latency_ns: int = 2_000_000

    def __post_init__(self) -> None:
        for key in ("physics_dt_ns", "control_period_ns", "lidar_slices"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"SimConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.control_period_ns % self.physics_dt_ns:
            raise ConfigError(f"SimConfig.control_period_ns ({self.control_period_ns}) must be a "
                              f"multiple of physics_dt_ns ({self.physics_dt_ns})")
        if self.start_stamp_ns < 0 or self.publish_latency_ns < 0:
            raise ConfigError("SimConfig.start_stamp_ns and publish_latency_ns must be >= 0")


@dataclass(frozen=True)
class SensorOutput:
    """One sensor message produced by the simulator.

    Attributes:
        sensor: rig sensor name.
        kind: its kind.
        stamp_ns: header stamp, ns (absolute).
        publish_ns: receive time, ns (absolute).
        value: the measurement as a core type (LiDAR clouds in the sensor frame with canonical
            fields x, y, z, intensity, ring and per-point time offsets).
        depth: camera only: ``(H, W)`` float32 depth along the optical axis, m (NaN = none).
        instance: camera only: ``(H, W)`` int32 actor id per pixel (-1 = static/ground/sky).
        labels: per-point ground truth of LiDAR / radar outputs (not written to bags as
            message fields): ``actor_id`` ``(N,)`` int32 (-1 = static, ground or false alarm)
            and, for LiDAR, ``actor_xyz`` ``(N, 3)`` float64, each hit in its actor's frame at
            the time it was measured (NaN for static hits).
    """

    sensor: str
    kind: SensorKind
    stamp_ns: int
    publish_ns: int
    value: CameraFrame | PointCloud | RadarScan | EgoState
    depth: np.ndarray | None = None
    instance: np.ndarray | None = None
    labels: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SimEvents:
    """Safety events during one step.

    Attributes:
        collisions: ids of agents whose footprint overlapped the ego's.
        off_road: the ego's footprint left the drivable area.
    """

    collisions: tuple[int, ...] = ()
    off_road: bool = False


@dataclass(frozen=True)
class SimStep:
    """What one :meth:`Simulator.step` produced."""

    time_ns: int
    ego: ActorState
    agents: tuple[ActorState, ...]
    outputs: tuple[SensorOutput, ...] = ()
    ground_truth: tuple[GroundTruthFrame, ...] = ()
    events: SimEvents = field(default_factory=SimEvents)


@dataclass
class _Sweep:
    """A LiDAR sweep being cast: its slices' rays (``raw``) and, per slice, the event time
    after the sweep start (ns) and the agents' states then."""

    start_ns: int
    states: tuple[ActorState, ...]
    ego: ActorState
    raw: LidarSweep
    offsets: list[int] = field(default_factory=list)
    slice_states: list[tuple[ActorState, ...]] = field(default_factory=list)


@dataclass(frozen=True)
class _Pending:
    """A sensor output still being computed on a sensor's thread (a camera frame):
    ``finish()`` waits for it and builds its output and ground truth, which go to their
    places in the step's lists."""

    finish: Callable[[], tuple[SensorOutput, GroundTruthFrame]]
    future: Future[Any]
    output_slot: int
    truth_slot: int

    def wait(self) -> None:
        """Wait for the frame without building its output (errors are dropped: nobody
        reads this frame)."""
        self.future.exception()


@dataclass
class _Advanced:
    """A step whose main-thread part is done (:meth:`Simulator._advance`): its outputs and
    ground truth in event order, with ``None`` in the places of ``pending`` frames."""

    outputs: list[Any] = field(default_factory=list)
    truth: list[Any] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    collisions: set[int] = field(default_factory=set)
    off_road: bool = False
    time_ns: int = 0
    ego: ActorState | None = None
    agents: tuple[ActorState, ...] = ()


def _interp_state(a: ActorState, b: ActorState, alpha: float) -> ActorState:
    dyaw = math.remainder(b.yaw - a.yaw, 2 * math.pi)
    return ActorState(a.actor_id, a.x + alpha * (b.x - a.x), a.y + alpha * (b.y - a.y),
                      a.yaw + alpha * dyaw, a.speed + alpha * (b.speed - a.speed),
                      a.yaw_rate + alpha * (b.yaw_rate - a.yaw_rate), a.z + alpha * (b.z - a.z))


class Simulator:
    """Runs a scenario with the rig's sensors; see the module docstring.

    Args:
        rig: the sensor rig (camera intrinsics must be in the rig; sensor models from
            ``model:`` or defaults).
        config: simulator settings.
    """

    def __init__(self, rig: Rig, config: SimConfig | None = None) -> None:
        self.rig = rig
        self.config = config or SimConfig()
        unresolved = rig.unresolved_extrinsics()
        if unresolved:
            raise ConfigError(f"{rig.source}: the simulator needs extrinsics in the rig; "
                              f"{unresolved} say from_tf")
        for spec in rig.sensors.values():
            if spec.kind is SensorKind.CAMERA and spec.intrinsics is None:
                raise ConfigError(f"{rig.source}: sensors.{spec.name}.intrinsics: the simulator "
                                  f"needs the camera intrinsics in the rig, got "
                                  f"from_camera_info")
        self.scenario: Scenario | None = None
        self._world: Any = None
        self._sensors: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        for sensor in self._sensors.values():
            close = getattr(sensor, "close", None)
            if close is not None:
                close()
        self._sensors = {}
        if self._world is not None:
            self._world.close()
            self._world = None

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self, scenario: Scenario | str, seed: int | None = None) -> SimStep:
        """Start a scenario from time 0; returns the initial state.

        Args:
            scenario: a built :class:`Scenario`, or a library name / YAML path.
            seed: with a name or path: the seed to build it with (default 0); with a built
                scenario: None or its own seed (a scenario is built for one seed).
        """
        if isinstance(scenario, str):
            from mm_perception.sim.library import load_scenario

            scenario = load_scenario(scenario, 0 if seed is None else seed)
        elif seed is not None and seed != scenario.seed:
            raise ConfigError(f"scenario {scenario.name!r} was built for seed {scenario.seed}, "
                              f"not {seed}: pass its name (or load_scenario(name, {seed}))")
        from mm_perception.sim.camera_sim import CameraSim
        from mm_perception.sim.lidar_sim import LidarSim
        from mm_perception.sim.radar_sim import RadarSim
        from mm_perception.sim.world import MujocoWorld

        self.close()
        self.scenario = scenario
        self._check_rig_fits_ego(scenario)
        self._world = MujocoWorld(scenario.world_spec())
        self._traffic = TrafficModel(scenario)
        self._traffic.reset()
        states = scenario.initial_states()
        self._ego = states[0]
        self._agents = tuple(self._traffic.states())
        self._models = scenario.world_spec().actors
        self._dynamics: BicycleModel | UnicycleModel = make_dynamics(scenario.ego)
        self._autopilot = Autopilot(scenario)
        self._t = 0
        self._sweeps: dict[str, _Sweep] = {}
        self._timing = self._sensor_timing()
        for spec in self.rig.sensors.values():
            model = spec.sensor_model
            if spec.kind is SensorKind.CAMERA:
                assert spec.intrinsics is not None and spec.extrinsics is not None
                self._sensors[spec.name] = CameraSim(
                    self._world, spec.intrinsics, spec.extrinsics,
                    depth=self.config.camera_depth, instance=self.config.camera_instance)
            elif spec.kind is SensorKind.LIDAR:
                assert isinstance(model, LidarModel) and spec.extrinsics is not None
                self._sensors[spec.name] = LidarSim(self._world, model, spec.extrinsics)
            elif spec.kind is SensorKind.RADAR:
                assert isinstance(model, RadarModel) and spec.extrinsics is not None
                self._sensors[spec.name] = RadarSim(self._world, model, spec.extrinsics)
        self._world.set_states([self._ego, *self._agents])
        return SimStep(0, self._ego, self._agents)

    def _check_rig_fits_ego(self, scenario: Scenario) -> None:
        """Every sensor must sit on the ego's body: inside its box grown by 0.5 m (mounts
        stick out a little), not meters away from the vehicle."""
        size = scenario.ego.model.size
        margin = 0.5
        lo = np.array([-size[0] / 2, -size[1] / 2, 0.0]) - margin
        hi = np.array([size[0] / 2, size[1] / 2, size[2]]) + margin
        for spec in self.rig.sensors.values():
            if spec.kind is SensorKind.ODOMETRY or spec.extrinsics is None:
                continue
            pos = spec.extrinsics.translation
            if np.any(pos < lo) or np.any(pos > hi):
                raise ConfigError(
                    f"{self.rig.source}: sensors.{spec.name}.extrinsics.translation: "
                    f"{pos.tolist()} is outside the {scenario.ego.platform} body "
                    f"({size.tolist()} m around base_link, 0.5 m margin)")

    # ------------------------------------------------------------------ stepping
    def step(self, command: EgoCommand | TrajectoryCommand | None = None) -> SimStep:
        """Advance one control period with ``command`` (None: the built-in autopilot)."""
        return self._complete(self._advance(command))

    def run(self, duration_s: float) -> Iterator[SimStep]:
        """Open-loop recording: autopilot steps until ``duration_s`` has elapsed.

        The steps are those :meth:`step` gives, but each is handed out only once the next
        one has been advanced: the autopilot needs no camera image, so a camera renders its
        frames on its thread while the main thread works on the next step, instead of being
        waited for at the end of its own. The simulator's own time is therefore one step
        ahead of the step last handed out; a consumer that stops early and goes on with
        :meth:`step` skips that step (call :meth:`reset` to start over).
        """
        end = round(duration_s * NS)
        held: _Advanced | None = None
        try:
            while self._t < end:
                nxt = self._advance(None)
                if held is not None:
                    yield self._complete(held)
                held = nxt
            if held is not None:
                last, held = held, None
                yield self._complete(last)
        finally:
            if held is not None:  # the consumer stopped early: let the frames finish
                for p in held.pending:
                    p.wait()

    def _advance(self, command: EgoCommand | TrajectoryCommand | None) -> _Advanced:
        """The main-thread part of a step: dynamics, traffic and every sensor event; camera
        frames are still rendering on their threads (see :meth:`_complete`)."""
        if self.scenario is None:
            raise RuntimeError("call reset(scenario) before step()")
        cfg = self.config
        adv = _Advanced()
        issued = self._t  # trajectory times are relative to when the command is given
        if command is None:  # the autopilot decides at the control rate, like a planner
            command = self._autopilot.command(self._ego, self._traffic, self._t / NS)
        for _ in range(cfg.control_period_ns // cfg.physics_dt_ns):
            t0, t1 = self._t, self._t + cfg.physics_dt_ns
            ego0, agents0 = self._ego, self._agents
            cmd: EgoCommand | TrajectoryCommand = command
            if isinstance(cmd, TrajectoryCommand):
                cmd = self._dynamics.track(ego0, cmd, (t0 - issued) / NS)
            ego1 = self._dynamics.step(ego0, cmd, cfg.physics_dt_ns / NS)
            agents1 = tuple(self._traffic.step(cfg.physics_dt_ns / NS, ego0))
            for t_ev, _, name, kind_idx in self._events_in(t0, t1):
                alpha = (t_ev - t0) / cfg.physics_dt_ns
                ego = _interp_state(ego0, ego1, alpha)
                agents = tuple(_interp_state(a, b, alpha) for a, b in zip(agents0, agents1,
                                                                          strict=True))
                self._handle(name, kind_idx, t_ev, ego, agents, adv)
            self._t, self._ego, self._agents = t1, ego1, agents1
            hit, off = self._safety(ego1, agents1)
            adv.collisions |= hit
            adv.off_road |= off
        adv.time_ns, adv.ego, adv.agents = self._t, self._ego, self._agents
        return adv

    @staticmethod
    def _complete(adv: _Advanced) -> SimStep:
        """Wait for the step's camera frames and put them in their places (the order of the
        outputs is the order of the sensor events)."""
        outputs, truth = adv.outputs, adv.truth
        assert adv.ego is not None
        for p in adv.pending:
            outputs[p.output_slot], truth[p.truth_slot] = p.finish()
        return SimStep(adv.time_ns, adv.ego, adv.agents, tuple(outputs), tuple(truth),
                       SimEvents(tuple(sorted(adv.collisions)), adv.off_road))

    # ------------------------------------------------------------------ events
    def _sensor_timing(self) -> list[tuple[int, SensorSpec, int, int]]:
        """(order, spec, period ns, phase ns) per sensor, decided once per reset."""
        timing = []
        for order, spec in enumerate(self.rig.sensors.values()):
            model = spec.sensor_model
            assert isinstance(model, CameraStream | LidarModel | RadarModel | OdometryStream)
            period = round(NS / model.rate_hz)
            # a fixed, different phase per sensor (sensors are not triggered together); a
            # LiDAR's slices start at 0
            phase = 0 if spec.kind is SensorKind.LIDAR else (order * 7_000_000) % period
            timing.append((order, spec, period, phase))
        return timing

    def _events_in(self, t0: int, t1: int) -> list[tuple[int, int, str, int]]:
        """Events with time in ``[t0, t1)``: (time, order, sensor, event index); for a LiDAR
        the index counts slices."""
        events = []
        for order, spec, period, phase in self._timing:
            if spec.kind is SensorKind.LIDAR:
                slice_ns = period / self.config.lidar_slices
                k = math.ceil(t0 / slice_ns)
                while round(k * slice_ns) < t1:
                    events.append((round(k * slice_ns), order, spec.name, k))
                    k += 1
                continue
            k = max(0, math.ceil((t0 - phase) / period))
            while phase + k * period < t1:
                events.append((phase + k * period, order, spec.name, k))
                k += 1
        events.sort()
        return events

    def _rng(self, sensor: str, index: int) -> np.random.Generator:
        assert self.scenario is not None
        return np.random.default_rng([self.scenario.seed, zlib.crc32(sensor.encode()), index])

    def _handle(self, name: str, index: int, t_ns: int, ego: ActorState,
                agents: tuple[ActorState, ...], adv: _Advanced) -> None:
        spec = self.rig.sensors[name]
        outputs, truth = adv.outputs, adv.truth
        stamp = self.config.start_stamp_ns + t_ns
        T_world_base = actor_pose(ego)
        if spec.kind is SensorKind.ODOMETRY:
            outputs.append(self._odometry(spec, index, stamp, ego, T_world_base))
            return
        self._world.set_states([ego, *agents])
        assert spec.extrinsics is not None
        T_world_sensor = T_world_base @ spec.extrinsics
        if spec.kind is SensorKind.LIDAR:
            self._lidar_slice(spec, index, t_ns, ego, agents, T_world_sensor, outputs, truth)
        elif spec.kind is SensorKind.CAMERA:
            self._camera(spec, stamp, ego, agents, T_world_base, adv)
        else:
            self._radar(spec, index, stamp, ego, agents, T_world_sensor, outputs, truth)

    def _objects(self, agents: Sequence[ActorState], ego: ActorState,
                 counts: dict[int, dict[str, int]]) -> tuple[GroundTruthObject, ...]:
        T_base_world = actor_pose(ego).inverse()
        return tuple(object_truth(a, self._models[a.actor_id], T_base_world,
                                  **counts.get(a.actor_id, {})) for a in agents)

    def _odometry(self, spec: SensorSpec, index: int, stamp: int, ego: ActorState,
                  T_world_base: SE3) -> SensorOutput:
        model = spec.sensor_model
        assert isinstance(model, OdometryStream)
        pose, lin = T_world_base, np.array([ego.speed, 0.0, 0.0])
        if model.position_noise_m or model.velocity_noise_mps:
            rng = self._rng(spec.name, index)
            pose = SE3(pose.rotation, pose.translation + rng.normal(
                0.0, model.position_noise_m, 3) * np.array([1.0, 1.0, 0.0]))
            lin = lin + rng.normal(0.0, model.velocity_noise_mps, 3) * np.array([1.0, 1.0, 0.0])
        state = EgoState(stamp, "odom", "base_link", pose, lin, np.array([0.0, 0.0, ego.yaw_rate]))
        return SensorOutput(spec.name, spec.kind, stamp, stamp + self.config.publish_latency_ns,
                            state)

    def _lidar_slice(self, spec: SensorSpec, k: int, t_ns: int, ego: ActorState,
                     agents: tuple[ActorState, ...], T_world_sensor: SE3,
                     outputs: list[SensorOutput], truth: list[GroundTruthFrame]) -> None:
        slices = self.config.lidar_slices
        j = k % slices
        lidar = self._sensors[spec.name]
        if j == 0:
            self._sweeps[spec.name] = _Sweep(t_ns, agents, ego, lidar.sweep())
        sweep = self._sweeps.get(spec.name)
        if sweep is None:  # joined mid-sweep (cannot happen from t = 0); skip the partial sweep
            return
        # only the cast happens per slice; the measurement model runs once per sweep
        sweep.raw.cast(T_world_sensor, lidar.slice_columns(j, slices))
        sweep.offsets.append(t_ns - sweep.start_ns)
        sweep.slice_states.append(agents)
        if j != slices - 1:
            return
        del self._sweeps[spec.name]
        returns, slice_idx, points_world = sweep.raw.finish_with_slices(
            self._rng(spec.name, k // slices))
        points = np.zeros(len(returns), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                               ("intensity", "<f4"), ("ring", "<u2")])
        xyz = returns.xyz
        points["x"], points["y"], points["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        points["intensity"] = returns.intensity
        points["ring"] = returns.ring
        offsets = np.asarray(sweep.offsets, dtype=np.int64)[slice_idx]
        stamp = self.config.start_stamp_ns + sweep.start_ns
        cloud = PointCloud(spec.name, stamp, spec.frame_id, points, time_offsets_ns=offsets)
        publish = self.config.start_stamp_ns + t_ns + self.config.publish_latency_ns
        actor_ids = returns.actor_id
        local = _actor_local(actor_ids, slice_idx, points_world, sweep.slice_states)
        outputs.append(SensorOutput(spec.name, spec.kind, stamp, publish, cloud,
                                    labels={"actor_id": actor_ids, "actor_xyz": local}))
        ids, counts = np.unique(actor_ids[actor_ids > 0], return_counts=True)
        hits = {int(i): {"lidar_hits": int(c)} for i, c in zip(ids, counts, strict=True)}
        truth.append(GroundTruthFrame(stamp, spec.name, spec.kind.value, sweep.ego,
                                      self._objects(sweep.states, sweep.ego, hits)))

    def _camera(self, spec: SensorSpec, stamp: int, ego: ActorState,
                agents: tuple[ActorState, ...], T_world_base: SE3, adv: _Advanced) -> None:
        """Ask for the frame (it renders on the camera's thread while the step goes on) and
        hold its places in the step's lists (their order stays the order of the events)."""
        future = self._sensors[spec.name].render_async(T_world_base)
        adv.pending.append(_Pending(
            lambda: self._finish_frame(spec, stamp, ego, agents, T_world_base, future),
            future, len(adv.outputs), len(adv.truth)))
        adv.outputs.append(None)
        adv.truth.append(None)

    def _finish_frame(self, spec: SensorSpec, stamp: int, ego: ActorState,
                      agents: tuple[ActorState, ...], T_world_base: SE3,
                      future: Future[Any]) -> tuple[SensorOutput, GroundTruthFrame]:
        """The camera frame's output and ground truth once it is rendered."""
        images = future.result()
        camera = spec.intrinsics
        assert camera is not None and spec.extrinsics is not None
        frame = CameraFrame(spec.name, stamp, spec.frame_id, images.rgb, "rgb8", camera)
        output = SensorOutput(spec.name, spec.kind, stamp,
                              stamp + self.config.publish_latency_ns, frame,
                              depth=images.depth, instance=images.instance)
        counts = _visibility(images.instance, agents, self._models, camera,
                             (T_world_base @ spec.extrinsics).inverse())
        return output, GroundTruthFrame(stamp, spec.name, spec.kind.value, ego,
                                        self._objects(agents, ego, counts))

    def _radar(self, spec: SensorSpec, index: int, stamp: int, ego: ActorState,
               agents: tuple[ActorState, ...], T_world_sensor: SE3,
               outputs: list[SensorOutput], truth: list[GroundTruthFrame]) -> None:
        radar_velocity = ego.point_velocity(T_world_sensor.translation[None, :])[0]
        states = {a.actor_id: a for a in agents}
        ret = self._sensors[spec.name].scan(T_world_sensor, radar_velocity, states,
                                            self._rng(spec.name, index))
        scan = RadarScan(spec.name, stamp, spec.frame_id, ret.xyz, ret.doppler, ret.rcs)
        outputs.append(SensorOutput(spec.name, spec.kind, stamp,
                                    stamp + self.config.publish_latency_ns, scan,
                                    labels={"actor_id": np.asarray(ret.actor_id, np.int32)}))
        ids, counts = np.unique(ret.actor_id[ret.actor_id > 0], return_counts=True)
        hits = {int(i): {"radar_hits": int(c)} for i, c in zip(ids, counts, strict=True)}
        truth.append(GroundTruthFrame(stamp, spec.name, spec.kind.value, ego,
                                      self._objects(agents, ego, hits)))

    # ------------------------------------------------------------------ safety
    def _safety(self, ego: ActorState, agents: Sequence[ActorState]) -> tuple[set[int], bool]:
        assert self.scenario is not None
        ego_fp = footprint(ego, self.scenario.ego.model)
        ego_r = float(np.hypot(*self.scenario.ego.model.size[:2])) / 2
        hit = set()
        for a in agents:  # bounding circles first: the exact test only for near agents
            model = self._models[a.actor_id]
            if math.hypot(a.x - ego.x, a.y - ego.y) > ego_r + float(np.hypot(*model.size[:2])) / 2:
                continue
            if boxes_overlap(ego_fp, footprint(a, model)):
                hit.add(a.actor_id)
        return hit, off_road(ego, self.scenario.ego.model, self.scenario.layout)


def _actor_local(actor_ids: np.ndarray, slice_idx: np.ndarray, points_world: np.ndarray,
                 slice_states: Sequence[tuple[ActorState, ...]]) -> np.ndarray:
    """``(N, 3)`` each point in the frame of the actor it hit, with that actor's pose at the
    time of the point's slice (NaN for static hits)."""
    out = np.full((len(actor_ids), 3), np.nan)
    by_id = [{a.actor_id: a for a in states} for states in slice_states]
    for actor_id in np.unique(actor_ids[actor_ids > 0]):
        sel = np.flatnonzero(actor_ids == actor_id)
        # the actor's pose (x, y, z, yaw) in every slice, then per point
        poses = [by_id[k][int(actor_id)] for k in range(len(by_id))]
        pose = np.array([(a.x, a.y, a.z, a.yaw) for a in poses])[slice_idx[sel]]
        d = points_world[sel] - pose[:, :3]
        c, s = np.cos(pose[:, 3]), np.sin(pose[:, 3])
        # R_world_actor = Rz(yaw): local = Rz(yaw)^T d
        out[sel, 0] = c * d[:, 0] + s * d[:, 1]
        out[sel, 1] = -s * d[:, 0] + c * d[:, 1]
        out[sel, 2] = d[:, 2]
    return out


def _visibility(instance: np.ndarray | None, agents: Sequence[ActorState], models: Any,
                camera: CameraModel, T_cam_world: SE3) -> dict[int, dict[str, int]]:
    """Visible pixels (instance mask) and projected box pixels per agent."""
    import cv2

    out: dict[int, dict[str, int]] = {}
    visible = np.zeros(0, dtype=np.int64)
    if instance is not None:  # ids are small actor ids: a histogram, not a sort
        visible = np.bincount(instance[instance > 0].ravel())
    image = np.array([[0, 0], [camera.width, 0], [camera.width, camera.height],
                      [0, camera.height]], dtype=np.float32)
    if not agents:
        return out
    # every agent's box corners projected at once: (A, 8) rows
    corners = np.concatenate([object_truth(a, models[a.actor_id], SE3()).box_world.corners()
                              for a in agents])
    corners_cam = T_cam_world.apply(corners)
    uv, valid = camera.project(corners_cam)
    valid &= corners_cam[:, 2] > 0.1
    for k, agent in enumerate(agents):
        rows = slice(8 * k, 8 * k + 8)
        projected = 0
        if np.all(valid[rows]):
            # area of the projected box's hull inside the image, in pixels
            hull = cv2.convexHull(np.clip(uv[rows], -1e5, 1e5).astype(np.float32))
            area, _ = cv2.intersectConvexConvex(hull, image)
            projected = round(float(area))
        aid = agent.actor_id
        out[aid] = {"visible_pixels": int(visible[aid]) if 0 <= aid < visible.size else 0,
                    "projected_pixels": projected}
    return out


__all__ = ["SensorOutput", "SimConfig", "SimEvents", "SimStep", "Simulator"]

"""The perception pipeline in a child process, for the composed pipeline node.

Why: in one Python process the rclpy executor thread (decoding messages, de-skewing clouds,
``/clock`` and timer callbacks: some 250 callbacks a second for the car rig) and the worker
share the GIL, and the worker's many short numpy calls keep waiting for it. Measured on the
2-core machine, a set took 2 to 3 times its offline time live (13.5 -> 40 ms without
cameras, 41 -> 90-100 ms with). A child process has its own interpreter: the node's worker
thread sends the set and waits (without the GIL) for the result.

Per set the child gets the :class:`~mm_perception.core.types.SensorSet` (about 1.5 MB for
the car rig, pickled in well under a millisecond: the arrays are copied as buffers) and an
:class:`~mm_perception.core.ego_motion.OdometryDelta` (the few poses since the last set), and
keeps its own copy of the odometry equal to the node's snapshot. It returns the
:class:`~mm_perception.fusion.pipeline.FrameResult`, without the data-level images and
painted clouds unless the node publishes overlays or depth images (``keep_debug``). Trackers
live in the child. The child is started with ``spawn`` (forking a process with DDS threads
is unsafe) at configure, which also builds the pipeline and warms up the camera detector
there, and is stopped at cleanup.
"""

from __future__ import annotations

import copyreg
import gc
import multiprocessing
import threading
import traceback
import types
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mm_perception.core.ego_motion import OdometryBuffer
from mm_perception.core.errors import ConfigError, MMPerceptionError
from mm_perception.core.heap import freeze_heap
from mm_perception.core.types import SensorKind, SensorSet


def _mappingproxy(items: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(items)


# the core's frozen dataclasses hold read-only mappings (MappingProxyType), which pickle does
# not know; registered in both processes (each imports this module)
copyreg.pickle(types.MappingProxyType, lambda m: (_mappingproxy, (dict(m),)))


class PipelineProcessError(MMPerceptionError):
    """The pipeline process failed on a set (the message has its traceback) or died."""


def warm_up(pipeline: Any, rig: Any, params: Mapping[str, Any], sets: int = 3
            ) -> tuple[str, Any]:
    """Run the chain on a few sets of a small synthetic scene for the rig, then forget the
    tracks: the first real sets would otherwise pay for the detector's first inferences
    (allocator, kernels), lazy imports and first calls, over a second on the first set while
    the next ones pile up and are dropped. Returns ("" or why it was skipped (a rig the
    synthetic scene cannot simulate: the node still works, the first sets are slower), the
    last warm-up result or None)."""
    import tempfile

    from mm_perception.bag.offline import OfflineConfig, OfflineReplay
    from mm_perception.bag.reader import BagSource
    from mm_perception.bag.synthetic import SyntheticConfig, write_synthetic_bag

    compressed = any(getattr(s.sensor_model, "compressed", False)
                     for s in rig.of_kind(SensorKind.CAMERA))
    result = None
    try:
        with tempfile.TemporaryDirectory(prefix="mm_perception_warmup_") as tmp:
            bag = f"{tmp}/warmup"
            write_synthetic_bag(bag, rig, SyntheticConfig(duration_s=0.4,
                                                          compressed_camera=compressed))
            replay = OfflineReplay(rig, OfflineConfig(max_sets=sets))
            with BagSource(bag) as src:
                for sensor_set in replay.run(src):
                    result = pipeline.process(sensor_set, replay.odometry)
    except Exception as exc:  # an optimisation only: never a reason to fail configure
        return f"warm-up skipped ({type(exc).__name__}: {exc})", None
    finally:
        pipeline.reset()
    return "", result


def _without_debug(result: Any) -> Any:
    """The result without the data-level images and painted clouds, nor the feature-level
    inputs (megabytes per set that only overlays, depth images and evaluation use)."""
    data = replace(result.data_level, cameras={}, painted={}, point_index={})
    return replace(result, data_level=data, feature_inputs=None)


def _serve(conn: Any, params: dict[str, Any], keep_debug: bool) -> None:
    """The child: build the pipeline, then answer ``process`` / ``reset`` until ``stop``."""
    from mm_perception.ros.nodes.pipeline_config import pipeline_from_params
    from mm_perception.ros.nodes.set_input import load_live_rig

    try:
        rig = load_live_rig(params["rig_file"])
        pipeline = pipeline_from_params(rig, params)
        note, sample = warm_up(pipeline, rig, params)
    except Exception as exc:  # reported to configure, which fails with it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    if sample is not None and not keep_debug:
        sample = _without_debug(sample)
    freeze_heap()
    # the sample result makes the parent import the modules of every result type now, at
    # configure: unpickling the first real result would otherwise import them (the camera
    # detector's with cv2: 20 ms, in the first set's latency)
    conn.send(("ready", tuple(pipeline.lists), note, sample, gc.get_freeze_count()))
    odometry: OdometryBuffer | None = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the node went away
            return
        if msg[0] == "stop":
            return
        if msg[0] == "reset":
            pipeline.reset()
            odometry = None
            conn.send(("ok",))
            continue
        _, sensor_set, delta, odometry_config = msg
        try:
            if odometry is None or odometry.config != odometry_config:
                odometry = OdometryBuffer(odometry_config)
            odometry.apply_delta(delta)
            result = pipeline.process(sensor_set, odometry)
            conn.send(("result", result if keep_debug else _without_debug(result)))
        except Exception:  # one bad set: reported, the child keeps serving
            conn.send(("error", traceback.format_exc()))


class PipelineProcess:
    """A :class:`~mm_perception.fusion.pipeline.PerceptionPipeline` in a child process (see
    the module docstring), built from validated pipeline node parameters.

    Args:
        params: the pipeline node's parameters (``rig_file`` and the pipeline ones).
        keep_debug: return the data-level output (overlays, depth images) with each result.
        start_timeout_s: configure fails when the child is not ready by then, seconds.

    Raises:
        ConfigError: the child could not build the pipeline (its error), or did not start.
    """

    def __init__(self, params: Mapping[str, Any], keep_debug: bool = False,
                 start_timeout_s: float = 300.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, dict(params), keep_debug),
                                 name="mm_perception-pipeline", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        self._known: set[int] = set()
        try:
            msg = self._receive(start_timeout_s)
        except PipelineProcessError as exc:
            self.close()
            raise ConfigError(f"pipeline process did not start: {exc}") from exc
        if msg[0] != "ready":
            self.close()
            raise ConfigError(f"pipeline process: {msg[1]}")
        #: the object lists the pipeline produces for the rig
        self.lists: tuple[str, ...] = msg[1]
        #: why the warm-up was skipped ("" when it ran)
        self.warm_up_note: str = msg[2]
        #: objects the child froze after its warm-up (:func:`freeze_heap`)
        self.frozen_objects: int = msg[4]

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.is_alive()

    def _receive(self, timeout_s: float | None = None) -> Any:
        """The child's next message; raises when it dies or ``timeout_s`` passes first."""
        waited = 0.0
        while not self._conn.poll(0.2):
            waited += 0.2
            if not self._proc.is_alive():
                raise PipelineProcessError(f"the pipeline process exited with code "
                                           f"{self._proc.exitcode}")
            if timeout_s is not None and waited >= timeout_s:
                raise PipelineProcessError(f"no answer within {timeout_s} s")
        return self._conn.recv()

    def process(self, sensor_set: SensorSet, odometry: OdometryBuffer) -> Any:
        """:meth:`PerceptionPipeline.process` in the child (blocks, without the GIL).

        Raises:
            PipelineProcessError: the child failed on this set (with its traceback) or died.
        """
        delta = odometry.delta(self._known)
        with self._lock:
            self._conn.send(("process", sensor_set, delta, odometry.config))
            msg = self._receive()
        self._known = set(delta.stamps)
        if msg[0] == "error":
            raise PipelineProcessError(f"pipeline process failed on the set at "
                                       f"{sensor_set.stamp_ns}:\n{msg[1]}")
        return msg[1]

    def reset(self) -> None:
        """Forget all tracks and the odometry copy."""
        with self._lock:
            self._conn.send(("reset",))
            self._receive(60.0)
            self._known = set()

    def close(self) -> None:
        """Stop the child (asked, then terminated after 10 s) and release the pipe."""
        if self._proc.is_alive():
            try:
                with self._lock:
                    self._conn.send(("stop",))
            except (OSError, ValueError):
                pass
            self._proc.join(timeout=10.0)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=5.0)
        self._conn.close()


__all__ = ["PipelineProcess", "PipelineProcessError", "warm_up"]

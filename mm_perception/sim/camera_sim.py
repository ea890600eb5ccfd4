"""Simulated camera: RGB with the rig camera's exact intrinsics and lens distortion, plus
ground-truth depth and instance ids, rendered offscreen by MuJoCo.

How it works. MuJoCo renders ideal pinhole images only, so each frame is rendered as an
undistorted pinhole view from the same optical centre and orientation as the rig camera,
and then resampled into the rig camera's pixels with look-up maps computed once:

1. every rig pixel centre is unprojected through the rig :class:`CameraModel` (inverse
   distortion) to a normalized ray ``(x, y, 1)`` in the optical frame;
2. the render frustum spans the bounding box of those rays (an asymmetric OpenGL frustum,
   plus a 2-pixel margin); its focal lengths are the largest local pixel density of the rig
   camera (from the Jacobian of the unprojection), times ``supersample``, so the render is
   never coarser than the output anywhere in the image;
3. each output pixel reads the render at ``(fx_r x + cx_r, fy_r y + cy_r)``: bilinear for
   RGB (``cv2.remap``), nearest neighbour for depth and instance ids (no mixed ids or
   depths at edges).

Two renders per frame, both of what the CPU rasteriser must fill kept small:

- a lit RGB pass, whose depth buffer gives the depth. The world's sky box (one flat colour,
  as :class:`~mm_perception.sim.world.MujocoWorld` builds it) is not drawn: the pixels
  where nothing was drawn (depth buffer still cleared) get its colour, which is exactly
  what drawing it gives, without filling half the image a second time;
- when instance ids are wanted, a segmentation pass (per-geom id colours) of the *agents
  only*: a pixel is an agent's when that agent's surface there is the surface the lit pass
  kept (same depth-buffer value: the same triangles, rasterised the same way), i.e. when
  no static geometry hides it.

Outputs (:class:`CameraImages`):

- ``rgb``: ``(H, W, 3) uint8`` RGB; pixels outside the lens model's valid region are black;
- ``depth``: ``(H, W) float32`` metres along the optical ``z`` axis (not along the ray);
  NaN where nothing was hit (sky) or outside the valid lens region;
- ``instance``: ``(H, W) int32`` actor id (>= 1) of the surface seen; -1 for static
  geometry, ground, sky and invalid pixels.

Threads: every GL call of a camera runs on its own worker thread (OpenGL contexts are
per-thread), with its own copy of the world's actor poses taken when the frame is asked for.
:meth:`CameraSim.render_async` returns at once with a future, so the caller can cast LiDAR
rays and step the traffic while the frame renders (MuJoCo's render and read-back calls release
the GIL): the simulator resolves the frame at the end of its step. The images are the same
as a synchronous render's.

Frames: ``T_base_cam`` places the camera *optical* frame (z forward, x right, y down) in
``base_link``; MuJoCo's OpenGL camera looks along its -z with y up, i.e. its forward axis is
optical +z and its up axis is optical -y. The ego's own body is hidden from every camera
(its geom group is switched off), so a camera may sit inside the ego's box.
"""

from __future__ import annotations

import contextlib
import math
import os
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")  # offscreen CPU rendering; must precede mujoco

import cv2
import mujoco
import numpy as np
import numpy.typing as npt

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError
from mm_perception.core.geometry import SE3
from mm_perception.sim.world import (
    GROUP_AGENT,
    GROUP_EGO,
    STATIC_ID,
    MujocoWorld,
    WorldWorker,
)

F64 = npt.NDArray[np.float64]
def _gl_context(width: int, height: int) -> Any:
    """An offscreen GL context of the backend named by ``MUJOCO_GL`` (osmesa by default).

    Chosen here rather than by ``import mujoco``, which fixes its default backend at import
    time: a program that imported mujoco before this module set ``MUJOCO_GL`` would otherwise
    try GLFW (a display) on a headless machine.
    """
    backend = os.environ.get("MUJOCO_GL", "osmesa").lower().strip()
    try:
        if backend == "osmesa":
            from mujoco.osmesa import GLContext
        elif backend == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.rendering.classic.gl_context import (
                GLContext,
            )
        return GLContext(width, height)
    except Exception as exc:  # ImportError, RuntimeError, ctypes errors of the GL libraries
        raise RuntimeError(f"cannot create an offscreen OpenGL context with MUJOCO_GL="
                           f"{backend!r} ({exc}); on a headless Linux machine install "
                           f"libosmesa6 and set MUJOCO_GL=osmesa") from exc


#: render margin beyond the outermost rays, render pixels (bilinear needs a neighbour)
_MARGIN_PX = 2


@dataclass(frozen=True)
class CameraSimConfig:
    """Render settings of a :class:`CameraSim`.

    Attributes:
        supersample: render pixel density relative to the rig camera's densest region
            (>= 1; 2 = four times the pixels, smoother edges, slower).
        near_m / far_m: clipping planes, m; surfaces closer than ``near_m`` are not drawn
            and depth beyond ``far_m`` reads as sky.
        max_render_px: largest allowed render width or height, pixels.
        max_half_angle_deg: largest angle between a valid pixel's ray and the optical axis
            a single pinhole render can cover, degrees (< 90; fisheye lenses wider than
            this are rejected).
    """

    supersample: float = 1.0
    near_m: float = 0.05
    far_m: float = 1000.0
    max_render_px: int = 4096
    max_half_angle_deg: float = 80.0

    def __post_init__(self) -> None:
        for name in ("supersample", "near_m", "far_m", "max_half_angle_deg"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int | float) \
                    or not math.isfinite(val):
                raise ConfigError(f"CameraSimConfig.{name} must be a finite number, "
                                  f"got {val!r}")
        if self.supersample < 1.0:
            raise ConfigError(f"CameraSimConfig.supersample must be >= 1, "
                              f"got {self.supersample!r}")
        if self.near_m <= 0:
            raise ConfigError(f"CameraSimConfig.near_m must be > 0, got {self.near_m!r}")
        if self.far_m <= self.near_m:
            raise ConfigError(f"CameraSimConfig.far_m must be > near_m ({self.near_m}), "
                              f"got {self.far_m!r}")
        if isinstance(self.max_render_px, bool) or not isinstance(self.max_render_px, int) \
                or self.max_render_px < 16:
            raise ConfigError(f"CameraSimConfig.max_render_px must be an integer >= 16, "
                              f"got {self.max_render_px!r}")
        if not 0.0 < self.max_half_angle_deg < 89.0:
            raise ConfigError(f"CameraSimConfig.max_half_angle_deg must be in (0, 89), "
                              f"got {self.max_half_angle_deg!r}")


@dataclass(frozen=True)
class CameraImages:
    """One simulated camera frame (see the module docstring for the conventions).

    Attributes:
        rgb: ``(H, W, 3) uint8`` RGB.
        depth: ``(H, W) float32`` metres along optical z, NaN = no surface; None if disabled.
        instance: ``(H, W) int32`` actor id, -1 = static / ground / sky; None if disabled.
    """

    rgb: npt.NDArray[np.uint8]
    depth: npt.NDArray[np.float32] | None
    instance: npt.NDArray[np.int32] | None


class CameraSim:
    """Renders one rig camera in a :class:`MujocoWorld`.

    Args:
        world: the world (its current actor poses are rendered).
        camera: the rig camera (resolution, intrinsics, distortion).
        T_base_cam: pose of the camera optical frame in ``base_link``.
        depth / instance: also produce ground-truth depth / instance ids.
        config: render settings.

    Attributes:
        render_camera: the undistorted pinhole camera that MuJoCo renders (its ``width`` x
            ``height`` is the render size).
        valid: ``(H, W) bool`` rig pixels inside the lens model's valid region.

    Raises:
        ConfigError: the lens covers more than ``max_half_angle_deg`` or needs a render
            larger than ``max_render_px`` (the message gives the numbers).
    """

    def __init__(self, world: MujocoWorld, camera: CameraModel, T_base_cam: SE3, *,
                 depth: bool = True, instance: bool = True,
                 config: CameraSimConfig | None = None) -> None:
        self.world = world
        self.camera = camera
        self.T_base_cam = T_base_cam
        self.want_depth = bool(depth)
        self.want_instance = bool(instance)
        self.config = config if config is not None else CameraSimConfig()
        self._gl: Any = None
        self._ctx: mujoco.MjrContext | None = None
        self._plan_render()

        model = world.model
        if model.ngeom >= 0xFFFF:  # _render reads segmentation ids as 16 bits
            raise ConfigError(f"CameraSim supports worlds of < 65535 geoms, got {model.ngeom}")
        w, h = self.render_camera.width, self.render_camera.height
        # the offscreen framebuffer is sized from the model when a context is made
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), w)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), h)
        # the GL context is made, used and freed on this one thread (see the module docstring)
        self._worker: WorldWorker | None = WorldWorker(world, "camera_sim")
        try:
            self._worker.call(self._make_context, w, h)
        except BaseException:
            self._worker.close()
            self._worker = None
            raise
        self._rect = mujoco.MjrRect(0, 0, w, h)
        self._scene = mujoco.MjvScene(model, maxgeom=int(model.ngeom) + 100)
        self._option = mujoco.MjvOption()
        self._option.geomgroup[GROUP_EGO] = 0  # the ego never blocks its own cameras
        self._agents_option = mujoco.MjvOption()  # the segmentation pass draws agents only
        self._agents_option.geomgroup[:] = 0
        self._agents_option.geomgroup[GROUP_AGENT] = 1
        sky_rgb = _flat_sky_rgb(model)
        if sky_rgb is None:  # the sky is filled in, not drawn (module docstring)
            raise ConfigError("CameraSim needs a world with one sky box of one colour "
                              "(as MujocoWorld builds it)")
        self._sky_rgb = sky_rgb
        self._sky_img = np.full((h, w, 3), sky_rgb, dtype=np.uint8)  # the sky everywhere
        self._free_cam = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(model, self._free_cam)
        flags = self._scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0  # filled in after the render
        self._rgb_buf = np.empty((h, w, 3), dtype=np.uint8)
        self._seg_buf = np.empty((h, w, 3), dtype=np.uint8)
        self._depth_buf = np.empty((h, w), dtype=np.float32)
        self._agent_depth_buf = np.empty((h, w), dtype=np.float32)

    def _make_context(self, width: int, height: int) -> None:
        """(worker thread) The offscreen GL context and MuJoCo's render context."""
        self._gl = _gl_context(width, height)
        self._gl.make_current()
        self._ctx = mujoco.MjrContext(self.world.model,
                                      mujoco.mjtFontScale.mjFONTSCALE_100.value)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._ctx)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR

    # ------------------------------------------------------------------ geometry

    def _plan_render(self) -> None:
        """Choose the pinhole render frustum and the resampling maps (see module doc)."""
        cam, cfg = self.camera, self.config
        uu, vv = np.meshgrid(np.arange(cam.width, dtype=np.float64),
                             np.arange(cam.height, dtype=np.float64))
        rays = cam.unproject(np.stack([uu.ravel(), vv.ravel()], axis=1))
        x = rays[:, 0].reshape(cam.height, cam.width)
        y = rays[:, 1].reshape(cam.height, cam.width)
        valid = np.isfinite(x) & np.isfinite(y)
        if not np.any(valid):
            raise ConfigError("camera has no pixel inside its lens model's valid region")
        half_angle = np.degrees(np.arctan(np.hypot(x[valid], y[valid]).max()))
        if half_angle > cfg.max_half_angle_deg:
            raise ConfigError(
                f"camera field of view too wide for a pinhole render: a pixel sees "
                f"{half_angle:.1f} deg off-axis > max_half_angle_deg "
                f"{cfg.max_half_angle_deg} (distortion {cam.distortion_model} {cam.D})")

        # local density (rig pixels per normalized unit) from the unprojection's Jacobian
        with np.errstate(invalid="ignore", divide="ignore"):
            a: F64 = np.asarray(np.gradient(x, axis=1))  # dx/du
            b: F64 = np.asarray(np.gradient(x, axis=0))  # dx/dv
            c: F64 = np.asarray(np.gradient(y, axis=1))  # dy/du
            d: F64 = np.asarray(np.gradient(y, axis=0))  # dy/dv
            det = np.abs(a * d - b * c)
            dens_x = np.hypot(d, c) / det
            dens_y = np.hypot(b, a) / det
        fx_r = float(np.nanmax(np.where(valid, dens_x, np.nan))) * cfg.supersample
        fy_r = float(np.nanmax(np.where(valid, dens_y, np.nan))) * cfg.supersample
        if not (math.isfinite(fx_r) and math.isfinite(fy_r)):
            raise ConfigError("camera pixel density is not finite (degenerate lens model)")

        xl = float(x[valid].min()) - _MARGIN_PX / fx_r
        xr = float(x[valid].max()) + _MARGIN_PX / fx_r
        yt = float(y[valid].min()) - _MARGIN_PX / fy_r
        yb = float(y[valid].max()) + _MARGIN_PX / fy_r
        w = math.ceil((xr - xl) * fx_r)
        h = math.ceil((yb - yt) * fy_r)
        if max(w, h) > cfg.max_render_px:
            raise ConfigError(
                f"camera needs a {w}x{h} pinhole render to keep its pixel density "
                f"(> max_render_px {cfg.max_render_px}); distortion {cam.distortion_model} "
                f"{cam.D}, supersample {cfg.supersample}")
        # keep the densities exact; the frustum grows to a whole number of pixels
        self._x_range = (xl, xl + w / fx_r)
        self._y_range = (yt, yt + h / fy_r)
        self.render_camera = CameraModel(w, h, fx_r, fy_r, -xl * fx_r - 0.5, -yt * fy_r - 0.5)
        self.valid = valid

        # maps into the render buffer, whose rows MuJoCo returns bottom-up
        rc = self.render_camera
        mu = np.where(valid, rc.fx * x + rc.cx, -10.0)
        mv = np.where(valid, (h - 1) - (rc.fy * y + rc.cy), -10.0)
        self._maps = cv2.convertMaps(mu.astype(np.float32), mv.astype(np.float32),
                                     cv2.CV_16SC2)
        iu = np.clip(np.rint(mu), 0, w - 1).astype(np.int64)
        iv = np.clip(np.rint(mv), 0, h - 1).astype(np.int64)
        self._nn_index = np.where(valid, iv * w + iu, 0).ravel()
        self._invalid_flat = ~valid.ravel()
        self._any_invalid = bool(self._invalid_flat.any())

    # ------------------------------------------------------------------ rendering

    def _set_camera(self, T_world_cam: SE3) -> None:
        rot = T_world_cam.rotation
        pos = T_world_cam.translation
        forward = rot[:, 2]  # optical z
        up = -rot[:, 1]  # optical -y
        n = self.config.near_m
        xl, xr = self._x_range
        yt, yb = self._y_range
        for i in range(2):  # mono rendering averages the two (stereo) scene cameras
            gl_cam = self._scene.camera[i]
            gl_cam.pos[:] = pos
            gl_cam.forward[:] = forward
            gl_cam.up[:] = up
            gl_cam.frustum_near = n
            gl_cam.frustum_far = self.config.far_m
            gl_cam.frustum_center = n * 0.5 * (xl + xr)
            gl_cam.frustum_width = n * 0.5 * (xr - xl)  # half width; 0 = from aspect
            gl_cam.frustum_top = -n * yt
            gl_cam.frustum_bottom = -n * yb
            gl_cam.orthographic = 0

    def render(self, T_world_base: SE3) -> CameraImages:
        """Render the world as seen from the camera on an ego at ``T_world_base``.

        Returns:
            :class:`CameraImages` at the rig camera's resolution (depth / instance None
            when disabled).
        """
        return self.render_async(T_world_base).result()

    def render_async(self, T_world_base: SE3) -> Future[CameraImages]:
        """:meth:`render` on the camera's thread: the world's actor poses are copied now,
        so the caller may move the world on while the frame renders.

        Returns:
            a future of the :class:`CameraImages` (frames are rendered in the order asked).

        Raises:
            RuntimeError: the camera is closed.
        """
        if self._worker is None or self._ctx is None:
            raise RuntimeError("CameraSim is closed")
        return self._worker.submit(self._render, T_world_base)

    def _render(self, data: mujoco.MjData, T_world_base: SE3) -> CameraImages:
        """(worker thread) One frame of the actors in ``data``."""
        assert self._ctx is not None and self._gl is not None
        world = self.world
        self._gl.make_current()
        T_world_cam = T_world_base @ self.T_base_cam
        mujoco.mjv_updateScene(world.model, data, self._option, None, self._free_cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
        self._set_camera(T_world_cam)
        mujoco.mjr_render(self._rect, self._scene, self._ctx)
        mujoco.mjr_readPixels(self._rgb_buf, self._depth_buf, self._rect, self._ctx)
        # ZEROFAR depth map: the buffer is cleared to 0 and every drawn surface is > 0
        sky = self._depth_buf == 0.0
        # cv2's masked copy from a constant sky image: ~30x faster than boolean indexing,
        # and it holds the GIL for far less time (the main thread is casting rays)
        cv2.copyTo(self._sky_img, sky.view(np.uint8), self._rgb_buf)
        rgb = cv2.remap(self._rgb_buf, self._maps[0], self._maps[1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        if self._any_invalid:
            rgb[~self.valid] = 0
        idx = self._nn_index
        shape = (self.camera.height, self.camera.width)
        # the lit pass's depth-buffer value of each rig pixel: the depth, and what an
        # agent's surface must equal to be the one seen
        raw = np.take(self._depth_buf.reshape(-1), idx) \
            if self.want_depth or self.want_instance else None

        depth = None
        if self.want_depth:
            assert raw is not None
            depth = self._linear_depth(raw)
            depth[np.take(sky.reshape(-1), idx) | self._invalid_flat
                  | (depth >= self.config.far_m * 0.999)] = np.nan
            depth = depth.reshape(shape)
        instance = None
        if self.want_instance:
            assert raw is not None
            instance = self._render_instance(data, T_world_cam, raw)
        return CameraImages(np.ascontiguousarray(rgb), depth, instance)

    def _render_instance(self, data: mujoco.MjData, T_world_cam: SE3,
                         lit_raw: npt.NDArray[np.float32]) -> npt.NDArray[np.int32]:
        """(worker thread, after the lit pass) ``(H, W) int32`` actor ids: a segmentation
        pass of the agents only, kept where its depth is the lit pass's ``lit_raw`` (the
        depth-buffer value of each rig pixel, ``(H * W,)``): no static geometry in front."""
        mujoco.mjv_updateScene(self.world.model, data, self._agents_option, None,
                               self._free_cam, mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
        self._set_camera(T_world_cam)
        flags = self._scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_render(self._rect, self._scene, self._ctx)
            mujoco.mjr_readPixels(self._seg_buf, self._agent_depth_buf, self._rect, self._ctx)
        finally:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0

        idx = self._nn_index
        # id colour = segid + 1 (0 = background) as r | g << 8 | b << 16; the model has fewer
        # than 65535 geoms (checked in __init__), so b is 0 and each pixel's (r, g) bytes
        # read as one little-endian uint16, with a stride of 3 bytes (no copy)
        seg16 = np.ndarray((self._seg_buf.size // 3,), dtype="<u2", buffer=self._seg_buf,
                           strides=(3,))
        segid = np.take(seg16, idx)
        lut = self._segid_lut()
        actor = np.take(lut, np.minimum(segid, lut.shape[0] - 1))
        # the agent's surface is the one the lit pass kept: the same triangles rasterised
        # the same way give the same depth-buffer value (ZEROFAR: larger = nearer)
        shown = np.take(self._agent_depth_buf.reshape(-1), idx) >= lit_raw
        keep = (segid != 0) & shown & (actor != _NO_GEOM) & ~self._invalid_flat
        inst = np.where(keep, actor, STATIC_ID).astype(np.int32)
        return inst.reshape(self.camera.height, self.camera.width)

    def _segid_lut(self) -> npt.NDArray[np.int64]:
        """segmentation id (id colour, 0 = background) -> actor id (``_NO_GEOM`` if none)."""
        scene = self._scene
        n = int(scene.ngeom)
        lut = np.full(n + 2, _NO_GEOM, dtype=np.int64)
        geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        actors = self.world.geom_actor
        for i in range(n):
            g = scene.geoms[i]
            if g.segid >= 0 and g.objtype == geom_type and 0 <= g.objid < actors.shape[0]:
                lut[g.segid + 1] = actors[g.objid]
        return lut

    def _linear_depth(self, raw: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Reversed-z depth buffer values -> metres along optical z (as MuJoCo's Renderer,
        with this camera's own near / far planes)."""
        zfar = np.float32(self.config.far_m)
        znear = np.float32(self.config.near_m)
        c_coef = -(zfar + znear) / (zfar - znear)
        d_coef = -(np.float32(2) * zfar * znear) / (zfar - znear)
        c_coef = np.float32(-0.5) * c_coef - np.float32(0.5)
        d_coef = np.float32(-0.5) * d_coef
        # float64 for the division: near the far plane raw + c is a small difference
        out = raw.astype(np.float64)
        out += float(c_coef)
        with np.errstate(divide="ignore"):
            np.divide(float(d_coef), out, out=out)
        return out.astype(np.float32)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Free the GL context and stop the camera's thread (idempotent; waits for frames
        still rendering)."""
        worker = getattr(self, "_worker", None)  # a constructor that failed early has none
        if worker is None:
            return
        self._worker = None
        try:
            worker.call(self._free_context)
        finally:
            worker.close()

    def _free_context(self) -> None:
        """(worker thread) Free MuJoCo's render context and the GL context."""
        if self._ctx is not None and self._gl is not None:
            self._gl.make_current()
            self._ctx.free()
        self._ctx = None
        if self._gl is not None:
            self._gl.free()
        self._gl = None

    def __enter__(self) -> CameraSim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        # GL resources must be freed while the interpreter is alive; callers should close()
        with contextlib.suppress(Exception):
            self.close()


#: LUT value of segmentation ids that are not geoms of the world
_NO_GEOM = -(1 << 40)


def _flat_sky_rgb(model: mujoco.MjModel) -> npt.NDArray[np.uint8] | None:
    """The one colour of the model's sky box as drawn (its texels; the sky box is drawn
    unlit), or None when there is no sky box or it is not a single colour."""
    sky = np.flatnonzero(model.tex_type == int(mujoco.mjtTexture.mjTEXTURE_SKYBOX))
    if sky.size != 1:
        return None
    t = int(sky[0])
    nch = int(model.tex_nchannel[t])
    n = int(model.tex_width[t]) * int(model.tex_height[t]) * nch
    texels = model.tex_data[int(model.tex_adr[t]):int(model.tex_adr[t]) + n].reshape(-1, nch)
    if nch < 3 or not np.all(texels == texels[0]):
        return None
    return np.array(texels[0, :3], dtype=np.uint8)

__all__ = ["CameraImages", "CameraSim", "CameraSimConfig"]

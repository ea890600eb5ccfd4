"""``sensor_msgs/CameraInfo`` <-> :class:`~mm_perception.core.camera.CameraModel`.

Duck-typed: works with rclpy message objects and with ``rosbags`` message objects (both have
``width, height, distortion_model, d, k, r, p, binning_x, binning_y, roi``), so this module
imports no ROS package.

Reading (:func:`camera_model_from_camera_info`) follows ``image_geometry``: the model
describes the image as published (the raw, unrectified image), so the region of interest is
applied first and then binning (``cx' = (cx - roi.x_offset) / binning_x``,
``fx' = fx / binning_x``; binning 0 means 1; an all-zero ROI means the full image). ``R`` and
``P`` only matter for rectified images and are not used. Distortion models:

==========================  ======================================  ===================
``distortion_model``        ``d``                                   CameraModel model
==========================  ======================================  ===================
``plumb_bob``               5 values; 0 values or all zero          ``plumb_bob``;
                                                                    ``none``
``rational_polynomial``     8 values with ``k4 = k5 = k6 = 0``      ``plumb_bob`` (exact)
                            (otherwise: unsupported, error)
``equidistant``             4 values (0 values: all zero)           ``equidistant``
``""`` / ``none``           empty or all zero                       ``none``
==========================  ======================================  ===================

Writing (:func:`camera_info_from_model`) emits ``plumb_bob`` with five zeros for a
``none`` model (what ``camera_calibration`` writes for an undistorted camera), identity
``R``, ``P = [K | 0]``, no binning and an all-zero ROI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mm_perception.core.camera import CameraModel
from mm_perception.core.errors import ConfigError, ConversionError

#: ``factory(typename, **fields)`` builds a message of the given ROS 2 type name
MessageFactory = Callable[..., Any]


def _floats(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"CameraInfo.{name} is not a numeric array: {value!r}") from exc
    if not np.all(np.isfinite(arr)):
        raise ConversionError(f"CameraInfo.{name} contains NaN or Inf: {arr.tolist()}")
    return arr


def _map_distortion(model: str, d: np.ndarray) -> tuple[str, tuple[float, ...]]:
    coeffs = tuple(float(c) for c in d)
    all_zero = not np.any(d)
    if model in ("", "none"):
        if not all_zero:
            raise ConversionError(f"CameraInfo.distortion_model is {model!r} but d is not all "
                                  f"zero: {list(coeffs)}")
        return "none", ()
    if model == "plumb_bob":
        if all_zero:
            return "none", ()
        if len(coeffs) != 5:
            raise ConversionError(f"CameraInfo.d: plumb_bob needs 5 coefficients "
                                  f"(k1, k2, p1, p2, k3), got {len(coeffs)}: {list(coeffs)}")
        return "plumb_bob", coeffs
    if model == "rational_polynomial":
        if all_zero:
            return "none", ()
        if len(coeffs) == 8 and not np.any(d[5:]):
            # k4 = k5 = k6 = 0: the rational model reduces exactly to plumb_bob
            return "plumb_bob", coeffs[:5]
        raise ConversionError(f"CameraInfo.distortion_model 'rational_polynomial' with "
                              f"d={list(coeffs)} is unsupported (only k4 = k5 = k6 = 0, which "
                              f"equals plumb_bob); supported: plumb_bob, equidistant, none")
    if model == "equidistant":
        if len(coeffs) == 0:
            return "equidistant", (0.0, 0.0, 0.0, 0.0)
        if len(coeffs) != 4:
            raise ConversionError(f"CameraInfo.d: equidistant needs 4 coefficients "
                                  f"(k1, k2, k3, k4), got {len(coeffs)}: {list(coeffs)}")
        return "equidistant", coeffs
    raise ConversionError(f"CameraInfo.distortion_model {model!r} is unsupported; supported: "
                          f"plumb_bob, equidistant, rational_polynomial (k4..k6 = 0), '' / none")


def camera_model_from_camera_info(msg: Any) -> CameraModel:
    """Build a :class:`CameraModel` for the image a ``CameraInfo`` describes.

    Args:
        msg: a ``sensor_msgs/msg/CameraInfo`` (rclpy or rosbags object, or anything with the
            same attributes; ``binning_x``, ``binning_y`` and ``roi`` may be absent).

    Returns:
        The camera model of the published (unrectified) image.

    Raises:
        ConversionError: uncalibrated camera (all-zero ``K``), ``K`` with skew or a bad last
            row, non-finite values, unsupported distortion model / coefficient count, bad ROI
            or binning. The message names the field and value.
    """
    try:
        width, height = int(msg.width), int(msg.height)
        model_name = str(msg.distortion_model).strip()
        # ROS 2 names the arrays k/d; ROS 1 (a ROS 1 bag read through rosbags) K/D
        k_raw = msg.k if hasattr(msg, "k") else msg.K
        d_raw = msg.d if hasattr(msg, "d") else msg.D
    except AttributeError as exc:
        raise ConversionError(f"not a CameraInfo message ({type(msg).__name__}): {exc}") from exc
    k = _floats(k_raw, "k")
    if k.shape != (9,):
        raise ConversionError(f"CameraInfo.k must have 9 values, got {k.size}: {k.tolist()}")
    if not np.any(k):
        raise ConversionError("CameraInfo.k is all zero: the camera is not calibrated")
    K = k.reshape(3, 3)
    if K[0, 1] != 0.0:
        raise ConversionError(f"CameraInfo.k has skew K[0,1]={K[0, 1]!r}; only zero skew is "
                              f"supported")
    if K[1, 0] != 0.0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise ConversionError(f"CameraInfo.k is not an intrinsic matrix "
                              f"[[fx,0,cx],[0,fy,cy],[0,0,1]]: {k.tolist()}")
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    distortion_model, coeffs = _map_distortion(model_name, _floats(d_raw, "d"))

    # image_geometry: ROI (full-resolution pixels) first, then binning.
    bx = int(getattr(msg, "binning_x", 0) or 0) or 1
    by = int(getattr(msg, "binning_y", 0) or 0) or 1
    if bx < 1 or by < 1:
        raise ConversionError(f"CameraInfo.binning must be >= 0, got ({bx}, {by})")
    roi = getattr(msg, "roi", None)
    x_off = y_off = 0
    if roi is not None:
        x_off, y_off = int(roi.x_offset), int(roi.y_offset)
        roi_w, roi_h = int(roi.width), int(roi.height)
        if roi_w == 0 and roi_h == 0 and x_off == 0 and y_off == 0:
            pass  # all-zero ROI: full image
        elif roi_w <= 0 or roi_h <= 0 or x_off + roi_w > width or y_off + roi_h > height:
            raise ConversionError(f"CameraInfo.roi (x_offset={x_off}, y_offset={y_off}, "
                                  f"width={roi_w}, height={roi_h}) does not fit the "
                                  f"{width}x{height} calibration")
        else:
            width, height = roi_w, roi_h
    if width % bx or height % by:
        raise ConversionError(f"CameraInfo binning ({bx}, {by}) does not divide the image "
                              f"size {width}x{height}")
    try:
        return CameraModel(width // bx, height // by, fx / bx, fy / by, (cx - x_off) / bx,
                           (cy - y_off) / by, distortion_model, coeffs)
    except ConfigError as exc:
        raise ConversionError(f"invalid CameraInfo: {exc}") from exc


def camera_info_from_model(model: CameraModel, stamp_ns: int, frame_id: str,
                           factory: MessageFactory) -> Any:
    """Build a ``sensor_msgs/msg/CameraInfo`` for ``model``.

    Args:
        model: the camera.
        stamp_ns: header stamp, int nanoseconds (>= 0).
        frame_id: the camera's optical frame.
        factory: ``factory(typename, **fields)`` -> message; called with every field of
            ``builtin_interfaces/msg/Time``, ``std_msgs/msg/Header``,
            ``sensor_msgs/msg/RegionOfInterest`` and ``sensor_msgs/msg/CameraInfo``. The array
            fields ``d``, ``k``, ``r``, ``p`` are float64 numpy arrays (what rosbags wants; an
            rclpy-based factory must turn ``d`` into a list or ``array.array('d')``).

    Returns:
        Whatever ``factory`` returns for the CameraInfo.
    """
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, int | np.integer) or stamp_ns < 0:
        raise ConversionError(f"stamp_ns must be a non-negative int (ns), got {stamp_ns!r}")
    stamp_ns = int(stamp_ns)
    if model.distortion_model == "none":
        name, d = "plumb_bob", np.zeros(5)
    else:
        name, d = model.distortion_model, np.asarray(model.D, dtype=np.float64)
    K = model.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    stamp = factory("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000,
                    nanosec=stamp_ns % 1_000_000_000)
    header = factory("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)
    roi = factory("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0,
                  width=0, do_rectify=False)
    return factory("sensor_msgs/msg/CameraInfo", header=header, height=model.height,
                   width=model.width, distortion_model=name, d=d, k=K.reshape(-1).copy(),
                   r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)


__all__ = ["MessageFactory", "camera_info_from_model", "camera_model_from_camera_info"]

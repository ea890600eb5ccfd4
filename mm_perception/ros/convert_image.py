"""``sensor_msgs/Image`` and ``CompressedImage`` <-> numpy arrays and ``CameraFrame``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from mm_perception.core.errors import ConversionError
from mm_perception.core.types import IMAGE_ENCODINGS, CameraFrame
from mm_perception.ros.message_factory import (
    MessageFactory,
    as_uint,
    byte_buffer,
    header,
    stamp_to_ns,
)

if TYPE_CHECKING:
    from mm_perception.core.camera import CameraModel

# --------------------------------------------------------------------------------------
# Image / CompressedImage
# --------------------------------------------------------------------------------------

#: encodings read as another name (cv_bridge treats nC3 / nC4 as BGR / BGRA)
IMAGE_ENCODING_ALIASES: Mapping[str, str] = MappingProxyType({
    "8UC1": "mono8", "8UC3": "bgr8", "8UC4": "bgra8",
})


def _canonical_encoding(encoding: str) -> str:
    enc = IMAGE_ENCODING_ALIASES.get(encoding, encoding)
    if enc not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}; supported: "
                              f"{sorted([*IMAGE_ENCODINGS, *IMAGE_ENCODING_ALIASES])}")
    return enc


def image_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """``sensor_msgs/Image`` -> (image, encoding).

    Returns:
        ``(H, W, C)`` (colour) or ``(H, W)`` (mono / depth) C-contiguous array owning its
        memory, native byte order, dtype per :data:`~mm_perception.core.types.IMAGE_ENCODINGS`;
        and the encoding (aliases ``8UC1``/``8UC3``/``8UC4`` become ``mono8``/``bgr8``/
        ``bgra8``).

    Raises:
        ConversionError: unknown encoding (named, with the supported list), ``step`` smaller
            than ``width * bytes_per_pixel``, or data size not ``step * height``.
    """
    encoding = _canonical_encoding(str(msg.encoding))
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height = as_uint(msg.height, "height", "Image")
    width = as_uint(msg.width, "width", "Image")
    step = as_uint(msg.step, "step", "Image")
    pixel = dtype.itemsize * channels
    if step < width * pixel:
        raise ConversionError(f"Image step = {step} is smaller than width*bytes_per_pixel "
                              f"= {width}*{pixel} = {width * pixel} ({encoding})")
    buf = byte_buffer(msg.data, "Image")
    if buf.size != step * height:
        raise ConversionError(f"Image data has {buf.size} bytes but step*height = "
                              f"{step}*{height} = {step * height} ({encoding} {width}x{height})")
    src_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<") \
        if dtype.itemsize > 1 else dtype
    shape: tuple[int, ...] = (height, width, channels)
    strides: tuple[int, ...] = (step, pixel, dtype.itemsize)
    if height * width == 0:
        view = np.empty(shape, dtype=src_dtype)
    else:
        view = np.ndarray(shape, dtype=src_dtype, buffer=buf, strides=strides)
    if channels == 1:
        view = view[:, :, 0]
    return np.array(view, dtype=dtype.newbyteorder("="), order="C", copy=True), encoding


def _check_image_array(arr: np.ndarray, encoding: str) -> tuple[str, np.dtype[Any], int]:
    enc = _canonical_encoding(encoding)
    dtype, channels = IMAGE_ENCODINGS[enc]
    if not isinstance(arr, np.ndarray):
        raise ConversionError(f"image must be a numpy array, got {type(arr).__name__}")
    if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
        raise ConversionError(f"image dtype {arr.dtype} does not match encoding "
                              f"{encoding!r} ({dtype})")
    ok = (arr.ndim == 2 and channels == 1) or (arr.ndim == 3 and arr.shape[2] == channels)
    if not ok:
        raise ConversionError(f"image shape {arr.shape} does not match encoding {encoding!r} "
                              f"({channels} channel(s): "
                              f"{'(H, W)' if channels == 1 else f'(H, W, {channels})'})")
    return enc, dtype, channels


def array_to_image(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                   factory: MessageFactory) -> Any:
    """Image array -> ``sensor_msgs/msg/Image`` (little-endian, no row padding).

    Args:
        arr: ``(H, W)`` or ``(H, W, C)`` with the dtype of ``encoding`` (no implicit cast).
        encoding: one of :data:`IMAGE_ENCODINGS` (or an alias), written as given.

    Raises:
        ConversionError: unknown encoding, or dtype / shape not matching it.
    """
    _, dtype, channels = _check_image_array(arr, encoding)
    height, width = int(arr.shape[0]), int(arr.shape[1])
    data = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<"))
    return factory(
        "sensor_msgs/msg/Image",
        header=header(stamp_ns, frame_id, factory),
        height=height,
        width=width,
        encoding=str(encoding),
        is_bigendian=0,
        step=width * dtype.itemsize * channels,
        data=data.reshape(-1).view(np.uint8),
    )


def _compressed_codec(fmt: str) -> str:
    """Codec (``jpeg`` / ``png``) of a CompressedImage ``format`` string.

    Accepts ``"jpeg"``, ``"png"`` and image_transport's ``"<enc>; jpeg compressed <enc>"``.
    """
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        raise ConversionError(f"CompressedImage format {fmt!r} (compressedDepth) is not "
                              f"supported; supported: jpeg, png")
    if ";" in text:
        text = text.split(";", 1)[1].strip()
    codec = text.split()[0] if text else ""
    codec = {"jpg": "jpeg"}.get(codec, codec)
    if codec not in ("jpeg", "png"):
        raise ConversionError(f"CompressedImage format {fmt!r} is not supported; supported: "
                              f"'jpeg', 'png' or '<encoding>; jpeg|png compressed <encoding>'")
    return codec


def compressed_to_array(msg: Any) -> tuple[np.ndarray, str]:
    """``sensor_msgs/CompressedImage`` (jpeg / png) -> (image, encoding).

    Returns:
        Colour as ``(H, W, 3)`` uint8 ``rgb8`` (``(H, W, 4)`` ``rgba8`` for a png with
        alpha), grey as ``(H, W)`` ``mono8``, 16-bit grey png as ``(H, W)`` ``mono16``.

    Raises:
        ConversionError: unsupported format, empty or corrupt data, or a decoded layout
            with no matching encoding (e.g. 16-bit colour).
    """
    import cv2

    fmt = str(msg.format)
    codec = _compressed_codec(fmt)
    buf = byte_buffer(msg.data, "CompressedImage")
    if buf.size == 0:
        raise ConversionError(f"CompressedImage ({fmt!r}) has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ConversionError(f"CompressedImage data ({buf.size} bytes, format {fmt!r}) "
                              f"could not be decoded as {codec}: corrupt or wrong format")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2 and img.dtype == np.uint8:
        return np.ascontiguousarray(img), "mono8"
    if img.ndim == 2 and img.dtype == np.uint16:
        return np.ascontiguousarray(img), "mono16"
    if img.ndim == 3 and img.dtype == np.uint8 and img.shape[2] == 3:
        return np.ascontiguousarray(img[:, :, ::-1]), "rgb8"
    if img.ndim == 3 and img.dtype == np.uint8 and img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, [2, 1, 0, 3]]), "rgba8"
    raise ConversionError(f"CompressedImage ({fmt!r}) decoded to shape {img.shape} dtype "
                          f"{img.dtype}, which has no supported encoding")


def array_to_compressed(arr: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                        factory: MessageFactory, fmt: str = "jpeg",
                        jpeg_quality: int = 90) -> Any:
    """Image array -> ``sensor_msgs/msg/CompressedImage`` (format as image_transport writes).

    Args:
        arr: image matching ``encoding`` (rgb8, bgr8, mono8; rgba8, bgra8, mono16, 16UC1
            only with png).
        fmt: ``"jpeg"`` or ``"png"``.
        jpeg_quality: 0..100.

    Raises:
        ConversionError: bad fmt / quality, an encoding the codec cannot store (alpha or
            16-bit in jpeg, 32FC1), or dtype / shape not matching ``encoding``.
    """
    import cv2

    if fmt not in ("jpeg", "png"):
        raise ConversionError(f"compressed fmt must be 'jpeg' or 'png', got {fmt!r}")
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) \
            or not 0 <= jpeg_quality <= 100:
        raise ConversionError(f"jpeg_quality must be an int in [0, 100], got {jpeg_quality!r}")
    enc, _, _ = _check_image_array(arr, encoding)
    to_cv: dict[str, tuple[Any, str]] = {
        "rgb8": (lambda a: a[:, :, ::-1], "bgr8"),
        "bgr8": (lambda a: a, "bgr8"),
        "mono8": (lambda a: a, "mono8"),
        "rgba8": (lambda a: a[:, :, [2, 1, 0, 3]], "bgra8"),
        "bgra8": (lambda a: a, "bgra8"),
        "mono16": (lambda a: a, "mono16"),
        "16UC1": (lambda a: a, "mono16"),
    }
    if enc not in to_cv or (fmt == "jpeg" and enc in ("rgba8", "bgra8", "mono16", "16UC1")):
        raise ConversionError(f"encoding {encoding!r} cannot be stored as {fmt}")
    convert, target = to_cv[enc]
    image = np.ascontiguousarray(convert(arr))
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode a {image.shape} {image.dtype} image "
                              f"as {fmt}")
    return factory(
        "sensor_msgs/msg/CompressedImage",
        header=header(stamp_ns, frame_id, factory),
        format=f"{encoding}; {fmt} compressed {target}",
        data=np.asarray(encoded, dtype=np.uint8).reshape(-1),
    )


def camera_frame_from_msg(msg: Any, sensor: str,
                          camera: CameraModel | None = None) -> CameraFrame:
    """``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> :class:`CameraFrame`.

    The two are told apart by their fields (``format`` vs ``encoding``).

    Raises:
        ConversionError: neither kind of message, or the errors of :func:`image_to_array` /
            :func:`compressed_to_array`.
    """
    if hasattr(msg, "format"):
        image, encoding = compressed_to_array(msg)
    elif hasattr(msg, "encoding"):
        image, encoding = image_to_array(msg)
    else:
        raise ConversionError(f"{type(msg).__name__} is neither an Image (encoding) nor a "
                              f"CompressedImage (format)")
    return CameraFrame(sensor=sensor, stamp_ns=stamp_to_ns(msg.header.stamp),
                       frame_id=str(msg.header.frame_id), image=image, encoding=encoding,
                       camera=camera)

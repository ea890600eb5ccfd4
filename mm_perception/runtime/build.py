"""Build TensorRT engines ahead of time: :func:`build_engine` and ``mm-perception build-engine``.

On a Jetson an engine build takes minutes; doing it at install / deploy time (into the same
engine cache the nodes use) means a node never builds at its first frame. The input specs
come from the ONNX file itself. ``tensorrt`` is imported only when a build runs.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from mm_perception.core.errors import ConfigError
from mm_perception.runtime.config import DEFAULT_ENGINE_CACHE_DIR, PRECISIONS, RuntimeConfig

Feeds = Mapping[str, npt.NDArray[np.generic]]


def build_engine(onnx_path: str | Path, config: RuntimeConfig, *,
                 calibration: Iterable[Feeds] | None = None,
                 calibration_id: str = "") -> Path:
    """Build (or find in the cache) the engine of ``onnx_path`` for ``config``; its path.

    ``config.backend`` must be ``"tensorrt"``; the model's inputs/outputs are read from the
    file. Raises what :class:`~mm_perception.runtime.tensorrt_backend.TensorRTBackend`
    raises (BackendUnavailableError without TensorRT or CUDA, EngineBuildError...).
    """
    if config.backend != "tensorrt":
        raise ConfigError(f"build_engine: RuntimeConfig.backend is {config.backend!r}; engines "
                          "are built for 'tensorrt'")
    # tensorrt first: without it the clear "not installed" error beats any file error
    from mm_perception.runtime.tensorrt_backend import TensorRTBackend, import_tensorrt

    import_tensorrt()
    from mm_perception.runtime.onnx_model import onnx_specs

    inputs, outputs = onnx_specs(onnx_path)
    backend = TensorRTBackend(onnx_path, inputs, outputs, config, calibration=calibration,
                              calibration_id=calibration_id)
    backend.close()
    return backend.engine_path


def parse_profile(items: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """``["P=0,1000,30000", ...]`` -> ``{"P": (0, 1000, 30000)}`` (ConfigError if malformed)."""
    profile: dict[str, tuple[int, int, int]] = {}
    for item in items:
        name, sep, sizes = item.partition("=")
        try:
            values = tuple(int(v) for v in sizes.split(","))
        except ValueError:
            values = ()
        if not sep or not name or len(values) != 3:
            raise ConfigError(f"--profile {item!r}: expected NAME=MIN,OPT,MAX (ints)")
        profile[name] = (values[0], values[1], values[2])
    return profile


def npz_calibration(folder: str | Path) -> tuple[list[Path], str]:
    """The ``*.npz`` files of ``folder`` (one feed dict each, sorted) and an id of their bytes
    (for the engine cache key: other calibration data -> another engine)."""
    files = sorted(Path(folder).glob("*.npz"))
    if not files:
        raise ConfigError(f"--calibration {str(folder)!r}: no .npz files in that folder")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return files, digest.hexdigest()


def _iter_npz(files: list[Path]) -> Iterator[Feeds]:
    for f in files:  # lazily: a calibration set may not fit in memory at once
        with np.load(f) as data:
            yield {k: data[k] for k in data.files}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``build-engine`` sub-command's arguments."""
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--cache-dir", default=DEFAULT_ENGINE_CACHE_DIR,
                        help="engine cache folder (default: %(default)s)")
    parser.add_argument("--profile", action="append", default=[], metavar="NAME=MIN,OPT,MAX",
                        help="sizes of a dynamic dim (repeat for each dynamic dim)")
    parser.add_argument("--dla-core", type=int, help="build for this Jetson DLA core")
    parser.add_argument("--workspace-mb", type=int, default=1024)
    parser.add_argument("--calibration", metavar="NPZ_DIR",
                        help="int8: folder of .npz files, one input dict each")


def run(args: argparse.Namespace) -> int:
    """Build the engine and print its path; returns the exit status."""
    config = RuntimeConfig(backend="tensorrt", device="cuda", precision=args.precision,
                           dla_core=args.dla_core, engine_cache_dir=args.cache_dir,
                           workspace_mb=args.workspace_mb, profile=parse_profile(args.profile))
    calibration: Iterable[Feeds] | None = None
    calibration_id = ""
    if args.calibration:
        files, calibration_id = npz_calibration(args.calibration)
        calibration = _iter_npz(files)
    print(build_engine(args.model, config, calibration=calibration,
                       calibration_id=calibration_id))
    return 0

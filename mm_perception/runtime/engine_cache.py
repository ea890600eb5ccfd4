"""On-disk cache of built TensorRT engines, keyed by everything that makes an engine valid.

An engine is only valid for the exact ONNX bytes, TensorRT version, GPU, precision, DLA
core and input profile shapes it was built with, so the key is the sha256 of those fields
(:class:`EngineKey`). An engine lives at ``<dir>/<stem>-<digest[:16]>.engine`` next to a
JSON sidecar ``....engine.json`` holding the key fields. Building takes minutes on a
Jetson, so a good cached engine is always reused; a corrupt or unreadable engine, or a
sidecar whose fields differ from the key (a digest-prefix collision, a hand-copied file)
is logged at WARNING and rebuilt. Files are written atomically (temp file + rename), so a
crash mid-write never leaves a truncated engine under the final name.

The cache knows nothing about TensorRT: :meth:`EngineCache.get_or_build` takes ``build``
(returns engine bytes) and ``load`` (bytes -> engine, raises when the bytes are bad), so
its logic is tested without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mm_perception.core.errors import ConfigError, EngineBuildError

LOG = logging.getLogger(__name__)
T = TypeVar("T")
#: bumped when the key's fields or their meaning change (old files then simply miss)
KEY_SCHEMA = 1


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: one input's optimisation profile: (name, min shape, opt shape, max shape)
ProfileShapes = tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]


@dataclass(frozen=True)
class EngineKey:
    """Everything a built engine depends on.

    Attributes:
        onnx_sha256: sha256 of the ONNX file bytes (external-data files are not hashed:
            the stack's models are single files).
        tensorrt_version: ``tensorrt.__version__``.
        gpu_name: CUDA device name (``torch.cuda.get_device_name()``).
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        dla_core: DLA core or None.
        profile_shapes: per input, sorted by name: (name, min, opt, max) shapes.
        calibration_id: free text identifying the int8 calibration set (empty otherwise);
            an engine calibrated on other data is a different engine.
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str
    dla_core: int | None
    profile_shapes: ProfileShapes
    calibration_id: str = ""

    def fields(self) -> dict[str, Any]:
        """JSON-ready key fields (what the sidecar stores)."""
        data = asdict(self)
        data["profile_shapes"] = [[n, list(a), list(b), list(c)]
                                  for n, a, b, c in self.profile_shapes]
        data["schema"] = KEY_SCHEMA
        return data

    def digest(self) -> str:
        """Hex sha256 of the canonical JSON of :meth:`fields`."""
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CacheResult(Generic[T]):
    """What :meth:`EngineCache.get_or_build` returns.

    Attributes:
        value: the loaded engine.
        path: the engine file.
        built: True when ``build`` ran (miss, corrupt or mismatched file), False on a hit.
    """

    value: T
    path: Path
    built: bool


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder + ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    """A folder of engines, see the module docstring."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()

    def paths(self, stem: str, key: EngineKey) -> tuple[Path, Path]:
        """(engine file, JSON sidecar) for a model stem and key."""
        if not stem or "/" in stem or os.sep in stem:
            raise ConfigError(f"EngineCache: model stem {stem!r} must be a plain file name")
        engine = self.directory / f"{stem}-{key.digest()[:16]}.engine"
        return engine, engine.with_name(engine.name + ".json")

    def _cached_bytes(self, engine: Path, sidecar: Path, key: EngineKey) -> bytes | None:
        """The cached engine's bytes if its sidecar matches ``key``; None (logged) if not."""
        if not engine.exists():
            return None
        try:
            stored = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            LOG.warning("engine cache: sidecar %s unreadable (%s); rebuilding %s", sidecar,
                        exc, engine)
            return None
        if stored != key.fields():
            LOG.warning("engine cache: sidecar %s does not match the requested key (stored %s, "
                        "wanted %s); rebuilding %s", sidecar, stored, key.fields(), engine)
            return None
        try:
            return engine.read_bytes()
        except OSError as exc:
            LOG.warning("engine cache: cannot read %s (%s); rebuilding", engine, exc)
            return None

    def get_or_build(self, stem: str, key: EngineKey, build: Callable[[], bytes],
                     load: Callable[[bytes], T]) -> CacheResult[T]:
        """Load the engine for ``key`` from the cache, building (and storing) it if needed.

        Args:
            stem: model name for the file name (the ONNX file's stem).
            key: the engine's key.
            build: builds the engine; returns its serialised bytes. Only called on a miss.
            load: deserialises bytes into an engine; raising (any exception) means the
                cached bytes are corrupt, which triggers a rebuild.
        Raises:
            EngineBuildError: a freshly built engine does not load either.
        """
        engine_path, sidecar = self.paths(stem, key)
        blob = self._cached_bytes(engine_path, sidecar, key)
        if blob is not None:
            try:
                return CacheResult(load(blob), engine_path, built=False)
            except Exception as exc:  # whatever the loader raises, the file is unusable
                LOG.warning("engine cache: cached engine %s is corrupt or incompatible (%s); "
                            "rebuilding", engine_path, exc)
        self.directory.mkdir(parents=True, exist_ok=True)
        blob = build()
        # engine first, sidecar last: an engine without a matching sidecar is a miss
        atomic_write(engine_path, blob)
        atomic_write(sidecar, (json.dumps(key.fields(), indent=1, sort_keys=True) + "\n")
                     .encode())
        try:
            value = load(blob)
        except Exception as exc:
            raise EngineBuildError(f"{engine_path}: the freshly built engine does not load: "
                                   f"{exc}") from exc
        return CacheResult(value, engine_path, built=True)

"""Exception types of the stack; each names the bad value or input it refers to."""


class MMPerceptionError(Exception):
    """Base class of every error raised on purpose by mm_perception."""


class ConfigError(MMPerceptionError, ValueError):
    """Invalid configuration (rig YAML, component config); the message names key and value."""


class ConversionError(MMPerceptionError, ValueError):
    """A message cannot be turned into a core type (bad encoding, sizes, endianness...)."""


class EgoMotionError(MMPerceptionError, ValueError):
    """Ego-motion compensation impossible (no odometry covering the requested times)."""


class BagError(MMPerceptionError):
    """A bag cannot be opened or read (missing, corrupt, unsupported storage)."""


class KeyedConfigError(ConfigError):
    """A ConfigError about one key path of a configuration file (``sensors.lidar.model``);
    loaders prefix it with the file name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class InferenceError(MMPerceptionError):
    """Base class of the inference runtime's errors (``mm_perception.runtime``)."""


class ModelLoadError(InferenceError):
    """A model or engine file cannot be loaded (missing, corrupt, not ONNX); names the file."""


class SpecMismatchError(InferenceError, ValueError):
    """A model's inputs/outputs differ from the expected tensor specs; lists both."""


class FeedError(InferenceError, ValueError):
    """Inputs given to a backend's ``run`` do not match its input specs; names the input."""


class BackendUnavailableError(InferenceError):
    """The requested backend or device is not available here (TensorRT not installed, no
    CUDA, no CUDA execution provider); never answered by a silent fallback."""


class EngineBuildError(InferenceError):
    """Building a TensorRT engine failed (parser errors, unsupported layer, bad profile)."""

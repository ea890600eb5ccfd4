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

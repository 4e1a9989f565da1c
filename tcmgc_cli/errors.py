"""Domain errors. Each message says what went wrong and how to fix it; the CLI prints it on one line, exit 1."""


class TcmgcError(Exception):
    """Base class for expected failures shown to the user without a traceback."""


class ConfigError(TcmgcError):
    """A bad option, config key or model name."""


class AnnotationError(TcmgcError):
    """A dataset folder or annotation file that cannot be read as expected."""


class VideoDecodeError(TcmgcError):
    """A video that cannot be opened or decoded."""


class CacheError(TcmgcError):
    """A feature cache that is missing, corrupt, or was built with other settings."""


class EncoderError(TcmgcError):
    """CLIP weights that cannot be loaded."""


class CheckpointError(TcmgcError):
    """A checkpoint that is missing, corrupt, or belongs to another config."""


class BusyError(TcmgcError):
    """A folder or file that another tcmgc process is writing."""


class RunExistsError(TcmgcError):
    """A run folder that already holds a run, given to a command that would start over in it."""


class NumericsError(TcmgcError):
    """A NaN or infinity where a loss, weight, feature or score must be finite."""

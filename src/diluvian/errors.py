"""Exception hierarchy of diluvian.

Every error caused by bad input (a missing file, an unknown config key, a model
that does not match its config, ...) is a :class:`DiluvianError`. The CLI turns
these into a single line on stderr and exit code 2; anything else is a bug and
keeps its traceback.

This module imports nothing from the package.
"""


class DiluvianError(Exception):
    """Base class of all expected, user-facing errors."""


class ConfigError(DiluvianError, ValueError):
    """A configuration file or value is invalid (unknown key, wrong type, ...)."""


class DatasetNotFoundError(DiluvianError, FileNotFoundError):
    """A file, HDF5 dataset or named volume does not exist."""


class DataError(DiluvianError, ValueError):
    """Data exist but are unusable: wrong shape, dtype, resolution, ..."""


class ModelError(DiluvianError, ValueError):
    """A model file is not a diluvian model, or does not match the config."""


class TrainingError(DiluvianError, RuntimeError):
    """Training cannot go on (NaN loss, early abort, ...)."""


class EarlyAbortError(TrainingError):
    """Training met its early-abort criterion (``training.early_abort_*``)."""

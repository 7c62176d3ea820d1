"""One error type per layer, all under `MlxDiarError`.

Each is raised with the file (or option) and the problem in its message, so that the
command lines print it as one line without a traceback (`--debug` shows the traceback).
The Python API raises the same types.
"""

from __future__ import annotations


class MlxDiarError(Exception):
    """Base class of the errors a user can act on."""


class OptionError(MlxDiarError, ValueError):
    """An option, parameter or output path that cannot be used, naming it."""


class AudioError(MlxDiarError, ValueError):
    """Audio that cannot be used, naming the file and the problem."""


class CheckpointError(MlxDiarError, RuntimeError):
    """A checkpoint or checkpoint source that cannot be used, with what to do about it."""


class UnsafeSourceError(CheckpointError):
    """A pipeline directory, config or index that tries to leave its directory or run code."""


class ModelDirError(MlxDiarError, RuntimeError):
    """A converted model directory that cannot be loaded, naming the file and the problem."""

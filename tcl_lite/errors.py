"""Every error a user can fix, at the bottom of the package (imports nothing of tcl_lite).

``UserError`` is the base: its message names what is wrong and the fix, and the command line answers
it with that message and exit code ``UserError.exit_code`` (2), never a traceback. The CLI's dispatcher
(``tcl_lite.cli.run_command``) is the one place that maps exceptions to exit codes, for every command.
Each family keeps the builtin base it had (``ValueError``/``RuntimeError``), so ``except ValueError``
in a user's script still catches a bad config value.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message says what to change."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A configuration problem, named by its dotted key."""


class DataError(UserError, ValueError):
    """A data problem; the message names what is wrong and what to set or provide to fix it."""


class ModelError(UserError, ValueError):
    """A model that cannot be built as configured; the message names the key and the fix."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with the reason and what to do."""


class NoCheckpointError(CheckpointError):
    """The path holds no checkpoint of the kind asked for (as opposed to a broken one)."""


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN/inf loss (or gradient norm) and train.nonfinite=stop."""


class RunError(UserError, RuntimeError):
    """A path that is not a usable run directory or checkpoint; the message says what is expected."""


class ExportError(UserError, RuntimeError):
    """A path that holds no exportable per-sample verdicts; the message says what to pass instead."""


class ReportError(UserError, RuntimeError):
    """A path that is not a run directory (or holds nothing to report yet); the message says what is expected."""


class OutputExistsError(UserError, FileExistsError):
    """The output folder already holds what the command writes; nothing there is overwritten."""


class NotAnExportError(UserError, FileNotFoundError):
    """A folder that is not an exported model (``tcl-lite export-model`` writes model.json + model.safetensors)."""


class PathError(UserError, ValueError):
    """A file or folder given by path that is missing, damaged or of the wrong kind (the message names the
    path, what it is, and what it should be)."""

"""The errors that are the user's to fix (bad config, data, checkpoint or run directory), and
the two ways a training run ends early. A leaf: it imports nothing from seqlab, and every
other module takes its error classes from here, so serving and export can catch them
without importing training. The CLI prints USER_ERRORS as one line; anything else is a bug
and keeps its traceback."""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A configuration problem, worded for the user (file:line: what is wrong)."""


class DataError(ValueError):
    """Bad input data; the message names the file, and the line where there is one."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class RunError(ValueError):
    """A problem with the run directory (an existing run without --resume, a path that is a
    file, a folder that cannot be written), or a run that cannot go on."""


class TrainingDiverged(RunError):
    """Too many steps in a row with a nan/inf loss or gradient."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT / SIGTERM after saving a resumable checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


USER_ERRORS = (ConfigError, DataError, CheckpointError, RunError, FileNotFoundError)

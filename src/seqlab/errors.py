"""The errors that are the user's to fix (bad config, data, checkpoint or run directory).
The CLI prints these as one line; anything else is a bug and keeps its traceback."""

from seqlab.checkpoint import CheckpointError
from seqlab.config import ConfigError
from seqlab.data import DataError
from seqlab.rundir import RunError

USER_ERRORS = (ConfigError, DataError, CheckpointError, RunError, FileNotFoundError)

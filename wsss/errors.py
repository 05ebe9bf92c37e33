"""Exceptions that carry a message meant for the user (the CLIs print them without a traceback)."""

from __future__ import annotations


class WsssError(Exception):
    """Base class: something the user can fix (bad input, bad config, missing dependency)."""


class DataError(WsssError):
    """A dataset file is missing, unreadable or inconsistent. The message names the file."""


class CheckpointError(WsssError):
    """A checkpoint file is missing, corrupt, or was not written by wsss."""


class ConfigError(WsssError, ValueError):
    """A configuration value or argument is invalid (checked before any work starts). Also a
    ValueError, what Python callers of the library expect of a bad argument."""


class MissingDependencyError(WsssError):
    """An optional dependency is needed for the requested feature."""


class DiskFullError(WsssError):
    """A write failed for lack of space (or quota). Nothing partial is left under a final name,
    so the run can be resumed once there is room."""

    def __init__(self, path, cause: OSError):
        self.path = path
        super().__init__(
            f"{path}: {cause.strerror or 'no space left on device'}. Nothing was left half "
            "written: free some space (or pick another output folder), then rerun the same "
            "command with the same hydra.run.dir to resume where it stopped"
        )

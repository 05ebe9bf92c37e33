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


class WriteError(WsssError):
    """An output could not be written: no permission, a read-only file system, or a file-size
    limit. Nothing was left half written (see :func:`wsss.io.atomic_path`)."""


def write_failure(path, exc: OSError) -> WsssError | None:
    """The user's error for a failed write of ``path``, or None for an unforeseen one."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(path, exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(
            f"{path}: cannot write ({exc.strerror}); pick a folder you can write to "
            "(hydra.run.dir=...), or fix its permissions, then rerun to resume"
        )
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return WriteError(
            f"{path}: a file is in the way of a folder the run writes ({exc.strerror}); move it "
            "or pick another run folder (hydra.run.dir=...), then rerun to resume"
        )
    if exc.errno == errno.EFBIG:
        return WriteError(
            f"{path}: file too large for this system's limit on file size (ulimit -f, or the "
            "file system's own); nothing was left half written: raise the limit, then rerun"
        )
    return None

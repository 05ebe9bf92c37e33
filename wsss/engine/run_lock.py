"""One run at a time in a run folder: a lock file that names its owner, taken over when the
owner is gone."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from wsss.errors import ConfigError
from wsss.io import create_temporary_file

log = logging.getLogger(__name__)


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot; Linux), to tell it from a later
    process that reused its pid; None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class RunLock:
    """One run at a time in a run folder: ``<run>/.lock`` names its owner (host, pid, process
    start). A second run refuses to start; a lock left by a run that died is taken over.

    A lock is stale when its owner is on this host and no longer runs (or its pid now belongs to
    another process), or, for an owner on another host, when it has not been refreshed for
    ``stale_after`` seconds: a live run refreshes it with every image it finishes.
    """

    def __init__(self, root: str | Path, stale_after: float = 900.0):
        self.path = Path(root) / ".lock"
        self.stale_after = stale_after
        self.owner = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            tmp = create_temporary_file(self.path)
            tmp.write_text(json.dumps(self.owner))
            try:
                os.link(tmp, self.path)  # atomic, and fails if a lock exists
                self.held = True
                return
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            holder = self._holder()
            if not self._stale(holder):
                who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "?"
                raise ConfigError(
                    f"{self.path.parent} is in use by another run ({who}, started "
                    f"{holder.get('started', '?')}); wait for it to finish or write to another "
                    f"hydra.run.dir. If that run is gone, delete {self.path}"
                )
            log.warning("%s: taking over the lock of a run that is gone (%s)", self.path, holder)
            self.path.unlink(missing_ok=True)
        raise ConfigError(f"{self.path}: could not take the run folder's lock")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, holder: dict) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        if holder.get("host") != self.owner["host"] or "pid" not in holder:
            return age > self.stale_after
        pid = int(holder["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        started = holder.get("process_start")
        return started is not None and _process_start(pid) not in (None, started)

    def refresh(self) -> None:
        """Tell waiting runs on other hosts that this one is alive."""
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held and self._holder() == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

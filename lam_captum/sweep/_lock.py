"""One sweep per output folder: a lock file that names its owner, held through the operating system.

The lock is ``OUTPUT/.sweep.lock``, locked with ``flock`` and holding the owner's process id, host and
start time. The operating system releases the lock when its process ends, however it ends, so a lock
left by a killed run is stale by construction: the next run takes it over and writes its own name.
A second run while the owner lives is refused with the owner's name.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

LOCK_NAME = ".sweep.lock"


class OutputFolderError(RuntimeError):
    """The output folder cannot be used: it is a file, cannot be created, or another sweep holds it."""


def prepare_output(output: Path) -> None:
    """Create the output folder, or say in one line why it cannot be used.

    Raises:
        OutputFolderError: If ``output`` (or a folder above it) is a file, or cannot be created.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "results"
        >>> _ = file.write_text("")
        >>> prepare_output(file)
        Traceback (most recent call last):
        ...
        lam_captum.sweep._lock.OutputFolderError: the output folder '...results' is a file, not a folder
    """
    if output.exists() and not output.is_dir():
        raise OutputFolderError(f"the output folder {str(output)!r} is a file, not a folder")
    for parent in output.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputFolderError(f"cannot create the output folder {str(output)!r}: {str(parent)!r} is a file")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputFolderError(f"cannot create the output folder {str(output)!r}: {error.strerror}") from error


class OutputLock:
    """The exclusive right of this process to run a sweep into ``output``.

    Args:
        output: The results folder (it must exist).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with OutputLock(folder):
        ...     OutputLock(folder).acquire()
        Traceback (most recent call last):
        ...
        lam_captum.sweep._lock.OutputFolderError: another sweep is writing to ...
        >>> (folder / LOCK_NAME).exists()
        False
    """

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK_NAME
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; refuse if a live process holds it.

        Raises:
            OutputFolderError: Naming the process and host that hold the folder.
        """
        import fcntl  # POSIX only; imported here so that a study can still be checked on any system

        while self._descriptor is None:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise OutputFolderError(self._refusal()) from None
            # The previous owner may have removed the file between our open and our lock: retry on the new one.
            if self._is_current(descriptor):
                self._descriptor = descriptor
            else:
                os.close(descriptor)
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(self._descriptor, 0)
        os.pwrite(self._descriptor, (json.dumps(owner) + "\n").encode(), 0)

    def release(self) -> None:
        """Give the folder up (removing the lock file); nothing happens if this process does not hold it."""
        if self._descriptor is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exception: object) -> None:
        self.release()

    def _is_current(self, descriptor: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            return False

    def _refusal(self) -> str:
        try:
            owner = json.loads(self.path.read_text())
            who = f"process {owner['pid']} on {owner['host']}, since {owner['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "a process that is starting"
        return (f"another sweep is writing to {str(self.path.parent)!r} ({who}); wait for it to finish, or give "
                f"this run another output folder (lock file: {str(self.path)!r})")

"""Files that are either complete or absent: every writer of results goes through here.

A leaf module (it imports nothing of the package), so the sweep, :meth:`lam_captum.explain.LAMResult.save`
and the PNG writer share one definition without importing each other.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".tmp"


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` through ``write(stream)`` so that it is either complete or absent, never partial.

    The data goes to a hidden temporary file beside ``path`` (named with the process id, so two
    processes racing on one file never share it), is flushed to disk, and replaces ``path`` in one
    ``os.replace``. The parent folders are created.

    Args:
        path: The file to write.
        write: Called once with a binary stream open for writing.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a" / "b.txt"
        >>> _ = write_atomically(target, lambda stream: stream.write(b"done"))
        >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
        ('done', ['b.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        with temporary.open("wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`write_atomically`."""
    return write_atomically(path, lambda stream: stream.write(text.encode()))


def check_writable_folder(folder: str | Path, name: str) -> Path:
    """Check, before any work is done, that ``folder`` is a folder this process can write in, or can create.

    The check writes: a temporary folder is made and removed in ``folder``, or in its nearest existing
    ancestor when ``folder`` does not exist yet (permission bits alone mislead: root ignores them, and a
    read-only mount or an ACL overrides them). Nothing is left behind.

    Args:
        folder: The folder the results will go to.
        name: How the caller's user knows ``folder`` (``"--output"``, ``"folder"``), for the message.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: For an empty ``folder``.
        OSError: Naming ``name`` and ``folder``, if a part of the path is a file or the place is not writable.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> check_writable_folder(root / "new" / "results", "folder") == root / "new" / "results"
        True
        >>> (root / "notes.txt").write_text("a file")
        6
        >>> check_writable_folder(root / "notes.txt" / "results", "folder")
        Traceback (most recent call last):
        ...
        NotADirectoryError: cannot write the results to `folder` '.../notes.txt/results': '.../notes.txt' is a file, not a folder
    """
    if isinstance(folder, str) and not folder.strip():
        # Path("") is the working folder: an empty flag is more likely a shell variable that was not set.
        raise ValueError(f"`{name}` must name a folder, got {folder!r} (for the working folder write '.')")
    folder = Path(folder)
    prefix = f"cannot write the results to `{name}` {str(folder)!r}"
    try:
        existing = next(path for path in (folder, *folder.absolute().parents) if path.exists())
        if existing.is_dir():
            os.rmdir(tempfile.mkdtemp(prefix=".lam-captum-check-", dir=existing))
            return folder
    except OSError as error:
        raise OSError(f"{prefix}: {error.strerror or error}") from None
    raise NotADirectoryError(f"{prefix}: {str(existing)!r} is a file, not a folder")


def files_listed(summary: Path, key: str, ours: Iterable[str]) -> list[str]:
    """The names of ``ours`` that the JSON ``summary`` an earlier save wrote lists under ``key``: the files that
    save wrote, which a new save into the folder may remove. None (an empty list) where the summary is missing,
    unreadable or not such a summary; a file of the user's is never listed.

    Example:
        >>> import tempfile
        >>> summary = Path(tempfile.mkdtemp()) / "summary.json"
        >>> _ = summary.write_text('{"files": ["heat.png", "notes.txt", 3]}')
        >>> files_listed(summary, "files", {"heat.png", "strip.png", "notes.txt"}), files_listed(summary, "x", {""})
        (['heat.png', 'notes.txt'], [])
    """
    try:
        listed = json.loads(summary.read_text()).get(key, [])
    except (OSError, ValueError, AttributeError):
        return []
    ours = set(ours)
    return [name for name in listed if isinstance(name, str) and name in ours] if isinstance(listed, list) else []


def write_files_atomically(folder: str | Path, files: Mapping[str, Callable[[BinaryIO], object]],
                           stale: Iterable[str] = ()) -> Path:
    """Write a set of files into ``folder`` as one: they all replace the previous ones, or none does.

    Every file is first written through its ``write(stream)`` and flushed to disk in a hidden staging
    folder. A folder that does not exist yet is then that staging folder, renamed into place in one step.
    In an existing folder each file is moved in by a rename, the previous one kept aside until all are in;
    if anything fails on the way (an exception, Ctrl-C), the previous files are moved back. So a failed
    run leaves the previous results as they were, never a mix of old and new files. Files of the folder
    that are not in ``files`` are left alone, except those named in ``stale``: they go with the previous files
    (and come back with them on a failure).

    Args:
        folder: Where the files go; created with its parents if needed.
        files: File name (no folder part) -> function that writes the file's bytes to a binary stream.
        stale: Names of files an earlier set may have had and this one has not (an earlier run's of another
            kind), removed with the previous files.

    Returns:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: If a file cannot be written; anything a ``write`` function raises is raised as it is.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "results"
        >>> _ = write_files_atomically(folder, {"a.txt": lambda stream: stream.write(b"new")})
        >>> def fail(stream):
        ...     raise RuntimeError("the second file cannot be drawn")
        >>> write_files_atomically(folder, {"a.txt": lambda stream: stream.write(b"newer"), "b.png": fail})
        Traceback (most recent call last):
        ...
        RuntimeError: the second file cannot be drawn
        >>> (folder / "a.txt").read_text(), sorted(path.name for path in folder.iterdir())
        ('new', ['a.txt'])
    """
    folder = Path(folder)
    if folder.is_dir():
        staging = folder / f".lam-captum-staging.{os.getpid()}{TEMPORARY_SUFFIX}"
    else:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = folder.with_name(f".{folder.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    # A folder of this name can only be the leftover of a killed process that had our id.
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name, write in files.items():
            _write_synced(staging / name, write)
        if staging.parent == folder:
            _move_in(staging, folder, list(files), [name for name in stale if name not in files])
        else:
            os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    with path.open("wb") as stream:
        write(stream)
        stream.flush()
        os.fsync(stream.fileno())


def _move_in(staging: Path, folder: Path, names: list[str], stale: list[str]) -> None:
    """Move ``names`` from ``staging`` into ``folder`` and ``stale`` out of it (into ``staging``, which is
    removed afterwards); on any failure put the previous files back."""
    previous = staging / ".previous"
    previous.mkdir()
    moved: list[str] = []
    try:
        for name in names:
            if os.path.lexists(folder / name):
                os.replace(folder / name, previous / name)
            moved.append(name)
            os.replace(staging / name, folder / name)
        for name in stale:
            if os.path.lexists(folder / name):
                os.replace(folder / name, previous / name)
                moved.append(name)
    except BaseException:
        for name in reversed(moved):
            _put_back(folder / name, previous / name)
        raise


def _put_back(target: Path, kept: Path) -> None:
    if os.path.lexists(kept):
        if os.path.lexists(target):
            target.unlink()
        os.replace(kept, target)
    else:
        target.unlink(missing_ok=True)

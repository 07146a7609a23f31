"""Files that are either complete or absent: every writer of results goes through here.

A leaf module (it imports nothing of the package), so the sweep, :meth:`lam_captum.explain.LAMResult.save`
and the PNG writer share one definition without importing each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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

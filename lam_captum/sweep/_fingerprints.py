"""Digests of what determines a probe's numbers: a stored result whose digest differs is stale."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Hashing large checkpoints once per process is enough; the key changes when the file does.
_FILE_DIGESTS: dict[tuple[Path, int, int], str] = {}


def digest(value: Any) -> str:
    """A short hash of a JSON-able value (keys sorted, anything else by its ``repr``).

    Example:
        >>> digest({"b": 1, "a": [2]}) == digest({"a": [2], "b": 1})
        True
    """
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's contents, so that retrained weights or an edited image make results stale.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "w.bin"
        >>> _ = file.write_bytes(b"")
        >>> file_digest(file)[:12]
        'e3b0c44298fc'
    """
    status = path.stat()
    key = (path, status.st_size, status.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        hasher = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                hasher.update(block)
        _FILE_DIGESTS[key] = hasher.hexdigest()
    return _FILE_DIGESTS[key]

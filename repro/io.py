"""Atomic file writes: a reader sees the old file or the new one, never half of one.

    from repro.io import atomic_write_text
    atomic_write_text(path, text)                 # mode 0o644, parent folders created

    with atomic_path(path) as tmp:                # for writers that want a file name
        fig.savefig(tmp)

Both write a temp file in the target's folder (same file system), fsync it, set its mode and
os.replace it over the target; on any error the temp file is removed and the target untouched.
A target whose bytes would not change is left alone (its modification time too).

    sha256_file(path)                             # hex sha256 of a file's bytes, read in 1 MiB blocks

A leaf module: it imports nothing from repro.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside `path`; when the block exits cleanly, fsync it, chmod it to `mode`
    and rename it over `path`, unless `path` already holds the same bytes (then it is left as it
    is, its mode set). Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            os.chmod(path, mode)
            return
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> Path:
    """Write `text` (UTF-8) to `path` atomically with file mode `mode`; returns the path."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""An exclusive file lock (the `filelock` package), for work parallel sweep jobs must not do twice
(pretraining the micro model, training an upstream stage, creating the tracking store): the first
job holds the lock while it works, the others wait and then find the result."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from repro.errors import ConfigError

# Long enough for the slowest locked work here (pretraining a micro base, an upstream SFT stage).
DEFAULT_TIMEOUT_S = float(os.environ.get("REPRO_LOCK_TIMEOUT_S", 4 * 3600))


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with its parent folders) for the block; after
    `timeout` seconds of waiting, raise an error naming the lock file and what to do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(path, timeout=timeout):
            yield
    except Timeout:
        raise ConfigError(
            f"waited {timeout:.0f} s for the lock {path}: another repro process holds it (see `ps`); "
            f"if none is running, delete the file (REPRO_LOCK_TIMEOUT_S sets the wait)"
        ) from None

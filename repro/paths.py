"""Paths a run writes must lie inside the folder they belong to (results, cache, tables).

check_under(path, root, "run record")         # the path, or ConfigError naming both
"""

from __future__ import annotations

import os
from pathlib import Path

from repro.errors import ConfigError


def check_under(path: str | os.PathLike[str], root: str | os.PathLike[str], what: str) -> Path:
    """`path` if it lies inside `root` once both are resolved (`..` and symlinks followed), else
    ConfigError naming both: nothing a run writes may land outside its results/cache/tables root."""
    path, root = Path(path), Path(root)
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{what}: {path} lies outside {root}; refusing to write it")
    return path

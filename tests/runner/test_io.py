"""repro.io: atomic writes leave the old file or the new one, with the requested mode, no temp files."""

from __future__ import annotations

import pytest

from repro.io import atomic_path, atomic_write_text


def test_writes_text_with_mode_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.md"
    assert atomic_write_text(path, "± —\n") == path
    assert path.read_text(encoding="utf-8") == "± —\n"
    assert path.stat().st_mode & 0o777 == 0o644
    atomic_write_text(path, "x", mode=0o600)
    assert path.read_text() == "x" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["out.md"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("renderer crashed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_io_is_a_leaf_module():
    import ast
    import inspect

    import repro.io

    tree = ast.parse(inspect.getsource(repro.io))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.startswith("repro") for name in imported if name)


def test_a_write_of_the_same_bytes_leaves_the_file_alone(tmp_path):
    path = tmp_path / "fig.png"
    atomic_write_text(path, "same", mode=0o600)
    before = path.stat().st_mtime_ns
    atomic_write_text(path, "same")  # same content: not replaced, only the mode is set
    assert path.stat().st_mtime_ns == before and path.stat().st_mode & 0o777 == 0o644
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["fig.png"]

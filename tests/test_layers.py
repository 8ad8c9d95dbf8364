"""The library's shape: one-way layers, no import cycles, no paper named in the library.

Layers, each importing only those before it (module level or inside functions):
errors/registry -> config -> pipeline -> runner -> launch -> cli.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "repro"
LAYERS = [
    "repro.errors",
    "repro.registry",
    "repro.config",
    "repro.pipeline",
    "repro.runner",
    "repro.launch",
    "repro.cli",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every repro module `path` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    modules = {module_name(p) for p in LIB.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # `from pkg import mod` needs pkg.mod; `from pkg import name` needs pkg (its __init__).
            subs = {f"{base}.{a.name}" for a in node.names} & modules
            found |= subs if len(subs) == len(node.names) else subs | {base}
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in LIB.rglob("*.py")}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _layer(module: str) -> int | None:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return None


def test_layers_import_only_downwards():
    bad = []
    for module, deps in graph().items():
        mine = _layer(module)
        for dep in deps:
            theirs = _layer(dep)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{module} imports {dep}")
    assert not bad, bad


def test_imports_of_reads_function_level_imports(tmp_path):
    assert "repro.runner" in imports_of(LIB / "launch.py")
    assert "repro.config" in imports_of(LIB / "pipeline.py")


@pytest.mark.parametrize("module", ["repro.config", "repro.pipeline", "repro.runner"])
def test_lower_layers_never_import_the_cli(module):
    assert not any(d.startswith(("repro.cli", "repro.launch")) for d in graph().get(module, ()))


def test_library_names_no_paper():
    slugs = [d.name for d in (ROOT / "experiments").iterdir() if d.is_dir() and not d.name.startswith("_")]
    words = re.compile(r"\b(" + "|".join([*slugs, "nsr"]) + r")\b", re.IGNORECASE)
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in [*LIB.rglob("*.py"), *LIB.rglob("*.yaml")]
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if words.search(line)
    ]
    assert not hits, hits

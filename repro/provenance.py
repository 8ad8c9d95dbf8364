"""Where a run came from: git state, package versions, a machine-independent config hash, and
the checksum of the base model it started from.

Used by the runner for MLflow tags and the run record (`repro/records.py`), and by `repro
reproduce` to tell whether a record is still the result of this code and config (resume).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from repro.paths import check_under

UNKNOWN = "unknown"

# Config keys that say where a run writes, not what it computes: left out of the config hash.
# `seed` is left out too, so the seeds of one ad-hoc configuration share a hash, except that
# `model.base` (by default derived from the seed) stays in: runs on different base models must
# never share a hash, nor a checkpoint folder. `trainer.save` only says whether the final model
# is kept.
HASH_EXCLUDED_TOP = ("paths", "tracking", "hydra", "seed")
HASH_EXCLUDED_NESTED = (("trainer", "threads"), ("trainer", "save"))
# What a run writes, not its code: changes there do not make the checkout "dirty".
OUTPUT_DIRS = ("results", "paper_tables")


def _git(root: Path, *args: str) -> str | None:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock of a checkout in use.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, env=env
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _code_pathspec() -> list[str]:
    return ["--", ".", *(f":(exclude){d}" for d in OUTPUT_DIRS)]


def git_state(root: str | os.PathLike[str]) -> tuple[str, bool | None]:
    """(sha, dirty) of the checkout holding `root`; ("unknown", None) outside a git checkout.
    dirty: tracked files other than the outputs (results/, paper_tables/) differ from HEAD
    (untracked files are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return UNKNOWN, None
    sha = _git(root, "rev-parse", "HEAD")
    if not sha:
        return UNKNOWN, None
    status = _git(root, "status", "--porcelain", "--untracked-files=no", *_code_pathspec())
    return sha.strip(), None if status is None else bool(status.strip())


def git_diff_sha256(root: str | os.PathLike[str]) -> str | None:
    """sha256 of the uncommitted changes to tracked code (`git diff HEAD`, outputs excluded), so two
    runs from the same dirty tree can be told to share their code; None when clean or not git."""
    diff = _git(Path(root), "diff", "HEAD", "--binary", *_code_pathspec()) if Path(root).is_dir() else None
    if not diff:
        return None
    return hashlib.sha256(diff.encode()).hexdigest()


# The code that computes a run: the library's and the experiment packages' Python files. Left out:
# the modules that only read records (tables, the report, the MLflow import) and those that only
# parse commands, plan sweeps and show progress (cli, launch, progress: what they hand a run is in
# its config). Configs are not code here: what they resolve to is in the config hash, and the
# shipped bases have their own checksum (`base_sha256`).
CODE_EXCLUDED = ("tables/", "report/", "mlflow_import.py", "cli.py", "launch.py", "progress.py")


def code_sha256(root: str | os.PathLike[str], package: str | os.PathLike[str] | None = None) -> str:
    """sha256 over the path and bytes of every Python file that computes runs: the `repro` package
    that is imported (or `package`) minus `CODE_EXCLUDED`, and `<root>/experiments/`'s. Two runs
    with the same fingerprint ran the same code whatever their git commits, so a commit that
    touches only docs, tests, tables or records leaves the records current."""
    if package is None:
        import repro

        package = Path(repro.__file__).parent
    experiments = Path(root) / "experiments"
    digest = hashlib.sha256()
    for label, folder in (("repro", Path(package)), ("experiments", Path(experiments))):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).as_posix()
            if label == "repro" and rel.startswith(CODE_EXCLUDED):
                continue
            digest.update(f"{label}/{rel}".encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _dist_version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return UNKNOWN


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (read from metadata: nothing heavy is imported)."""
    import repro

    return {
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "transformers": _dist_version("transformers"),
        "hydra": _dist_version("hydra-core"),
        "mlflow": _dist_version("mlflow", "mlflow-skinny"),
        "repro": repro.__version__,
    }


def _replace_prefixes(node: Any, prefixes: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {k: _replace_prefixes(v, prefixes) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_prefixes(v, prefixes) for v in node]
    if isinstance(node, str):
        for prefix, token in prefixes:
            # Only whole path components: root `/a/b` must not rewrite `/a/bc`.
            node = re.sub(re.escape(prefix) + r"(?=/|$|\s)", token, node)
        return node
    return node


def portable_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict, with this machine's absolute paths written as
    `<root>`, `<results_dir>`, `<cache_dir>`, `<tables_dir>` and `<data_dir>`, so records from two machines
    compare equal. The `hydra` node, if present, is dropped."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    paths = container.get("paths") or {}
    prefixes = []
    for key in ("cache_dir", "results_dir", "tables_dir", "data_dir", "root"):
        value = paths.get(key)
        if isinstance(value, str) and value not in ("", ".", "/"):
            prefixes.append((str(Path(value).absolute()), f"<{key}>"))
            if value != prefixes[-1][0]:
                prefixes.append((value, f"<{key}>"))
    # Longest first, so `<root>/results` becomes `<results_dir>`, not `<root>/results`.
    prefixes.sort(key=lambda p: len(p[0]), reverse=True)
    return _replace_prefixes(container, prefixes)


def config_hash(portable: dict[str, Any]) -> str:
    """sha256 of the portable config minus paths, tracking, seed and trainer.threads (hex)."""
    data = {k: v for k, v in portable.items() if k not in HASH_EXCLUDED_TOP}
    for outer, inner in HASH_EXCLUDED_NESTED:
        if isinstance(data.get(outer), dict) and inner in data[outer]:
            data[outer] = {k: v for k, v in data[outer].items() if k != inner}
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# Keys that name a run rather than say what it computes: left out of the reuse key as well.
IDENTITY_KEYS = ("paper", "arm")


def reuse_key(portable: dict[str, Any]) -> str:
    """`config_hash` without the paper and arm names: two arms, of any packages, whose reuse keys
    are equal run the same computation (upstream stages are compared by their checkpoint paths,
    which name their arm, so a chain matches only a chain over the same upstream arms)."""
    return config_hash({k: v for k, v in portable.items() if k not in IDENTITY_KEYS})


def checkpoint_dir(cfg: DictConfig) -> Path:
    """Where a trainer saves its final model: <cache_dir>/checkpoints/<config hash>/seed<N>/.
    The config hash leaves out the seed, so seeds get their own folder."""
    digest = config_hash(portable_config(cfg))[:16]
    out = Path(cfg.paths.cache_dir) / "checkpoints" / digest / f"seed{int(cfg.seed)}"
    return check_under(out, cfg.paths.cache_dir, "checkpoint")

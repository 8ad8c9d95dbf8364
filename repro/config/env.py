"""Where things are: the checkout root, its paper packages, and the process environment.

`<root>` is $REPRO_ROOT, else the checkout holding the `repro` package (if it has `experiments/`),
else the working directory. Paper packages are the folders of `<root>/experiments/` holding arm
files; they are Hydra's `experiment` group: `prepare_environment` links
`<cache_dir>/hydra_search/<root hash>/experiment -> <root>/experiments` and `with_searchpath`
appends that folder to `hydra.searchpath` (an override, so multirun workers see it too).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from repro.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SUITE_FILE = "suite.yaml"
SLUG = re.compile(r"[a-z0-9_]+")


def find_root() -> Path:
    """$REPRO_ROOT, else the folder above the `repro` package if it holds `experiments/`, else cwd."""
    env = os.environ.get("REPRO_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    checkout = CONF_DIR.parent.parent
    if (checkout / "experiments").is_dir():
        return checkout
    return Path.cwd().resolve()


def prepare_environment(root: Path | None = None) -> Path:
    """Export REPRO_ROOT (child processes see it), turn off MLflow telemetry and Hugging Face
    progress bars, and link the experiment group into a search-path folder. Returns that folder."""
    root = root or find_root()
    os.environ["REPRO_ROOT"] = str(root)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # No transformers / hub progress bars in our output (repro.progress shows its own).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    cache = Path(os.environ.get("REPRO_CACHE_DIR") or root / ".cache").expanduser().resolve()
    # One folder per root: a cache shared by two checkouts must not flip the link under a run.
    search_dir = cache / "hydra_search" / hashlib.sha256(str(root).encode()).hexdigest()[:12]
    search_dir.mkdir(parents=True, exist_ok=True)
    link, target = search_dir / "experiment", root / "experiments"
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        # Swap the link atomically: another `repro` process may be reading it.
        tmp = search_dir / f".experiment.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)
    return search_dir


def with_searchpath(overrides: Sequence[str], search_dir: Path) -> list[str]:
    """Add `search_dir` to `hydra.searchpath`, keeping any search path the user gave."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entry = f"file://{search_dir}"
    out, paths = [], []
    for override in overrides:
        if override.split("=", 1)[0].lstrip("+") == "hydra.searchpath":
            value = OverridesParser.create().parse_override(override).value()
            paths += list(value or [])
        else:
            out.append(override)
    paths.append(entry)
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return [*out, f"hydra.searchpath=[{quoted}]"]


def package_dir(root: Path, slug: str) -> Path:
    return root / "experiments" / slug


def packages(root: Path) -> list[str]:
    """Paper slugs: folders of `<root>/experiments` holding at least one arm file."""
    base = root / "experiments"
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if d.is_dir() and package_arms(root, d.name))


def package_arms(root: Path, slug: str) -> list[str]:
    """Arm names of a paper package: its YAML files other than suite.yaml."""
    d = package_dir(root, slug)
    return sorted(p.stem for p in d.glob("*.yaml") if p.name != SUITE_FILE) if d.is_dir() else []


def check_slug(kind: str, name: object) -> str:
    """`name` if it is a `[a-z0-9_]+` slug, else ConfigError (no paths, no `..`)."""
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        raise ConfigError(f"{kind}: expected a name of [a-z0-9_]+, got {name!r}")
    return name


def split_experiment(root: Path, experiment: object) -> tuple[str, str]:
    """`<paper>/<arm>` -> (paper, arm), both slugs that exist under `<root>/experiments`."""
    if not isinstance(experiment, str) or experiment.count("/") != 1:
        raise ConfigError(f"experiment: expected '<paper>/<arm>', got {experiment!r}")
    paper, arm = (check_slug("experiment", part) for part in experiment.split("/"))
    if paper not in packages(root):
        known = ", ".join(packages(root)) or "(none)"
        raise ConfigError(f"experiment: no paper '{paper}' in {root / 'experiments'}; papers: {known}")
    if arm not in package_arms(root, paper):
        arms = ", ".join(package_arms(root, paper))
        raise ConfigError(f"experiment: paper '{paper}' has no arm '{arm}'; its arms: {arms}")
    return paper, arm

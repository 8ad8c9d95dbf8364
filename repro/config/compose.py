"""Hydra composition: the job config `repro run <overrides>` sees, identified and validated.

    with hydra_app() as hydra:
        cfg = compose(hydra, overrides)        # Hydra compose + finalize
    cfg = finalize(cfg, choices, overrides)    # what every job does with Hydra's config

`finalize` derives `paper` and `arm` from the experiment's path (`experiment=<paper>/<arm>`),
merges the paper's own scale file (`experiments/<paper>/scales/<scale>.yaml`, where a scale must
differ for that paper; an arm that extends another package's arm gets that package's scale file
first), imports the paper package's Python modules (its registered functions), and
validates everything (`repro.config.schema`, the task's own checks, the stage functions the trainer
reads on a dummy batch, the teacher checkpoint) before any model is built.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from repro.config import schema
from repro.config.env import CONF_DIR, find_root, prepare_environment, split_experiment, with_searchpath
from repro.errors import ConfigError
from repro.registry import UnknownNameError

CONFIG_NAME = "config"
EVAL_CONFIG_NAME = "evaluate"


@contextlib.contextmanager
def hydra_app() -> Iterator[Any]:
    """A Hydra instance on repro/conf (what hydra.main builds), cleared afterwards."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(
        task_name="repro", config_search_path=create_config_search_path(str(CONF_DIR))
    )
    try:
        yield hydra
    finally:
        GlobalHydra.instance().clear()


def compose_raw(
    hydra: Any, overrides: Sequence[str], config_name: str = CONFIG_NAME
) -> tuple[DictConfig, dict]:
    """Hydra's job config for `overrides` (no `hydra` node) and its group choices."""
    from hydra.types import RunMode

    cfg = hydra.compose_config(
        config_name, list(overrides), run_mode=RunMode.RUN, with_log_configuration=False
    )
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def compose(hydra: Any, overrides: Sequence[str], validate: bool = True) -> DictConfig:
    """The finalized job config for `overrides` (the search path is added here)."""
    search_dir = prepare_environment()
    cfg, choices = compose_raw(hydra, with_searchpath(overrides, search_dir))
    return finalize(cfg, choices, overrides, validate=validate)


def compose_once(*overrides: str, validate: bool = True) -> DictConfig:
    """`compose` in a Hydra instance of its own, or in the running one (inside a Hydra job)."""
    from hydra.core.global_hydra import GlobalHydra

    gh = GlobalHydra.instance()
    if gh.is_initialized() and getattr(gh, "hydra", None) is not None:
        return compose(gh.hydra, overrides, validate=validate)
    with hydra_app() as hydra:
        return compose(hydra, overrides, validate=validate)


def compose_eval(hydra: Any, overrides: Sequence[str]) -> DictConfig:
    """The `repro eval` config (repro/conf/evaluate.yaml)."""
    prepare_environment()
    return compose_raw(hydra, overrides, EVAL_CONFIG_NAME)[0]


def finalize(
    cfg: DictConfig, choices: Mapping[str, Any], overrides: Sequence[str] | None, validate: bool = True
) -> DictConfig:
    """Set paper/arm from the experiment path, import the paper's modules, validate (ConfigError)."""
    overrides = list(overrides or [])
    root = Path(str(OmegaConf.select(cfg, "paths.root", default=None) or find_root()))
    for key in ("paper", "arm"):
        if cfg.get(key) is not None:
            where = schema.source_of(key, choices, overrides, root)
            raise ConfigError(
                f"{key}: derived from the experiment's path (experiment=<paper>/<arm>), not set "
                f"(in {where}); remove it"
            )
    experiment = choices.get("experiment")
    with open_dict(cfg):
        if experiment:
            cfg.paper, cfg.arm = split_experiment(root, experiment)
    # The scale files of the packages whose arms this arm extends, then its own (the last wins).
    scaled = False
    for slug in arm_packages(root, cfg.paper, cfg.arm) if experiment else []:
        scale_file = paper_scale_file(root, slug, choices.get("scale"))
        if scale_file is not None:
            cfg = apply_paper_scale(cfg, scale_file)
            scaled = True
    if scaled:  # the command line wins over a paper's scale file, as it wins over the arm file
        cfg = reapply_overrides(cfg, choices, overrides)
    cfg = with_base(cfg)
    if validate:
        # Types and keys first (cheap: no torch), then the paper's registered functions and the
        # checks that run them.
        schema.validate(cfg, choices, overrides, before=lambda: import_paper_modules(root, cfg.paper))
        import_paper_modules(root, cfg.paper)
        check_semantics(cfg, choices, overrides)
    return cfg


def paper_scale_file(root: Path, paper: str | None, scale: str | None) -> Path | None:
    """`experiments/<paper>/scales/<scale>.yaml`: what a paper's arms change at that scale (merged
    after the arm file), when the package has one."""
    if not paper or not scale:
        return None
    path = Path(root) / "experiments" / paper / "scales" / f"{scale}.yaml"
    return path if path.exists() else None


def apply_paper_scale(cfg: DictConfig, path: Path) -> DictConfig:
    """Merge the sections of a paper's scale file that apply to this arm: `all` (every arm), then
    the arm's trainer name (e.g. `sft:` for the SFT arms), each a config delta. A section's `model`
    delta that names its kind (`model: {kind: micro, pretrain: ...}`) applies to that kind only: when
    the command line swaps the model (`model=hf model.path=<folder>`), the swap wins and those keys
    are dropped rather than rejected."""
    delta = OmegaConf.load(path)
    sections = ["all", str(OmegaConf.select(cfg, "trainer.name"))]
    for key in delta:
        if not isinstance(key, str) or not (key == "all" or key.isidentifier()):
            raise ConfigError(f"{path}: {key!r}: expected `all` or a trainer name as a top-level key")
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)  # a scale file may add a key the arm lacks (e.g. a task knob);
    for section in sections:  # the typed schemas and the task's own checks still reject a bad one
        if section in delta:
            part = delta[section]
            kind = OmegaConf.select(part, "model.kind", default=None)
            if kind is not None and kind != OmegaConf.select(cfg, "model.kind"):
                part = OmegaConf.masked_copy(part, [k for k in part if k != "model"])
            cfg = OmegaConf.merge(cfg, part)
    OmegaConf.set_struct(cfg, struct)
    return cfg


def reapply_overrides(cfg: DictConfig, choices: Mapping[str, Any], overrides: Sequence[str]) -> DictConfig:
    """Set again the values the command line set (`key=value`, `+key=value`, `++key=value`; not
    group choices like `task=arith_v2`, deletions or sweeps), after the paper's scale file merged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    struct = OmegaConf.is_struct(cfg)
    OmegaConf.set_struct(cfg, False)
    for ov in OverridesParser.create().parse_overrides(plain):
        key = ov.key_or_group
        if ov.is_delete() or ov.is_sweep_override() or key in choices or ov.package is not None:
            continue
        OmegaConf.update(cfg, key, ov.value(), merge=False)
    OmegaConf.set_struct(cfg, struct)
    return cfg


def base_of_seed(seed: int) -> int:
    """The micro base a run of `seed` starts from unless `model.base` says: (seed - 1) mod N_BASES,
    so that seeds 1, 2, 3, ... of a suite spread over the shipped bases (seed 1 -> base 0)."""
    return (seed - 1) % schema.N_BASES


def with_base(cfg: DictConfig) -> DictConfig:
    """Set a micro model's `base: null` to `base_of_seed(seed)` (any other model has no base)."""
    if OmegaConf.select(cfg, "model.kind") != "micro" or OmegaConf.select(cfg, "model.base") is not None:
        return cfg
    seed = OmegaConf.select(cfg, "seed")
    if isinstance(seed, int) and not isinstance(seed, bool):  # a bad seed is validation's to report
        with open_dict(cfg):
            cfg.model.base = base_of_seed(seed)
    return cfg


def check_semantics(cfg: DictConfig, choices: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """Checks beyond types: the task's own value checks, the stage functions the trainer reads
    (on a dummy batch), and that a teacher checkpoint exists unless a stage trains it first."""
    from repro.algos import check_stages
    from repro.config.trainer_schemas import TRAINER_CONFIGS
    from repro.tasks import build_task

    build_task(cfg.task)
    root = Path(str(OmegaConf.select(cfg, "paths.root")))
    for stage in getattr(TRAINER_CONFIGS[cfg.trainer.name], "stages", ()):
        try:
            check_stages(cfg, stages=[stage])
        except (ConfigError, UnknownNameError) as exc:
            key = "trainer.loss" if stage == "loss" else stage
            where = schema.source_of(key, choices, overrides, root)
            raise ConfigError(f"{exc} (in {where})") from None
    teacher = OmegaConf.select(cfg, "trainer.teacher")
    pending = "teacher" in (OmegaConf.select(cfg, "stages") or {})
    if isinstance(teacher, str) and not pending and not (Path(teacher) / "config.json").exists():
        raise ConfigError(f"trainer.teacher: no checkpoint (config.json) in {teacher!r}")


def import_paper_modules(root: str | Path, paper: str | None) -> None:
    """Import `experiments/<paper>/` Python files (a paper's registered functions), as package
    `experiments.<paper>`, after those of every package whose arms its arm files extend (an arm
    built on `/experiment/<other>/<arm>` uses that package's functions). Each job process imports
    them itself, so registrations reach parallel workers too. Importing twice is a no-op."""
    if not paper:
        return
    for slug in package_dependencies(root, paper):
        _import_package(Path(root), slug)


def package_dependencies(root: str | Path, paper: str) -> list[str]:
    """`paper` and, transitively, the packages whose arms its arm files extend (defaults entries
    `/experiment/<other>/<arm>`), dependencies first."""
    base = Path(root) / "experiments"
    order: list[str] = []

    def visit(slug: str, seen: tuple[str, ...]) -> None:
        if slug in order or slug in seen:
            return
        for arm_file in sorted((base / slug).glob("*.yaml")):
            try:
                data = yaml.safe_load(arm_file.read_text()) or {}
            except yaml.YAMLError:
                continue  # composing the arm reports the file's own error
            for entry in (data.get("defaults") if isinstance(data, dict) else None) or []:
                if isinstance(entry, str) and entry != "_self_":
                    other = entry.lstrip("/").removeprefix("experiment/").split("/", 1)[0]
                    if other != slug and (base / other).is_dir():
                        visit(other, (*seen, slug))
        order.append(slug)

    visit(paper, ())
    return order


def arm_packages(root: str | Path, paper: str, arm: str) -> list[str]:
    """The packages of the arm files `<paper>/<arm>` extends through its defaults (transitively;
    `/experiment/<other>/<arm>` or an arm of its own package), the most general first, `paper`
    last; each once. An arm built on another package's arm is that arm at every scale, so it
    takes that package's scale file before its own."""
    base = Path(root) / "experiments"
    order: list[str] = []

    def visit(slug: str, name: str, seen: frozenset[tuple[str, str]]) -> None:
        path = base / slug / f"{name}.yaml"
        if (slug, name) in seen or not path.is_file():
            return
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            data = {}  # composing the arm reports the file's own error
        for entry in (data.get("defaults") if isinstance(data, dict) else None) or []:
            if isinstance(entry, str) and entry != "_self_" and not entry.startswith("override"):
                other, _, other_arm = entry.lstrip("/").removeprefix("experiment/").rpartition("/")
                visit(other or slug, other_arm, seen | {(slug, name)})
        if slug not in order:
            order.append(slug)

    visit(paper, arm, frozenset())
    if paper in order:  # the arm's own package last, whatever its arms extend
        order.remove(paper)
    return [*order, paper]


def _import_package(root: Path, paper: str) -> None:
    pkg_dir = root / "experiments" / paper
    if not pkg_dir.is_dir() or not any(pkg_dir.glob("*.py")):
        return
    name = f"experiments.{paper}"
    if name not in sys.modules:
        init = pkg_dir / "__init__.py"
        if init.exists():
            spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(pkg_dir)]
            )
        else:  # no __init__.py: a bare package holding the paper's modules
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(pkg_dir)]
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            if spec.loader is not None:
                spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    for py in sorted(pkg_dir.glob("*.py")):
        if py.stem != "__init__":
            importlib.import_module(f"{name}.{py.stem}")

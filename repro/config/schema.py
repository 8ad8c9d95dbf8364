"""Typed configs: the composed job config checked against pydantic models before any compute.

    validate(cfg, choices, overrides)     # ConfigError: one line naming the key and its file

Every group has a model with `extra="forbid"`, so a misspelled key anywhere (an arm file, a scale
file, a command-line override) fails with the key, the file it came from and the valid keys; ints
must be ints (no `steps=1.5`, no `seed="3"`), floats finite. Trainer configs are the models in
`repro.config.trainer_schemas` (picked by `trainer.name`); stage functions (reward, advantage,
is_weight, objective, agg) are checked by name and keyword on a tiny dummy batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from repro.config.env import CONF_DIR
from repro.config.schema_errors import first_error
from repro.errors import ConfigError

MAX_SEED = 2**31 - 1
# Micro base models shipped in repro/bases/micro/base<k>/ (k = their pretraining seed).
N_BASES = 3


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StageFn(Strict):
    name: str = Field(description="registered function name (repro/algos registries)")
    kw: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments")


class MicroArch(Strict):
    hidden: int = Field(ge=1)
    intermediate: int = Field(ge=1)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    max_len: int = Field(ge=8)


class MicroPretrain(Strict):
    steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    seq_len: int = Field(ge=8)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    mixture: dict[str, Annotated[float, Field(ge=0)]] = Field(description="document share per source")


class MicroModel(Strict):
    kind: Literal["micro"]
    base: int = Field(
        ge=0,
        le=N_BASES - 1,
        description="base model = its pretraining seed (repro/bases/micro/base<k>); null in YAML: (seed - 1) "
        f"mod {N_BASES}",
    )
    arch: MicroArch
    pretrain: MicroPretrain


class HFModel(Strict):
    kind: Literal["hf"]
    name: str | None = None
    path: str = Field(description="hub id or local folder")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: bool = False


class PipSource(Strict):
    package: str
    version: str
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class GGUFPipModel(Strict):
    kind: Literal["gguf_pip"]
    name: str
    pip: PipSource
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: bool = False


Model = Annotated[MicroModel | HFModel | GGUFPipModel, Field(discriminator="kind")]
MODEL_KINDS = {"micro": MicroModel, "hf": HFModel, "gguf_pip": GGUFPipModel}


class Paths(Strict):
    root: str
    results_dir: str
    cache_dir: str
    tables_dir: str
    data_dir: str


class Tracking(Strict):
    uri: str = Field(description="MLflow tracking URI (SQLite file or server)")
    experiment: str | None = Field(description="MLflow experiment (default: the paper)")
    record: bool = Field(description="write the run record under results/")
    flush_every: int = Field(ge=1, description="steps between batched metric writes")


class Scale(Strict):
    name: str
    publish: bool = Field(
        True, description="false: records go to <results_dir>/.smoke/ and never reach the tables"
    )


class Root(Strict):
    """The job config minus `trainer` and `task` (checked by their own models)."""

    paper: str | None = Field(description="derived from the experiment path, never typed")
    arm: str | None = Field(description="derived from the experiment path, never typed")
    seed: int = Field(ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = Field(
        description="where models, rollouts, teachers and evaluation run (repro.devices); auto: cuda if any"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        description="compute dtype of forward passes (repro.devices); auto = float32 on CPU, bfloat16 on CUDA"
    )
    stages: dict[str, str] = Field(description="upstream runs by role (repro.pipeline checks the roles)")
    reward: list[StageFn] = Field(min_length=1)
    advantage: StageFn
    is_weight: StageFn
    objective: StageFn
    agg: StageFn
    paths: Paths
    tracking: Tracking
    scale: Scale
    model: Model
    task: dict[str, Any]
    trainer: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Which file a key came from


def _yaml(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _has(node: Any, parts: Sequence[str]) -> bool:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _chain(path: Path, base: Path, seen: set[Path] | None = None) -> list[Path]:
    """`path` and the files its defaults list extends (same group), most specific first."""
    seen = seen or set()
    if path in seen or not path.exists():
        return []
    seen.add(path)
    out = [path]
    for entry in _yaml(path).get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_" and not entry.startswith("override"):
            out += _chain(base / f"{entry.lstrip('/').removeprefix('experiment/')}.yaml", base, seen)
    return out


def source_of(key: str, choices: Mapping[str, Any], overrides: Sequence[str], root: Path) -> str:
    """Where `key` (dotted, maybe with [i]) was set: an override, an arm file, a group file."""
    parts = key.split("[", 1)[0].split(".")
    for o in overrides:
        okey = o.split("=", 1)[0].lstrip("+~").split(".")
        n = min(len(okey), len(parts))
        if okey[:n] == parts[:n]:  # the override sets the key, a node above it, or a key inside it
            return f"command-line override '{o}'"
    rel = lambda p: str(p.relative_to(root)) if p.is_relative_to(root) else str(p)  # noqa: E731
    experiment = choices.get("experiment")
    if experiment:
        base = root / "experiments"
        chain = _chain(base / f"{experiment}.yaml", base)
        # Scale files merge after the arm files: the arm's own package's, then those of the
        # packages it extends (repro.config.compose.arm_packages), most specific first.
        packages = dict.fromkeys([experiment.split("/")[0], *(f.parent.name for f in chain)])
        scale_files = [base / p / "scales" / f"{choices.get('scale')}.yaml" for p in packages]
        for f in [*scale_files, *chain]:
            if _has(_yaml(f), parts):
                return rel(f)
    # Global-package files after group files: smoke sizes, a scale's per-trainer sizes, the scale.
    for group in ("smoke", "scale_trainer", "scale"):
        choice = choices.get(group)
        if choice and _has(_yaml(CONF_DIR / group / f"{choice}.yaml"), parts):
            return rel(CONF_DIR / group / f"{choice}.yaml")
    group, choice = parts[0], choices.get(parts[0])
    if choice:
        for f in _chain(CONF_DIR / group / f"{choice}.yaml", CONF_DIR / group):
            if _has(_yaml(f), parts[1:]):
                return rel(f)
    return rel(CONF_DIR / "config.yaml")


# ---------------------------------------------------------------------------------------------
# Validation


def _fail(key: str, what: str, choices, overrides, root: Path, valid: Sequence[str] = ()) -> ConfigError:
    hint = f"; valid keys: {', '.join(valid)}" if valid else ""
    return ConfigError(f"{key}: {what} (in {source_of(key, choices, overrides, root)}){hint}")


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> list[str]:
    """Field names of the (sub)model an 'unknown key' error points into."""
    if loc[:1] == ("model",) and len(loc) > 1 and isinstance(data, dict):
        model, loc = MODEL_KINDS.get((data.get("model") or {}).get("kind"), model), loc[1:]
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def check(model: type[BaseModel], data: Any, prefix: str, choices, overrides, root: Path) -> BaseModel:
    """`model(**data)` or ConfigError naming the first bad key under `prefix` and its file."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["loc"][:1] == ("model",) and len(err["loc"]) > 1 and err["loc"][1] in MODEL_KINDS:
            err["loc"] = ("model", *err["loc"][2:])  # drop the union's tag: model.micro.arch -> model.arch
        key, what = first_error(err, prefix)
        valid = _valid_keys(model, tuple(err["loc"]), data) if err["type"] == "extra_forbidden" else ()
        raise _fail(key, what, choices, overrides, root, valid) from None


def validate(cfg: DictConfig, choices: Mapping[str, Any], overrides: Sequence[str], before=None) -> None:
    """Check the whole job config (see the module docstring); raises ConfigError. `before()` runs
    before the trainer's schema is looked up if no built-in trainer has that name (it imports the
    paper's modules, which may register their own trainer's schema)."""
    from repro.config.trainer_schemas import TRAINER_CONFIGS

    root = Path(str(OmegaConf.select(cfg, "paths.root", default=".")))
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config does not resolve: {exc}") from None
    check(Root, data, "", choices, overrides, root)
    name = data["trainer"].get("name")
    if name not in TRAINER_CONFIGS and before is not None:
        before()
    if name not in TRAINER_CONFIGS:
        valid = sorted(TRAINER_CONFIGS)
        raise _fail("trainer.name", f"unknown trainer {name!r}", choices, overrides, root, valid)
    check(TRAINER_CONFIGS[name], data["trainer"], "trainer", choices, overrides, root)

"""Chained stages: a run that starts from, or learns from, another arm's trained model.

An arm declares its upstream stages in config, by role:

    stages:
      teacher: <paper>/<sft arm>     # trainer.teacher := that arm's final checkpoint
      init: <paper>/<arm>            # model := that arm's checkpoint (start from it)

The upstream arm is composed with the same seed and the same non-trainer overrides (scale, task,
model, ...) as the run that needs it, so `repro reproduce <paper> scale=tiny` chains tiny stages.
Its output is `<cache_dir>/checkpoints/<config hash>/seed<N>/` (repro.trainers.common; the
upstream arm must save its model, `trainer.save: true`, the default of sft and eval_only): a stage
whose output exists is reused, not recomputed; one that is missing is run first (as a normal,
tracked and recorded run of its own arm), under a file lock so parallel jobs that need the same
stage wait for one another instead of training it twice.

    stages = plan(cfg, overrides)        # cheap: compose upstream configs, locate their outputs
    cfg = apply(cfg, stages)             # trainer.teacher / model point at those outputs
    ensure(stages, run_one)              # run the missing ones (raises StageError if one fails)

The runner is passed in (`ensure(stages, runner.run_one)`): this module sits below the runner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from repro.config import compose_once
from repro.errors import ConfigError
from repro.locking import file_lock
from repro.provenance import checkpoint_dir

log = logging.getLogger(__name__)

ROLES = ("teacher", "init")
# Overrides that belong to the downstream run only: its arm, its seed, its own trainer settings.
_NOT_INHERITED = ("experiment", "seed", "trainer", "stages", "hydra")
MAX_DEPTH = 8  # a longer chain is almost surely a cycle


class StageError(RuntimeError):
    """An upstream stage failed or produced no checkpoint."""


@dataclass(frozen=True)
class Stage:
    role: str  # teacher | init
    experiment: str  # <paper>/<arm>
    cfg: DictConfig  # the upstream run's composed config
    overrides: tuple[str, ...]  # what `repro run` would get to run it
    output: Path  # its checkpoint dir

    @property
    def done(self) -> bool:
        return (self.output / "config.json").exists()


def inherited(overrides: Sequence[str] | None) -> list[str]:
    """The overrides an upstream stage shares with the run that needs it."""
    keep = []
    for o in overrides or []:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0].split("/", 1)[0] not in _NOT_INHERITED:
            keep.append(o)
    return keep


def plan(cfg: DictConfig, overrides: Sequence[str] | None, _depth: int = 0) -> list[Stage]:
    """The upstream stages `cfg.stages` declares, composed and located (nothing runs)."""
    declared = OmegaConf.select(cfg, "stages")
    declared = {} if declared is None else declared
    if not isinstance(declared, DictConfig | dict):
        raise ConfigError(f"stages: expected a mapping role -> <paper>/<arm>, got {declared!r}")
    if declared and _depth >= MAX_DEPTH:
        raise ConfigError(
            f"stages: chain deeper than {MAX_DEPTH} (a cycle?) at {cfg.get('paper')}/{cfg.get('arm')}"
        )
    stages = []
    for role, experiment in declared.items():
        if role not in ROLES:
            raise ConfigError(f"stages.{role}: unknown role; valid roles: {', '.join(ROLES)}")
        if not isinstance(experiment, str) or experiment.count("/") != 1:
            raise ConfigError(f"stages.{role}: expected '<paper>/<arm>', got {experiment!r}")
        if experiment == f"{cfg.get('paper')}/{cfg.get('arm')}":
            raise ConfigError(f"stages.{role}: {experiment} cannot be its own upstream stage")
        up_overrides = [f"experiment={experiment}", f"seed={cfg.seed}", *inherited(overrides)]
        try:
            up = compose_once(*up_overrides)
        except ConfigError as exc:  # a bad arm file or value upstream
            raise ConfigError(f"stages.{role}: {experiment}: {exc}") from None
        except Exception as exc:  # e.g. a missing arm file: Hydra lists what it looked for
            raise ConfigError(f"stages.{role}: cannot compose {experiment}: {exc}") from None
        if not OmegaConf.select(up, "trainer.save", default=False):
            raise ConfigError(
                f"stages.{role}: {experiment} does not keep its model (trainer.save: false); set "
                f"`trainer: {{save: true}}` in its arm file"
            )
        plan(up, up_overrides, _depth + 1)  # validate its own chain (and catch cycles)
        stages.append(Stage(role, experiment, up, tuple(up_overrides), checkpoint_dir(up)))
    return stages


def apply(cfg: DictConfig, stages: Sequence[Stage]) -> DictConfig:
    """A copy of cfg whose teacher / starting model are the stages' outputs."""
    if not stages:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        for st in stages:
            if st.role == "teacher":
                cfg.trainer.teacher = str(st.output)
            elif st.role == "init":
                cfg.model = OmegaConf.create({"kind": "hf", "path": str(st.output), "dtype": "float32"})
    return cfg


def ensure(stages: Sequence[Stage], run_one: Callable[..., dict | None]) -> None:
    """Run every stage whose output is missing with `run_one(cfg, overrides=...)` (a tracked,
    recorded run of its arm); reuse the rest."""
    for st in stages:
        with file_lock(st.output.with_name(st.output.name + ".lock")):
            if st.done:
                log.info("stage %s: reusing %s", st.experiment, st.output)
                continue
            log.info("stage %s: no output at %s, running it first", st.experiment, st.output)
            result = run_one(st.cfg, overrides=list(st.overrides))
            if result is None or not st.done:
                raise StageError(
                    f"upstream stage {st.experiment} (seed {st.cfg.seed}) failed or saved no checkpoint "
                    f"at {st.output}; see its run record"
                )

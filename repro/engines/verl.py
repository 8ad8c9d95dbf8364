"""repro's objectives and rewards inside verl, for runs that need many GPUs or nodes.

    repro export verl experiment=<paper>/<arm> [scale=paper] [overrides]   # prints verl's command
    python3 -m verl.trainer.main_ppo <the printed overrides>                # verl trains

When to use it: repro's own trainers run one process on one device (CPU, or one GPU with the vLLM
backend), which covers the micro, small and single-GPU paper-scale runs. A 7B-30B model, or a
sweep that must finish in hours, needs FSDP/Megatron sharding and a rollout fleet: verl's job.
What stays in repro: the arm's config (the export reads it), the loss and reward code (verl calls
it from here), and the claims and tables (`repro tables` reads repro's run records; a verl run's
numbers enter a table only once recorded as a repro run, which this adapter does not do).

What verl gets, through its own plug points:
1. Policy losses, through `verl.trainer.ppo.core_algos.register_policy_loss`: every objective of
   repro's OBJECTIVES registry as `repro_<name>` (today `repro_clip`: PPO/GRPO/DAPO at token level,
   GSPO with `level: sequence`, any registered rescue rule and stats hooks). verl passes token-level
   advantages (B, T); repro's objectives take one advantage per sequence (GRPO-family estimators
   give every token of a sequence the same value), so the adapter takes their masked mean. eps comes
   from verl's `actor.clip_ratio_low/high`; the rest of `objective.kw` from the arm. verl's own
   rollout-correction weights (TIS: `algorithm.rollout_correction.rollout_is=token`, what repro's
   `is_weight: tis` becomes) multiply the per-token loss, as `loss_mat * w` does in repro, and
   verl's `agg_loss` aggregates with its data-parallel normalisation.
2. A reward function (`reward.custom_reward_function`): `compute_score` scores a completion with
   the arm's REWARDS on the arm's task verifier.
Workers find the arm in the environment variable REPRO_VERL_SPEC (JSON: objective name and kw,
rewards, task config, paper, repro root), set for every Ray worker through
`ray_kwargs.ray_init.runtime_env.env_vars`; they import this module through
`actor_rollout_ref.model.external_lib` and import the paper's own modules (e.g. its rescue rules)
from the repro root, which every node must see (a shared filesystem, or the same checkout).

Not mapped (the export refuses them with a one-line error): trainers other than grpo, advantage
functions other than grpo / mean_only, several reward channels, models that are not an HF hub id
or folder (micro, gguf_pip). `nox -s verl` installs verl (CPU) and checks that a loss fetched
through verl's `get_policy_loss_fn` equals repro's own on identical tensors, values and gradients.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shlex
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from repro.algos import OBJECTIVES, REWARDS
from repro.algos.rewards import RewardContext
from repro.errors import ConfigError

SPEC_ENV = "REPRO_VERL_SPEC"
LOSS_PREFIX = "repro_"

# repro aggregation -> verl loss_agg_mode (the same formulas: verl's `agg_loss`).
AGG_MODES = {
    "token_mean": "token-mean",
    "seq_mean_token_mean": "seq-mean-token-mean",
    "seq_mean_token_sum_norm": "seq-mean-token-sum-norm",
}
# ours: verl settings repro has no counterpart for, set so that verl does what repro's trainer does.
MAX_PROMPT_LENGTH = 512  # ours: GSM8K prompts are < 300 tokens
MICRO_BATCH_PER_GPU = 4  # ours: memory only
PLAIN_PROMPT_TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


# ---------------------------------------------------------------------------------------------
# The arm, as the workers see it


def spec_of(cfg: DictConfig) -> dict[str, Any]:
    """What verl's workers need of a finalized arm config (JSON-able)."""
    objective = OmegaConf.to_container(cfg.objective, resolve=True)
    kw = {k: v for k, v in objective["kw"].items() if k not in ("eps_low", "eps_high")}
    return {
        "objective": {"name": objective["name"], "kw": kw},
        "rewards": OmegaConf.to_container(cfg.reward, resolve=True),
        "task": OmegaConf.to_container(cfg.task, resolve=True),
        "paper": cfg.get("paper"),
        "root": str(OmegaConf.select(cfg, "paths.root")),
        "seed": int(cfg.seed),
    }


def encode_spec(spec: dict[str, Any]) -> str:
    """The spec as one shell- and Hydra-safe token (URL-safe base64 of its JSON, no `=` padding:
    Hydra's override grammar reads `=` as the key/value separator)."""
    return base64.urlsafe_b64encode(json.dumps(spec, sort_keys=True).encode()).decode().rstrip("=")


def decode_spec(text: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


@functools.cache
def current_spec() -> dict[str, Any]:
    """The arm this process serves (from REPRO_VERL_SPEC), its paper's modules imported."""
    text = os.environ.get(SPEC_ENV)
    if not text:
        raise ConfigError(
            f"{SPEC_ENV} is not set: run verl with the overrides `repro export verl experiment=...` prints"
        )
    spec = decode_spec(text)
    if spec.get("paper"):
        from repro.config import import_paper_modules

        import_paper_modules(spec["root"], spec["paper"])
    return spec


# ---------------------------------------------------------------------------------------------
# Policy losses and the reward function


_GENERATORS: dict[torch.device, torch.Generator] = {}


def generator(device: torch.device) -> torch.Generator:
    """The stream stochastic objectives draw from on `device` (seeded with the arm's seed)."""
    if device not in _GENERATORS:
        _GENERATORS[device] = torch.Generator(device).manual_seed(current_spec()["seed"])
    return _GENERATORS[device]


def reseed(seed: int, device: torch.device | str = "cpu") -> None:
    """Restart `device`'s stream at `seed` (tests compare against repro's own draws)."""
    generator(torch.device(device)).manual_seed(seed)


def sequence_advantage(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's token-level advantages (B, T) -> one per sequence (B,): their masked mean."""
    m = mask.to(advantages.dtype)
    return (advantages * m).sum(-1) / m.sum(-1).clamp(min=1)


def policy_loss(name: str):
    """repro's OBJECTIVES[name] with verl's policy-loss signature (see the module docstring)."""

    def loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config=None,
        rollout_is_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from verl.trainer.ppo.core_algos import agg_loss

        mask = response_mask.bool()  # (B, T)
        eps = config.clip_ratio
        kw = dict(current_spec()["objective"]["kw"])
        kw["eps_low"] = config.clip_ratio_low if config.clip_ratio_low is not None else eps
        kw["eps_high"] = config.clip_ratio_high if config.clip_ratio_high is not None else eps
        adv = sequence_advantage(advantages, mask)  # (B,)
        loss_mat, stats = OBJECTIVES[name](
            log_prob, old_log_prob, adv, mask, generator=generator(log_prob.device), **kw
        )  # (B, T)
        if rollout_is_weights is not None:
            loss_mat = loss_mat * rollout_is_weights
        batch_info = dict(getattr(config, "global_batch_info", None) or {})
        loss = agg_loss(loss_mat=loss_mat, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **batch_info)
        metrics = {f"actor/{k}": float(v) for k, v in stats.items()}
        metrics["actor/pg_clipfrac"] = metrics.get("actor/clipfrac", 0.0)  # verl's dashboards
        return loss, metrics

    loss_fn.__name__ = f"{LOSS_PREFIX}{name}"
    loss_fn.__doc__ = f"repro's `{name}` objective as a verl policy loss.\n\n{OBJECTIVES[name].__doc__}"
    return loss_fn


@functools.cache
def _task(task_json: str):
    from repro.tasks import build_task

    return build_task(OmegaConf.create(json.loads(task_json)))


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info=None, **_: Any) -> float:
    """verl's custom reward function: the arm's reward of one completion (verl takes one scalar)."""
    spec = current_spec()
    task = _task(json.dumps(spec["task"], sort_keys=True))
    ctx = RewardContext([solution_str], [ground_truth], torch.zeros(1, dtype=torch.long), task.verify)
    (reward,) = spec["rewards"]  # the export allows one channel only
    return float(REWARDS[reward["name"]](ctx, **reward.get("kw", {}))[0])


def register() -> list[str]:
    """Register every repro objective as a verl policy loss `repro_<name>`; returns the names."""
    from verl.trainer.ppo.core_algos import register_policy_loss

    names = []
    for name in OBJECTIVES.names():
        register_policy_loss(f"{LOSS_PREFIX}{name}")(policy_loss(name))
        names.append(f"{LOSS_PREFIX}{name}")
    return names


# ---------------------------------------------------------------------------------------------
# `repro export verl`


def _fail(key: str, what: str) -> ConfigError:
    return ConfigError(f"{key}: {what} (repro export verl)")


def overrides(cfg: DictConfig) -> list[str]:
    """verl `main_ppo` overrides that run the arm `cfg` (a finalized repro config)."""
    t = cfg.trainer
    if t.name != "grpo":
        raise _fail("trainer.name", f"only the grpo trainer maps onto verl's PPO loop, not {t.name!r}")
    if cfg.model.kind != "hf":
        raise _fail(
            "model.kind",
            f"verl loads an HF hub id or folder (model=hf or scale=paper), not {cfg.model.kind!r}",
        )
    if len(cfg.reward) != 1:
        raise _fail("reward", f"verl takes one scalar reward; this arm has {len(cfg.reward)} channels")
    if cfg.agg.name not in AGG_MODES:
        raise _fail("agg.name", f"{cfg.agg.name!r} has no verl loss_agg_mode; mapped: {', '.join(AGG_MODES)}")
    adv, adv_kw = cfg.advantage.name, dict(cfg.advantage.kw)
    if adv not in ("grpo", "mean_only") or set(adv_kw) - {"scale_std"}:
        raise _fail("advantage", f"{adv} {adv_kw or ''} has no verl counterpart; mapped: grpo, mean_only")
    norm_by_std = adv == "grpo" and adv_kw.get("scale_std", True)
    if t.prompts_per_step % t.minibatches:
        raise _fail("trainer.minibatches", f"must divide prompts_per_step ({t.prompts_per_step}) for verl")
    kw = cfg.objective.kw
    out = [
        "algorithm.adv_estimator=grpo",
        f"algorithm.norm_adv_by_std_in_grpo={norm_by_std}",
        "algorithm.use_kl_in_reward=False",
        f"data.train_batch_size={t.prompts_per_step}",
        f"data.max_prompt_length={MAX_PROMPT_LENGTH}",
        f"data.max_response_length={t.max_new_tokens}",
        f"actor_rollout_ref.model.path={cfg.model.path}",
        "actor_rollout_ref.model.external_lib=repro.engines.verl",
        f"actor_rollout_ref.actor.policy_loss.loss_mode={LOSS_PREFIX}{cfg.objective.name}",
        f"actor_rollout_ref.actor.clip_ratio_low={kw.get('eps_low', 0.2)}",
        f"actor_rollout_ref.actor.clip_ratio_high={kw.get('eps_high', 0.2)}",
        f"actor_rollout_ref.actor.loss_agg_mode={AGG_MODES[cfg.agg.name]}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={t.prompts_per_step // t.minibatches}",
        f"actor_rollout_ref.actor.ppo_epochs={t.epochs}",
        # ours: sequences per forward pass per GPU (memory, not results; verl requires them)
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={MICRO_BATCH_PER_GPU}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={MICRO_BATCH_PER_GPU}",
        f"actor_rollout_ref.actor.optim.lr={t.lr}",
        f"actor_rollout_ref.actor.optim.weight_decay={t.weight_decay}",
        "actor_rollout_ref.actor.optim.betas=[0.9,0.99]",  # repro.trainers.common.optimizer
        f"actor_rollout_ref.actor.grad_clip={t.grad_clip}",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.rollout.n={t.group_size}",
        f"actor_rollout_ref.rollout.temperature={t.temperature}",
        "actor_rollout_ref.rollout.top_p=1.0",
        "actor_rollout_ref.rollout.top_k=-1",
        f"trainer.total_training_steps={t.steps}",
        f"trainer.test_freq={t.eval_every}",
        f"trainer.project_name=repro_{cfg.paper}",
        f"trainer.experiment_name={cfg.arm}_s{cfg.seed}",
        f"reward.custom_reward_function.path={Path(__file__).resolve()}",
        "reward.custom_reward_function.name=compute_score",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.{SPEC_ENV}={encode_spec(spec_of(cfg))}",
    ]
    if cfg.agg.name == "seq_mean_token_sum_norm" and cfg.agg.kw.get("norm_len"):
        out.append(f"actor_rollout_ref.actor.loss_scale_factor={cfg.agg.kw.norm_len}")
    if cfg.is_weight.name == "tis":
        cap = cfg.is_weight.kw.get("cap", 2.0)
        out += [
            "algorithm.rollout_correction.rollout_is=token",
            f"algorithm.rollout_correction.rollout_is_threshold={cap}",
        ]
    elif cfg.is_weight.name != "none":
        raise _fail("is_weight.name", f"{cfg.is_weight.name!r} has no verl counterpart; mapped: none, tis")
    if not cfg.task.get("chat_template", False):
        # verl always renders prompts through the chat template; this one renders them as they are.
        out.append(f'actor_rollout_ref.model.custom_chat_template="{PLAIN_PROMPT_TEMPLATE}"')
    return out


def command(cfg: DictConfig, data_dir: str = "$DATA") -> str:
    """The shell command (with comments) that runs arm `cfg` on verl's PPO entry point."""
    spec = spec_of(cfg)
    lines = [
        f"# {cfg.paper}/{cfg.arm} seed {cfg.seed} at scale={cfg.scale.name}, on verl (repro export verl)",
        f"# {SPEC_ENV} = {json.dumps(spec, sort_keys=True)}",
        f"# data: train/test parquet in verl's RLHF format ({{prompt: [{{role: user, content}}], "
        f"reward_model: {{ground_truth}}}}) under {data_dir}; `repro export verl --data <dir>` writes them",
        "# set trainer.n_gpus_per_node / trainer.nnodes for your cluster (README: Scaling out)",
        "python3 -m verl.trainer.main_ppo \\",
    ]
    args = [
        *overrides(cfg),
        f"data.train_files={data_dir}/train.parquet",
        f"data.val_files={data_dir}/test.parquet",
    ]
    args += ["trainer.n_gpus_per_node=1", "trainer.nnodes=1"]
    # Quoted for the shell, except the data paths, so that $DATA expands.
    lines += [f"    {a if a.startswith('data.') and '$' in a else shlex.quote(a)} \\" for a in args]
    lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines)


def write_data(cfg: DictConfig, out: str | Path, n_train: int | None = None) -> tuple[Path, Path]:
    """train.parquet (the arm's budget of prompts drawn from its task, seed 0) and test.parquet
    (its eval split) in verl's RLHF dataset format. Needs pandas and pyarrow."""
    import random

    import pandas as pd

    from repro.tasks import build_task

    task = build_task(cfg.task)
    t = cfg.trainer
    train = task.sample_problems(random.Random(0), n_train or t.steps * t.prompts_per_step)
    test = task.eval_set(task.eval_splits[0], t.eval_n)

    def rows(problems, split):
        return [
            {
                "data_source": f"repro/{cfg.task.kind}",
                "prompt": [{"role": "user", "content": p.prompt}],
                "ability": cfg.task.kind,
                "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
                "extra_info": {"split": split, "index": i},
            }
            for i, p in enumerate(problems)
        ]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.parquet", out / "test.parquet"
    try:
        pd.DataFrame(rows(train, "train")).to_parquet(paths[0])
        pd.DataFrame(rows(test, "test")).to_parquet(paths[1])
    except ImportError as e:
        raise ConfigError(f"--data: writing parquet needs pyarrow ({e}); pip install pyarrow") from None
    return paths


# verl is optional: `repro export verl` works without it; with it, importing this module registers.
try:
    import verl.trainer.ppo.core_algos  # noqa: F401
except ImportError:
    pass
else:
    register()

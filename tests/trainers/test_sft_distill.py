"""The supervised and distillation trainers (sft, opd, offline_distill) at scale=tiny: they run,
log finite losses and the eval/retention/drift metrics, are deterministic, reject bad values by
key; LoRA trains only adapters; OPD against itself has zero KL; an SFT checkpoint can teach."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra_helpers import compose, train
from safetensors.torch import load_file

from repro.errors import ConfigError
from repro.models.micro import load_or_pretrain
from repro.trainers.common import checkpoint_dir

ROOT = Path(__file__).resolve().parents[2]
EVAL_KEYS = [
    "eval/id/greedy_acc",
    "eval/ood/greedy_acc",
    "eval/retention/facts_acc",
    "eval/retention/truths_acc",
    "retention/forgetting",
    "retention/ratio",
    "drift/mmd2",
    "drift/centroid",
    "drift/sliced_w1",
    "drift/jaccard",
    "drift_policy/mmd2",
]


@pytest.mark.parametrize(
    "overrides",
    [["trainer=sft"], ["trainer=sft", "trainer.lora=null"], ["trainer=opd"], ["trainer=offline_distill"]],
    ids=["sft_lora", "sft_full", "opd", "offline_distill"],
)
def test_trainer_runs_and_logs_metrics(overrides):
    cfg = compose(*overrides, "scale=tiny")
    final, curves = train(cfg)
    losses = [v for _, v in curves["train/loss"]]
    assert len(losses) == cfg.trainer.steps
    assert all(math.isfinite(v) and v > 0 for v in losses)
    for key in EVAL_KEYS:
        assert curves[key][0][0] == 0  # evaluated before training
        assert math.isfinite(final[key]), key
    assert curves["retention/forgetting"][0][1] == 0.0  # step 0 is the reference
    assert curves["retention/ratio"][0][1] == 1.0
    for key in ("eval/id/greedy_acc", "eval/retention/facts_acc", "drift/jaccard"):
        assert 0.0 <= final[key] <= 1.0


def test_sft_lora_trains_only_adapters_and_saves_a_loadable_checkpoint():
    cfg = compose("trainer=sft", "scale=tiny", "trainer.lr=1e-2")
    train(cfg)
    base = load_file(load_or_pretrain(cfg.task, cfg.model, cfg.paths.cache_dir) / "model.safetensors")
    tuned = load_file(checkpoint_dir(cfg) / "model.safetensors")
    assert base.keys() == tuned.keys()  # LoRA merged: a plain model
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all("proj" in k for k in changed)  # linear layers only (LoRA targets)
    assert not any("embed" in k or "norm" in k for k in changed)

    full = compose("trainer=sft", "scale=tiny", "trainer.lr=1e-2", "trainer.lora=null")
    train(full)
    tuned = load_file(checkpoint_dir(full) / "model.safetensors")
    assert any(not torch.equal(base[k], tuned[k]) for k in base if "embed" in k)


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl"])
def test_opd_with_teacher_equal_to_student_has_zero_kl(loss):
    # A near-zero lr keeps the student equal to its teacher at every step: Adam turns the float-noise
    # gradient of a zero KL (~1e-8) into an lr-sized step, so at a real lr the two drift apart by
    # an amount that depends on which completions were sampled.
    cfg = compose(
        "trainer=opd", "scale=tiny", f"trainer.loss={loss}", "trainer.teacher=null", "trainer.lr=1e-12"
    )
    _, curves = train(cfg)
    assert curves["train/loss"][0][1] == pytest.approx(0.0, abs=1e-6)
    assert all(abs(v) < 1e-4 for _, v in curves["train/loss"])


def test_opd_learns_from_an_sft_checkpoint():
    sft = compose("trainer=sft", "scale=tiny", "trainer.lora=null", "seed=2")
    train(sft)
    cfg = compose(
        "trainer=opd", "scale=tiny", f"trainer.teacher={checkpoint_dir(sft)}", "trainer.loss=reverse_kl"
    )
    _, curves = train(cfg)
    assert all(v > 0 and math.isfinite(v) for _, v in curves["train/loss"])  # teacher != student


@pytest.mark.parametrize("trainer", ["sft", "opd"])
def test_same_config_and_seed_same_numbers(trainer):
    cfg = compose(f"trainer={trainer}", "scale=tiny", "seed=3", "trainer.steps=2")
    a, ca = train(cfg)
    b, cb = train(cfg)
    assert ca == cb
    a.pop("train/seconds"), b.pop("train/seconds")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe equality


@pytest.mark.parametrize(
    "trainer,override,match",
    [
        ("sft", "trainer.lora.r=0", r"trainer\.lora\.r"),
        ("sft", "trainer.lora.dropout=1.0", r"trainer\.lora\.dropout"),
        ("sft", "trainer.epochs=0", r"trainer\.epochs"),
        ("sft", "trainer.batch_size=0", r"trainer\.batch_size"),
        ("opd", "trainer.continuation_tokens=0", r"trainer\.continuation_tokens"),
        ("opd", "trainer.loss=nope", r"trainer\.loss.*continuation, forward_kl, reverse_kl"),
        ("opd", "trainer.teacher=/no/such/dir", r"trainer\.teacher"),
        ("offline_distill", "trainer.prompts_per_step=0", r"trainer\.prompts_per_step"),
        ("offline_distill", "trainer.drift_n=1", r"trainer\.drift_n"),
    ],
)
def test_bad_values_rejected_before_compute(trainer, override, match):
    with pytest.raises(ConfigError, match=match):
        compose(f"trainer={trainer}", "scale=tiny", override)


LORA = "trainer.lora={r:4,alpha:8,dropout:0.0,target_modules:all-linear}"


@pytest.mark.parametrize(
    "overrides",
    [["trainer=sft"], ["trainer=opd", "trainer.teacher=null", LORA], ["trainer=offline_distill", LORA]],
    ids=["sft", "opd", "offline_distill"],
)
def test_lora_policy_at_step_0_shows_no_drift(overrides):
    """The base model's states and the LoRA policy's own states at step 0 (adapters = identity) come
    through the same rollout path with the same seed: identical states, zero policy drift (the
    engine hands peft models to transformers.generate: base states sampled by the engine would
    differ from the policy's by the sampler alone)."""
    cfg = compose(*overrides, "scale=tiny", "trainer.steps=1")
    assert cfg.trainer.lora is not None and cfg.trainer.rollout == "engine"
    _, curves = train(cfg)
    step0 = {k: v[0] for k, v in curves.items() if k.startswith("drift_policy/")}
    assert step0["drift_policy/jaccard"] == (0, 1.0)
    assert step0["drift_policy/centroid"] == (0, 0.0)

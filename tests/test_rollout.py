"""Rollouts: masks, and the sampler's log-probs equal the learner's teacher-forced log-probs."""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from repro.models.micro import build_model, build_tokenizer
from repro.rollout import HFGenerateBackend, completion_mask, sequence_logits, token_logp
from repro.tasks.arith import ArithWorld


@pytest.fixture(scope="module")
def policy():
    world = ArithWorld()
    tok = build_tokenizer(world.vocab_words())
    arch = OmegaConf.create(dict(hidden=32, intermediate=64, layers=2, heads=2, max_len=96))
    return world, build_model(arch, len(tok), 0), tok


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    want = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(completion_mask(ids, eos_id=2), want)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logp_matches_teacher_forcing(policy, temperature):
    world, model, tok = policy
    prompts = [p.prompt for p in world.sample_problems(random.Random(0), 5)]  # mixed lengths: left padding
    roll = HFGenerateBackend(tok).generate(
        model, prompts, n=3, max_new_tokens=10, temperature=temperature, seed=0
    )
    B, T = roll.completion_ids.shape
    assert B == 15 and roll.completion_mask.shape == (B, T)
    with torch.no_grad():
        logp = token_logp(sequence_logits(model, roll), roll.completion_ids, temperature)
    mask = roll.completion_mask
    # A sampled pad token (random weights, full softmax) is masked out of the completion, so teacher
    # forcing then sees a different context than the sampler did: compare rows without one.
    later = mask.long().flip(1).cumsum(1).flip(1) > 0  # a kept token at or after this position
    m = mask & ~(~mask & later).any(1, keepdim=True)
    assert m.sum() > 50
    assert torch.allclose(logp[m], roll.sampler_logp[m], atol=1e-4)
    assert (roll.sampler_logp[~mask] == 0).all() and (roll.completion_ids[~mask] == tok.pad_token_id).all()
    # groups are contiguous: the first 3 rows share prompt 0
    assert torch.equal(roll.prompt_ids[0], roll.prompt_ids[2])


def test_same_seed_same_rollout(policy):
    world, model, tok = policy
    prompts = [p.prompt for p in world.sample_problems(random.Random(1), 4)]
    be = HFGenerateBackend(tok)
    a = be.generate(model, prompts, n=2, max_new_tokens=8, temperature=1.0, seed=7)
    b = be.generate(model, prompts, n=2, max_new_tokens=8, temperature=1.0, seed=7)
    assert a.texts == b.texts and torch.equal(a.sampler_logp, b.sampler_logp)

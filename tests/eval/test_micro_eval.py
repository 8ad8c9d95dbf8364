"""Evaluation of all splits in one batched pass (repro.eval.micro.split_accuracies) against one
generate call per split: greedy results identical, each split cut to its own token budget.

    pytest tests/eval/test_micro_eval.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra_helpers import compose

from repro.eval.micro import accuracy, split_accuracies
from repro.models import load_policy
from repro.rollout import make_backend
from repro.tasks import build_task


@pytest.fixture(scope="module")
def base():
    """The shipped micro base 0: completions end at eos after varied lengths."""
    cfg = compose("trainer=grpo")
    torch.set_num_threads(1)
    model, tok = load_policy(cfg)
    return model.eval(), tok, build_task(cfg.task, tok)


@pytest.mark.parametrize("backend", ["engine", "hf"])
def test_one_pass_equals_one_call_per_split(base, backend):
    model, tok, task = base
    be = make_backend(backend, tok, task.stop_strings)
    splits = {"id": task.eval_set("id", 40), "ood": task.eval_set("ood", 40)}
    budgets = {"id": 2, "ood": 24}  # id completions ("#### 12 </s>") are cut before their answer
    got = split_accuracies(model, be, splits, budgets, task.verify, greedy=True)
    for split, problems in splits.items():
        want = accuracy(model, be, problems, task.verify, greedy=True, max_new_tokens=budgets[split])
        assert np.array_equal(got[split].correct, want.correct), split
        assert float(got[split]) == float(want)
    assert float(got["ood"]) > 0  # the check compares real answers, not only misses
    sampled = split_accuracies(
        model, be, splits, budgets, task.verify, greedy=False, generator=torch.Generator().manual_seed(0)
    )
    assert {k: len(v.correct) for k, v in sampled.items()} == {"id": 40, "ood": 40}


def test_cut_texts_equal_a_call_at_the_smaller_budget(base):
    """The cut keeps what a call at that budget returns, text for text (`_cut`)."""
    from repro.eval.micro import _cut

    model, tok, task = base
    be = make_backend("engine", tok, task.stop_strings)
    prompts = [p.prompt for p in task.eval_set("id", 30)]
    long = be.generate(model, prompts, n=1, max_new_tokens=24, greedy=True)
    short = be.generate(model, prompts, n=1, max_new_tokens=2, greedy=True)
    assert (long.completion_mask.sum(1) > 2).all()
    assert _cut(tok, long, slice(0, 30), 2) == short.texts
    assert _cut(tok, long, slice(10, 20), 24) == long.texts[10:20]

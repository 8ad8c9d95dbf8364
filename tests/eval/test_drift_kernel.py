"""The evaluator's drift kernel is one per base (repro.eval.micro.HeldOut.bandwidth): the same for an
arm whose rollouts go through the engine (grpo, eval_only) and one whose LoRA-wrapped model goes
through transformers.generate (sft, opd, offline_distill), although their sampled base states
differ; it is saved with a checkpoint's reference for chained stages.

    pytest tests/eval/test_drift_kernel.py
"""

from __future__ import annotations

import pytest
import torch
from hydra_helpers import compose

from repro.eval.micro import HeldOut
from repro.models import load_policy
from repro.rollout import make_backend
from repro.tasks import build_task
from repro.trainers.common import with_lora


@pytest.fixture(scope="module")
def helds():
    """HeldOut of shipped base 0 built as a grpo arm (plain model) and as a LoRA sft arm."""
    torch.set_num_threads(1)
    cfg = compose(
        "experiment=states_not_tokens/stress_sft", "seed=1", "trainer.drift_n=12", "trainer.eval_n=4"
    )
    model, tok = load_policy(cfg)
    task = build_task(cfg.task, tok)
    backend = make_backend("engine", tok, task.stop_strings)
    plain = HeldOut.build(cfg, task, model, tok, backend)
    lora = HeldOut.build(cfg, task, with_lora(model, cfg.trainer.lora, 0), tok, backend)
    return plain, lora


def test_one_bandwidth_for_both_rollout_paths(helds):
    plain, lora = helds
    assert plain.base_states != lora.base_states  # sampled states differ between the two paths
    assert plain.bandwidth == lora.bandwidth > 0  # the kernel does not
    assert plain.bandwidth_nostyle == lora.bandwidth_nostyle > 0


def test_the_reference_carries_the_kernel(helds):
    plain, _ = helds
    ref = plain.reference()
    assert ref["bandwidth"] == plain.bandwidth and ref["bandwidth_nostyle"] == plain.bandwidth_nostyle
    assert ref["completions"] == plain.base_completions and len(ref["completions"]) == 12

"""two_rewards_rlif: the summary's >99% penalty (reference and properties), the micro world's
`direct_wrong` option, the trainer's label-free diagnostics on a tiny run, and the claims file."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from hydra_helpers import compose, train
from hypothesis import given, settings
from hypothesis import strategies as st

from repro import config
from repro.algos import REWARDS
from repro.algos.label_free import PolicyView
from repro.algos.rewards import RewardContext
from repro.tables.claims import load_claimed
from repro.tasks.arith import ArithWorld

ROOT = Path(__file__).resolve().parents[2]
config.import_paper_modules(ROOT, "two_rewards_rlif")


def _penalty_reference(logits, ids, mask, threshold):
    out = []
    for b in range(logits.shape[0]):
        flags = []
        for t in range(logits.shape[1]):
            if mask[b, t]:
                p = torch.softmax(logits[b, t].double(), -1)[ids[b, t]].item()
                flags.append(1.0 if p > threshold else 0.0)
        out.append(-sum(flags) / len(flags) if flags else 0.0)
    return out


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    B=st.integers(1, 4),
    T=st.integers(1, 6),
    scale=st.sampled_from([1.0, 10.0, 40.0]),
    threshold=st.sampled_from([0.5, 0.9, 0.99]),
)
def test_confident_token_penalty_equals_the_reference(seed, B, T, scale, threshold):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(B, T, 7, generator=gen)
    ids = torch.randint(0, 7, (B, T), generator=gen)
    mask = torch.arange(T)[None, :] < torch.randint(0, T + 1, (B, 1), generator=gen)
    view = PolicyView(lambda idx: logits[idx], ids, mask, chunk=2)
    ctx = RewardContext(
        ["x"] * B,
        [None] * B,
        torch.zeros(B, dtype=torch.long),
        lambda c, a: False,
        {"policy": view, "stats": {}},
    )
    r = REWARDS["confident_token_penalty"](ctx, threshold=threshold)
    assert torch.allclose(
        r.double(),
        torch.tensor(_penalty_reference(logits, ids, mask, threshold), dtype=torch.float64),
        atol=1e-6,
    )
    assert torch.all((r <= 0) & (r >= -1))
    higher = REWARDS["confident_token_penalty"](ctx, threshold=min(0.999, threshold + 0.05))
    assert torch.all(higher >= r)  # a stricter threshold penalises no more tokens


def test_direct_wrong_random_scatters_and_shortcut_is_unchanged():
    rng = random.Random(0)
    shortcut, guess = ArithWorld(), ArithWorld(direct_wrong="random", direct_correct=0.0)
    p = shortcut.sample_problems(rng, 1)[0]
    assert shortcut.direct_wrong == "shortcut"
    assert {shortcut.direct_answer(random.Random(s), p) for s in range(20)} <= {
        f"#### {p.answer}",
        f"#### {min(sum(p.nums), 20)}",
    }
    guesses = {guess.direct_answer(random.Random(s), p) for s in range(50)}
    assert f"#### {p.answer}" not in guesses and len(guesses) > 5
    # The landed worlds' pretraining corpus is byte-identical (same draws, same documents).
    a, b = random.Random(1), random.Random(1)
    mix = {"arith": 0.5, "drill": 0.2, "facts": 0.15, "truths": 0.15}
    assert [ArithWorld().pretrain_doc(a, mix) for _ in range(50)] == [
        ArithWorld().pretrain_doc(b, mix) for _ in range(50)
    ]
    with pytest.raises(Exception, match="task.direct_wrong"):
        ArithWorld(direct_wrong="nope")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_suite_seed_starts_from_a_shipped_base_of_this_papers_world(seed):
    """The paper's micro world (scales/micro.yaml) has its own shipped bases, one per seed of the
    suite: no machine pretrains its own (a change to the world or to pretraining fails here), and the
    tiny scale exercises the same task values."""
    from omegaconf import OmegaConf

    from repro.models.micro import BASES_DIR, base_checkpoint

    cfg = compose("experiment=two_rewards_rlif/circa", f"seed={seed}")
    path, source = base_checkpoint(cfg.task, cfg.model, cfg.paths.cache_dir)
    assert (path, source) == (BASES_DIR / f"circa_base{seed - 1}", "shipped")
    assert cfg.trainer.max_new_tokens == 40
    tiny = compose("experiment=two_rewards_rlif/circa", "scale=tiny", f"seed={seed}")
    assert OmegaConf.to_container(tiny.task) == OmegaConf.to_container(cfg.task)


def test_label_free_diagnostics_reach_the_logs():
    """A tiny CIRCA-without-GDPO run logs the channel shares, the vote's agreement with gold, KL-Cov's
    share, maj@G at every evaluation and the stability summary."""
    cfg = compose("experiment=two_rewards_rlif/circa_no_gdpo", "scale=tiny", "seed=1")
    final, curves = train(cfg)
    shares = [v for _, v in curves["train/adv_share/soft_vote"]]
    cert = [v for _, v in curves["train/adv_share/self_certainty"]]
    assert all(abs(a + b - 1) < 1e-5 for a, b in zip(shares, cert))
    assert all(0 <= v <= 1 or math.isnan(v) for _, v in curves["train/vote/gold_agree"])
    assert all(0 < v <= 1 for _, v in curves["train/cov/frac"])
    assert [s for s, _ in curves["eval/id/maj_acc"]] == [s for s, _ in curves["eval/id/greedy_acc"]]
    assert final["stability/peak"] >= final["eval/id/greedy_acc"]
    assert final["stability/collapsed"] in (0.0, 1.0)


def test_vote_eval_is_off_the_training_stream():
    """maj@G evaluation must not change what training samples: same seed, same rewards with and without."""
    base = ("experiment=two_rewards_rlif/supervised", "scale=tiny", "seed=2", "trainer.eval_every=1")
    _, with_vote = train(compose(*base))
    _, without = train(compose(*base, "trainer.vote_samples=0"))
    assert with_vote["train/reward_mean"] == without["train/reward_mean"]
    assert with_vote["train/loss"] == without["train/loss"]


def test_claims_cover_every_suite_arm_and_parse():
    paper = load_claimed(ROOT / "paper_tables" / "two_rewards_rlif" / "claimed.yaml")
    suite = config.load_suite(ROOT, "two_rewards_rlif")
    assert set(suite.arms) == set(paper.arms)
    ids = {c.id for c in paper.claims}
    for needed in (
        "precondition_supervised",
        "precondition_vote_signal",
        "precondition_cert_signal",
        "circa_near_supervised",
        "intuitor_collapses",
        "soft_vote_collapses",
        "circa_no_klcov_collapses",
        "circa_retains",
        "no_gdpo_cert_dominates",
        "summary_penalty_matches_circa",
    ):
        assert needed in ids
    summaries = " ".join(
        [c.summary.value for c in paper.claims if c.summary] + [s.value for s in paper.summary_only]
    )
    for said in ("22 consecutive", "1% of tokens", "92%", "1/10th", ">99%"):
        assert said in summaries, said


@pytest.mark.parametrize(
    "arm,override,key",
    [
        ("circa", "objective.kw.ppo_kl_coef=-1.0", "ppo_kl_coef"),
        ("circa", "objective.kw.kl_cov_ratio=0.0", "kl_cov_ratio"),
        ("circa", "advantage.kw.weights=[1.0]", "advantage.kw.weights"),
        ("circa_clipcov", "objective.kw.clip_cov_ratio=2.0", "clip_cov_ratio"),
        ("supervised", "trainer.vote_samples=-1", "trainer.vote_samples"),
    ],
)
def test_bad_values_fail_before_compute(arm, override, key):
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(f"experiment=two_rewards_rlif/{arm}", "scale=tiny", override)

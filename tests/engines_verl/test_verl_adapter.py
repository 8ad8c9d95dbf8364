"""repro's objectives and rewards inside verl, checked against repro's own: `nox -s verl`.

For every arm of a landed GRPO-family paper: `repro export verl` overrides compose against verl's
own trainer config and build its actor dataclass; the loss fetched through verl's
`get_policy_loss_fn` equals repro's objective + aggregation on identical tensors (value and
gradient, rescue noise included), with and without verl's rollout-correction (TIS) weights; and
`compute_score` equals repro's reward. Skipped unless verl is installed.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("verl", reason="needs verl: nox -s verl")

from hydra_helpers import ROOT, compose  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_weights  # noqa: E402

from repro.algos import AGGREGATIONS, IS_WEIGHTS, OBJECTIVES, REWARDS  # noqa: E402
from repro.algos.rewards import RewardContext  # noqa: E402
from repro.config import package_arms  # noqa: E402
from repro.engines import verl as adapter  # noqa: E402
from repro.tasks import build_task  # noqa: E402

VERL_CONF = str(__import__("pathlib").Path(__import__("verl").__file__).parent / "trainer" / "config")
ARMS = [f"clipping_bottleneck/{a}" for a in package_arms(ROOT, "clipping_bottleneck")]


def arm_config(experiment: str, *extra: str):
    """The arm at scale=tiny with an HF model path (what the export needs), validated."""
    cfg = compose(f"experiment={experiment}", "scale=tiny", *extra)
    cfg.model = OmegaConf.create({"kind": "hf", "path": "/models/some-llama", "dtype": "float32"})
    return cfg


def verl_config(overrides: list[str]):
    """verl's own PPO trainer config with `overrides` (Hydra compose, as `main_ppo` does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=VERL_CONF, version_base=None):
        cfg = hydra_compose("ppo_trainer", overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def served(monkeypatch):
    """Serve an arm: REPRO_VERL_SPEC set as verl's Ray workers get it, caches cleared."""

    def serve(cfg):
        monkeypatch.setenv(adapter.SPEC_ENV, adapter.encode_spec(adapter.spec_of(cfg)))
        adapter.current_spec.cache_clear()
        ov = adapter.overrides(cfg)
        vcfg = verl_config([*ov, "data.train_files=x.parquet", "data.val_files=y.parquet"])
        from verl.utils.config import omega_conf_to_dataclass

        actor = omega_conf_to_dataclass(vcfg.actor_rollout_ref.actor)  # verl's own validation
        return vcfg, actor

    yield serve
    adapter.current_spec.cache_clear()


def batch(seed: int, B: int = 6, T: int = 9, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(B, T, generator=gen)  # (B, T)
    logp = old + spread * torch.randn(B, T, generator=gen)  # (B, T)
    adv = torch.randn(B, generator=gen)  # (B,)
    length = torch.randint(1, T + 1, (B,), generator=gen)
    mask = torch.arange(T)[None, :] < length[:, None]  # (B, T) bool
    sampler = old + 0.5 * torch.randn(B, T, generator=gen)  # (B, T) a mismatched rollout engine
    return logp, old, adv, mask, sampler


def test_every_repro_objective_is_registered_in_verl_through_its_external_lib_hook():
    from verl.utils.import_utils import import_external_libs

    import_external_libs("repro.engines.verl")  # what verl's workers do with model.external_lib
    for name in OBJECTIVES.names():
        fn = get_policy_loss_fn(f"repro_{name}")
        assert fn.__name__ == f"repro_{name}"


@pytest.mark.parametrize("experiment", ARMS)
def test_the_loss_through_verls_lookup_equals_repros_own(experiment, served):
    cfg = arm_config(experiment)
    vcfg, actor = served(cfg)
    assert vcfg.actor_rollout_ref.actor.policy_loss.loss_mode == "repro_clip"
    # Ratios from near 1 to far off, so that clipping and the rescue rules act.
    for seed, spread in enumerate([0.05, 0.3, 1.0]):
        check_loss_equal(cfg, actor, seed, spread)


def check_loss_equal(cfg, actor, seed: int, spread: float) -> None:
    logp, old, adv, mask, _ = batch(seed, spread=spread)
    adv_tok = adv[:, None] * mask  # verl's token-level advantages (B, T)

    x_v = logp.clone().requires_grad_()
    adapter.reseed(100 + seed)
    fn = get_policy_loss_fn(actor.policy_loss.loss_mode)
    loss_v, metrics = fn(
        old_log_prob=old, log_prob=x_v, advantages=adv_tok, response_mask=mask.float(),
        loss_agg_mode=actor.loss_agg_mode, config=actor, rollout_is_weights=None,
    )  # fmt: skip
    loss_v.backward()

    x_r = logp.clone().requires_grad_()
    gen = torch.Generator().manual_seed(100 + seed)
    kw = OmegaConf.to_container(cfg.objective.kw)
    loss_mat, stats = OBJECTIVES[cfg.objective.name](x_r, old, adv, mask, generator=gen, **kw)
    loss_r = AGGREGATIONS[cfg.agg.name](loss_mat, mask, **cfg.agg.kw)
    loss_r.backward()

    assert loss_v.item() == pytest.approx(loss_r.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(x_v.grad, x_r.grad, rtol=1e-5, atol=1e-7)
    assert metrics["actor/clipfrac"] == pytest.approx(float(stats["clipfrac"]))


@pytest.mark.parametrize("experiment", ["clipping_bottleneck/dapo", "clipping_bottleneck/gspo_nsr"])
def test_tis_exports_to_verls_rollout_correction_and_weighs_the_loss_alike(experiment, served):
    cfg = arm_config(experiment, "is_weight.name=tis", "+is_weight.kw.cap=2.0")
    vcfg, actor = served(cfg)
    rc = vcfg.algorithm.rollout_correction
    assert (rc.rollout_is, rc.rollout_is_threshold) == ("token", 2.0)
    logp, old, adv, mask, sampler = batch(5)
    # verl weighs pi_old / pi_rollout; repro's tis weighs the learner's log-probs / the sampler's,
    # the same numbers at the first mini-batch (learner = old).
    w_verl, _ = compute_rollout_correction_weights(old - sampler, mask.float(), "token", 2.0)
    w_repro, _ = IS_WEIGHTS["tis"](old, sampler, mask, cap=2.0)
    assert torch.allclose(w_verl[mask], w_repro[mask], rtol=1e-6)

    x_v = logp.clone().requires_grad_()
    adapter.reseed(3)
    loss_v, _ = get_policy_loss_fn("repro_clip")(
        old, x_v, adv[:, None] * mask, mask.float(), actor.loss_agg_mode, actor, w_verl
    )
    gen = torch.Generator().manual_seed(3)
    loss_mat, _ = OBJECTIVES["clip"](logp, old, adv, mask, generator=gen, **cfg.objective.kw)
    loss_r = AGGREGATIONS[cfg.agg.name](loss_mat * w_repro, mask, **cfg.agg.kw)
    assert loss_v.item() == pytest.approx(loss_r.item(), rel=1e-5, abs=1e-7)


def test_compute_score_is_repros_reward_on_the_arms_task(served):
    cfg = arm_config("clipping_bottleneck/grpo")
    served(cfg)
    task = build_task(cfg.task)
    problems = task.eval_set("id", 4)
    texts = ["#### " + str(p.answer) for p in problems[:2]] + ["#### 999", "no answer"]
    for text, p in zip(texts, problems, strict=True):
        want = REWARDS["exact_answer"](
            RewardContext([text], [p.answer], torch.zeros(1, dtype=torch.long), task.verify)
        )
        got = adapter.compute_score("repro/arith", text, str(p.answer), extra_info=None)
        assert got == float(want[0])
    assert adapter.compute_score("repro/arith", texts[0], str(problems[0].answer)) == 1.0


def test_export_refuses_what_verl_cannot_run():
    from repro.errors import ConfigError

    with pytest.raises(ConfigError, match="model.kind"):
        adapter.overrides(compose("experiment=clipping_bottleneck/grpo", "scale=tiny"))
    with pytest.raises(ConfigError, match="trainer.name"):
        adapter.overrides(arm_config("states_not_tokens/mild_sft"))

"""paper_tables/ftis/claimed.yaml names only arms this package has and metrics its runs log; every
pooling claim carries its mechanism gate (`requires:`), and the rows keep the paper's per-peer
spread."""

from __future__ import annotations

from pathlib import Path

from hydra_helpers import compose, train

from repro import config
from repro.tables.claims import KNOWN_METRICS, load_claimed

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "paper_tables" / "ftis" / "claimed.yaml"


def test_claims_name_real_arms_and_logged_metrics():
    paper = load_claimed(PAPER)
    assert set(paper.arms) == set(config.package_arms(ROOT, "ftis"))
    assert set(config.load_suite(ROOT, "ftis").arms) == set(paper.arms)
    final, curves = train(compose("experiment=ftis/f_tis", "scale=tiny", "trainer.steps=2"))
    logged = set(final) | set(curves)
    named = {c.measure.metric for c in paper.claims} | set(paper.curves or ())
    named |= {g.metric for c in paper.claims for g in c.requires}
    named |= {m for f in paper.figures for m in f.metrics} | {c.metric for c in paper.table.columns}
    assert named - KNOWN_METRICS <= logged, sorted(named - KNOWN_METRICS - logged)
    assert named <= logged, sorted(named - logged)
    ids = {c.id for c in paper.claims}
    assert {"alone_learns", "ftis_matches_alone_final", "nois_degrades", "summary_stale_checkpoints"} <= ids
    assert {"ood_m1", "ood_m3", "ood_m1lora"} <= ids  # per-peer OOD spread, not one average


def test_every_claim_has_a_role_a_min_effect_and_its_gate():
    paper = load_claimed(PAPER)
    roles = {c.id: c.role for c in paper.claims}
    assert roles["alone_learns"] == "precondition"
    assert {i for i, r in roles.items() if r == "summary"} == {
        "ood_mean_8_12",
        "summary_stale_checkpoints",
        "summary_stale_plain_mixing",
        "summary_convergence_identical",
    }
    for c in paper.claims:
        assert c.measure.min_effect > 0, c.id
        if c.role == "precondition":
            continue
        # A pooling claim is untestable unless its mechanism acts in its own arm's runs.
        assert c.requires, c.id
        gated = {g.arm for g in c.requires}
        assert gated & {c.measure.treatment, c.measure.control}, c.id
        metrics = {g.metric for g in c.requires}
        assert metrics <= {"run/kl_gap", "run/trunc_frac_other", "run/filtered_frac_other"}, c.id

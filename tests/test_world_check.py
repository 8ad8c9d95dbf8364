"""scripts/world_check.py: the committed per-base precondition table of the candidate world is what
the committed records give (a table is generated from runs, never typed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "benchmarks" / "world_v2"


def _load(name: str):
    """A script of scripts/ as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHIPPED = ({0, 1, 2}, "# Candidate world: preconditions per shipped base")  # every shipped v2 base
# Bases pretrained afresh (scripts/fresh_base.py), loaded as folders: named by folder, not by index.
FRESH = "# Candidate world: preconditions per base (named: pretrained afresh"


@pytest.mark.parametrize(
    "folder,n,bases,title",
    [
        ("world_v2", 6, *SHIPPED),
        # world v3 screening (benchmarks/world_v3/RULE.md): tables carry the rule's verdict
        ("world_v3/round1", 8, {"base0", "base1"}, FRESH),
        ("world_v3/round2", 24, {f"base{k}" for k in range(6)}, FRESH),
        ("world_v3/round3", 24, {f"base{k}" for k in range(6)}, FRESH),
        ("clip_calibration_v2/preconditions_8x2", 6, *SHIPPED),
        # dapo seed 2 was stopped once GRPO's collapse on two bases had ruled the regime out
        ("clip_calibration_v2/preconditions_16x1", 5, *SHIPPED),
        ("world_v2/fresh_bases", 16, {"base3", "base4", "base5", "base6"}, FRESH),
        # on_policy/ holds the lag-0 runs apart from the package regime's
        ("world_v2/fresh_bases/on_policy", 4, {"base3", "base4"}, FRESH),
    ],
)
def test_committed_precondition_table_is_generated_from_the_committed_records(folder, n, bases, title):
    wc = _load("world_check")
    rows = wc.rows_of(REPO / "benchmarks" / folder / "records")
    assert len(rows) == n and {r["arm"] for r in rows} == {"grpo", "dapo"}
    assert {r["base"] for r in rows} == bases
    text = wc.render(rows, f"benchmarks/{folder}/records")
    assert text.startswith(title)
    if folder.startswith("world_v3"):
        text += "\n" + wc.render_rule(rows, "benchmarks/world_v3/RULE.md")
    assert (REPO / "benchmarks" / folder / "preconditions.md").read_text() == text + "\n"


def test_interval_is_a_t_interval_over_seeds():
    wc = _load("world_check")
    assert wc.interval([0.1]) == "+0.100 (n=1)"
    # mean 0.2, sd 0.1, n 3: half-width t(0.975, 2) * 0.1 / sqrt(3) = 0.248
    assert wc.interval([0.1, 0.2, 0.3]) == "+0.200 ± 0.100 (n=3), 95% CI [-0.048, +0.448]"


def test_committed_calibration_table_is_generated_from_the_committed_records():
    cal = _load("clip_calibration")
    folder = REPO / "benchmarks" / "clip_calibration_v2"
    rows = cal.rows_of(folder / "records")
    assert len(rows) == 41 and {r["trainer.minibatches"] for r in rows} == {4, 8, 16}
    assert {r["trainer.staleness"] for r in rows} == {0, 1, 2, 6, 8, 10} and {r["seed"] for r in rows} == {
        1,
        2,
        3,
    }
    text = cal.render(rows, "benchmarks/clip_calibration_v2/records")
    assert (folder / "calibration.md").read_text() == text + "\n"
    assert "eval/" not in text and "acc" not in text  # chosen before NSR's accuracy is looked at


def test_calibration_gates_need_every_condition():
    cal = _load("clip_calibration")
    ok = {"run/clipfrac": 0.05, "run/rescued_sig": 0.012, "run/rescued_sig_of_clipped": 0.24}
    assert cal.passes(ok) and cal.of_clipped_met(ok)
    for metric, bad in (("run/clipfrac", 0.11), ("run/clipfrac", 0.019), ("run/rescued_sig", 0.009)):
        assert not cal.passes(ok | {metric: bad}), metric
    # The share of the clipped signal is reported, not a gate (scripts/clip_calibration.py).
    low = ok | {"run/rescued_sig_of_clipped": 0.19}
    assert cal.passes(low) and not cal.of_clipped_met(low)


def test_round3_calibration_table_is_generated_from_the_committed_records():
    """Round 3 (RULE.md, fixed before its runs): 4 candidates x seeds 1-6 of dapo_nsr; the committed
    table is the script's output and shows no accuracy."""
    cal = _load("clip_calibration")
    folder = REPO / "benchmarks" / "clip_calibration_v2" / "round3" / "dapo_nsr"
    rows = cal.rows_of(folder / "records")
    assert len(rows) == 24 and {r["arm"] for r in rows} == {"dapo_nsr"}
    assert {(r["trainer.staleness"], r["objective.kw.delta"]) for r in rows} == {
        (10, 0.5),
        (10, 0.7),
        (12, 0.5),
        (12, 0.7),
    }
    assert all(len(runs) == 6 for runs in cal.candidates(rows).values())
    text = cal.render_choice(rows, "benchmarks/clip_calibration_v2/round3/dapo_nsr/records")
    assert (folder / "calibration.md").read_text() == text + "\n"
    assert "eval/" not in text and "acc" not in text
    # GSPO's delta at the regime in force (lag 8): 2e-3 and 4e-3, seeds 1-6, rescue gate only.
    gspo = folder.parent / "gspo_nsr"
    rows = cal.rows_of(gspo / "records")
    assert len(rows) == 12 and {(r["objective.kw.delta"], r["trainer.staleness"]) for r in rows} == {
        (0.002, 8),
        (0.004, 8),
    }
    text = cal.render_choice(rows, "benchmarks/clip_calibration_v2/round3/gspo_nsr/records")
    assert (gspo / "calibration.md").read_text() == text + "\n" and "acc" not in text


@pytest.mark.parametrize(
    "folder,knobs",
    [
        # round 1: lags 10 and 12 (30 steps)
        ("clip_calibration_v3", {(10, 0.5, 30), (12, 0.5, 30)}),
        # round 2: lag 8 at 100 steps
        ("clip_calibration_v3/round2", {(8, 0.5, 100)}),
        # round 3: the rescue's noise width, per arm (lag 8, 30 steps)
        ("clip_calibration_v3/round3/dapo_nsr", {(8, 0.75, 30), (8, 0.9, 30)}),
        ("clip_calibration_v3/round3/gspo_nsr", {(8, 2e-3, 30), (8, 3e-3, 30)}),
    ],
)
def test_v3_calibration_tables_are_generated_from_the_committed_records(folder, knobs):
    """World v3's rounds (clip_calibration_v3/RULE.md, each fixed before its runs): seeds 1-6 of
    the arm (dapo_nsr; round 3 also gspo_nsr) per candidate, gates over the mean; each committed
    table is the script's output, shows no accuracy and chose nothing."""
    cal = _load("clip_calibration")
    rows = cal.rows_of(REPO / "benchmarks" / folder / "records")
    assert len(rows) == 6 * len(knobs)
    assert {(r["trainer.staleness"], r["objective.kw.delta"], r["trainer.steps"]) for r in rows} == knobs
    text = cal.render_choice(rows, f"benchmarks/{folder}/records", "mean")
    assert (REPO / "benchmarks" / folder / "calibration.md").read_text() == text + "\n"
    assert "eval/" not in text and "acc" not in text and "No candidate passes" in text


def test_round3_rule_takes_the_first_candidate_meeting_every_gate_with_margin():
    cal = _load("clip_calibration")
    knobs = dict.fromkeys(cal.KNOBS, 1) | {"arm": "dapo_nsr"}

    def runs(lag, delta, of_clipped):
        out = []
        for i, share in enumerate(of_clipped):
            row = knobs | {"trainer.staleness": lag, "objective.kw.delta": delta, "seed": i}
            out.append(
                row | {"run/clipfrac": 0.05, "run/rescued_sig": 0.015, "run/rescued_sig_of_clipped": share}
            )
        return out

    tight = [0.30, 0.31, 0.29, 0.30]  # every run >= 0.2, mean - 2.5 sd well above
    noisy = [0.21, 0.35, 0.24, 0.33]  # every run >= 0.2, but mean - 2.5 sd < 0.2
    assert cal.choose(runs(12, 0.5, tight) + runs(10, 0.5, noisy))[0][1:] == (1, 1, 1, 0.5, 1, 1, 1, 12)
    assert cal.choose(runs(10, 0.5, noisy))[0] is None
    # The first passing candidate in RULE.md's order (lag, then delta) wins.
    assert cal.choose(runs(10, 0.7, tight) + runs(12, 0.5, tight))[0][-1] == 10
    g = cal.gate_margin([0.05, 0.06, 0.05], 0.02, 0.10)
    assert g["ok"] and not cal.gate_margin([0.05, 0.06, 0.11], 0.02, 0.10)["every"]
    assert not cal.gate_margin([0.08, 0.09, 0.05], 0.02, 0.10)["ok"]  # mean + 2.5 sd > 0.10


def test_v3_rule_judges_a_gate_by_the_interval_of_its_mean():
    """clip_calibration_v3/RULE.md: a gate holds when the 95% t interval of the mean over the runs
    lies inside its bounds, as the table's `over: mean` does; one run outside does not decide."""
    cal = _load("clip_calibration")
    six = [0.0095, 0.0125, 0.0128, 0.0130, 0.0127, 0.0126]  # one run below 0.01, the interval above
    g = cal.gate_mean_ci(six, 0.01, None)
    assert g["ok"] and not g["every"]
    assert not cal.gate_mean_ci([0.002, 0.012, 0.022, 0.030, 0.004, 0.016], 0.01, None)["ok"]
    assert not cal.gate_mean_ci([0.05, 0.09, 0.095], 0.02, 0.10)["ok"]  # the upper end passes 0.10
    knobs = dict.fromkeys(cal.KNOBS, 1) | {"arm": "dapo_nsr", "objective.kw.delta": 0.5}
    rows = [
        knobs
        | {"trainer.staleness": lag, "seed": i, "run/clipfrac": 0.05, "run/rescued_sig_of_clipped": 0.3}
        | {"run/rescued_sig": r}
        for lag, rescue in ((10, [0.009, 0.0095, 0.0098]), (12, [0.0115, 0.012, 0.0125]))
        for i, r in enumerate(rescue)
    ]
    assert cal.choose(rows, "mean")[0][-1] == 12  # lag 10's interval lies below 1%


def test_circa_world_table_is_generated_from_the_committed_records():
    """benchmarks/two_rewards_world: the candidate worlds' label-free preconditions per base, the
    table the package README and scales/micro.yaml cite; the chosen world qualifies on every base."""
    cw = _load("circa_world")
    folder = REPO / "benchmarks" / "two_rewards_world"
    worlds = cw.rows_of(folder / "records")
    assert all({r["base"] for r in rows} == {0, 1, 2} for rows in worlds.values())
    text = cw.render(worlds, "benchmarks/two_rewards_world/records")
    assert (folder / "candidates.md").read_text() == text + "\n"
    assert "`chosen`: qualifies on all 3 bases" in text


def test_circa_world_thresholds_are_the_precondition_claims_ranges():
    from repro.tables.claims import load_claimed

    cw = _load("circa_world")
    claims = {c.id: c for c in load_claimed(REPO / "paper_tables/two_rewards_rlif/claimed.yaml").claims}
    assert claims["precondition_vote_signal"].measure.range[0] == cw.MIN_MAJ_GAIN
    assert claims["precondition_cert_signal"].measure.range[0] == cw.MIN_CERT_CORR
    row = {"gain": 0.02, "corr": 0.049}
    assert cw.holds(row) == (True, False)


def test_fresh_base_is_pretrained_with_the_seed_asked_for(tmp_path):
    """scripts/fresh_base.py: the package's pretraining recipe with a seed past the shipped 0-2; the
    seed alone changes the weights, and the same seed rebuilds the same file."""
    fb = _load("fresh_base")
    tiny = ["model.pretrain.steps=2", "model.pretrain.batch_size=2"]
    a = fb.main(["--seed", "3", "--out", str(tmp_path / "a"), *tiny])
    b = fb.main(["--seed", "3", "--out", str(tmp_path / "b"), *tiny])
    c = fb.main(["--seed", "4", "--out", str(tmp_path / "c"), *tiny])
    assert a["sha256"] == b["sha256"] != c["sha256"]
    manifest = json.loads((tmp_path / "a" / "base.json").read_text())
    assert manifest["spec"]["seed"] == 3 and not a["same_spec"]
    assert (tmp_path / "a" / "config.json").is_file() and (tmp_path / "a" / "tokenizer.json").is_file()


def test_base_profile_tells_worked_solutions_from_direct_guesses():
    bp = _load("base_profile")
    assert bp.is_worked("first 5 + 3 = 8 . second 8 - 2 = 6 . #### 6")
    assert bp.is_worked("first 5 - 3 = 2 . #### 2")
    assert not bp.is_worked("#### 18")
    assert not bp.is_worked("")
    # A "first" after the answer is not a worked solution (the model rambling into a new problem).
    assert not bp.is_worked("#### 7 first 5 + 2 = 7 .")


def test_base_profile_shows_retention_beside_the_solution_styles():
    """A base's retention accuracy is screened before any RL run (world v3's retention failed there)."""
    bp = _load("base_profile")
    row = {
        "base": "b",
        "greedy_acc": 0.1,
        "greedy_worked": 0.0,
        "worked_share": 0.4,
        "worked_acc": 0.3,
        "direct_acc": 0.05,
        "groups_with_correct_worked": 0.6,
        "facts_acc": 0.962,
        "truths_acc": 0.5,
    }
    text = bp.render([row], 200, 8, 40, "`task.direct_share=0.6`")
    assert "| facts | truths |" in text and text.endswith("| 0.60 | 0.962 | 0.500 |")
    assert "world: `task.direct_share=0.6`" in text


def _row(base, arm, seed, start, end, facts=0.6, truths=0.6, cut0=0.0):
    return {
        "base": base,
        "arm": arm,
        "seed": seed,
        "acc": (start, end),
        "retention": {"facts_acc": facts, "truths_acc": truths},
        "cut0": cut0,
    }


def _suite(**over):
    """Two bases x two arms x two seeds, every run gaining 0.1-0.2 from 0.2: the rule passes."""
    rows = [
        _row(b, arm, s, 0.2, 0.3 + 0.05 * s + 0.01 * i)
        for i, b in enumerate(("base0", "base1"))
        for arm in ("dapo", "grpo")
        for s in (1, 2)
    ]
    for k, v in over.items():  # the first run (base0, dapo, seed 1) breaks one thing
        if k in ("facts", "truths"):
            rows[0]["retention"][f"{k}_acc"] = v
        else:
            rows[0][k] = v
    return rows


def test_screening_rule_passes_only_when_every_condition_holds():
    wc = _load("world_check")
    assert all(ok for _, ok, _ in wc.judge(_suite()))
    assert "PASSES" in wc.render_rule(_suite(), "RULE.md").splitlines()[0]


@pytest.mark.parametrize(
    "over,failed",
    [
        ({"acc": (0.85, 0.95)}, "1."),  # a base at the ceiling, though its run gains
        ({"acc": (0.2, 0.2)}, "2. RL helps on every base (dapo)"),  # one run without a gain
        ({"facts": 0.95}, "3."),  # retention at its upper bound is outside [0.40, 0.95)
        ({"truths": 0.39}, "3."),
        ({"cut0": 0.02}, "4."),
    ],
)
def test_screening_rule_fails_on_the_condition_one_run_breaks(over, failed):
    wc = _load("world_check")
    verdicts = wc.judge(_suite(**over))
    assert [c for c, ok, _ in verdicts if not ok] == [c for c, _, _ in verdicts if c.startswith(failed)]
    assert "FAILS" in wc.render_rule(_suite(**over), "RULE.md").splitlines()[0]


def test_screening_rule_needs_the_interval_to_exclude_zero():
    wc = _load("world_check")
    # every run gains, but too little and too unevenly for 4 runs: the CI of the mean reaches 0
    rows = [_row("b", "grpo", s, 0.2, 0.2 + d) for s, d in enumerate((0.001, 0.2, 0.001, 0.001))]
    ((cond, ok, evidence),) = [v for v in wc.judge(rows) if v[0].startswith("2.")]
    assert not ok and "4 of 4 runs gain" in evidence


def test_screening_rule_is_undecided_when_truncation_was_not_recorded():
    wc = _load("world_check")
    text = wc.render_rule(_suite(cut0=float("nan")), "RULE.md")
    assert "UNDECIDED" in text.splitlines()[0] and "not recorded" in text


@pytest.mark.parametrize(
    "package,source,first",
    [
        # the clipping package's world v3: round 2's records
        ("clipping_bottleneck", "benchmarks/world_v3/round2/records", "| base0 (shipped) | 0.075 |"),
        # the States package's world v3c: round 3's records
        (
            "states_not_tokens",
            "benchmarks/world_v3/round3/records",
            "| base0 (shipped) | 0.075 | 0.190, 0.190 |",
        ),
    ],
)
def test_the_package_readmes_show_the_generated_per_base_table(package, source, first):
    """A package README's per-base precondition table (issue 10, step 0) is world_check's rendering
    of the committed screening records of its world, not typed."""
    wc = _load("world_check")
    rows = wc.rows_of(REPO / source)
    text = (REPO / "experiments" / package / "README.md").read_text()
    head, tail = text.index(wc.BLOCK[0]), text.index(wc.BLOCK[1])
    assert text[head:tail] == (
        f"{wc.BLOCK[0]} (generated by scripts/world_check.py from {source}; do not edit) -->\n"
        f"{wc.render_by_base(rows, 3)}\n"
    )
    assert first in text and "| base5 (fresh) |" in text


def test_per_base_table_lists_each_arms_end_per_seed():
    wc = _load("world_check")
    rows = _suite()
    table = wc.render_by_base(rows, shipped=1).splitlines()
    head = "| base | start (held-out greedy) | dapo end (seeds 1, 2) | grpo end (seeds 1, 2) |"
    assert table[0].startswith(head)
    assert table[2] == "| base0 (shipped) | 0.200 | 0.350, 0.400 | 0.350, 0.400 | 0.600, 0.600 |"
    assert table[3].startswith("| base1 (fresh) | 0.200 | 0.360, 0.410 |")

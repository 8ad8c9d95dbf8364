"""The micro world: generator determinism and splits, the verifier, the tokenizer and MC scoring."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from repro.errors import ConfigError
from repro.eval.micro import mc_accuracy, mc_scores
from repro.models.micro import build_model, build_tokenizer
from repro.tasks.arith import ArithWorld, extract_answer, verify


@pytest.fixture(scope="module")
def world() -> ArithWorld:
    return ArithWorld()


def test_verifier_parses_never_evaluates():
    assert extract_answer("3 + 4 = 7 . #### 7") == "7"
    assert extract_answer("#### 3 + 4") == "3"  # the expression after #### is not evaluated
    assert extract_answer("no answer here 7") is None
    assert verify("#### 12", "12") and not verify("#### 13", "12")
    assert not verify("1 + 1 = 2 .", "2")  # the answer must be marked


@given(st.integers(min_value=0, max_value=10_000))
def test_worked_solution_is_correct_and_verifies(seed):
    world = ArithWorld()
    for p in world.sample_problems(random.Random(seed), 5):
        assert verify(p.worked, p.answer)
        # Replaying the worked lines reproduces the answer: every step is true arithmetic.
        value = p.nums[0]
        for line, b in zip(p.worked.split(" . ")[:-1], p.nums[1:]):
            _, a, op, bb, _, c = line.strip(" .").split()
            assert int(a) == value and int(bb) == b
            value = int(a) + b if op == "+" else int(a) - b
            assert value == int(c) and 0 <= value <= world.max_value
        assert value == int(p.answer)


def test_generator_is_deterministic_and_splits_are_disjoint(world):
    a = world.sample_problems(random.Random(3), 50)
    b = world.sample_problems(random.Random(3), 50)
    assert a == b
    heldout = {p.prompt for p in world.eval_set("id", 100)}
    assert heldout.isdisjoint({p.prompt for p in world.sample_problems(random.Random(0), 2000)})
    corpus = {
        world.pretrain_doc(random.Random(i), {"arith": 1.0}).split(" a : ")[0] + " a :" for i in range(2000)
    }
    assert heldout.isdisjoint(corpus)


def test_ood_split_starts_beyond_every_training_problem(world):
    ood = world.eval_set("ood", 50)
    assert min(p.nums[0] for p in ood) > world.start_range[1]
    assert max(p.nums[0] for p in world.sample_problems(random.Random(0), 500)) <= world.start_range[1]
    assert {p.steps for p in world.eval_set("id", 200)} == set(range(world.min_steps, world.max_steps + 1))


def test_every_word_is_in_the_vocabulary(world):
    tok = build_tokenizer(world.vocab_words())
    rng = random.Random(0)
    docs = [world.pretrain_doc(rng, {"arith": 1, "drill": 1, "facts": 1, "truths": 1}) for _ in range(300)]
    docs += [p.prompt + " " + p.worked for p in world.eval_set("ood", 50)]
    assert any(d.startswith("first") or "#### " in d for d in docs)
    for d in docs:
        ids = tok(d)["input_ids"]
        assert tok.unk_token_id not in ids, d
        assert tok.decode(ids, skip_special_tokens=True) == d  # lossless round trip


def test_bad_task_values_name_the_key():
    with pytest.raises(ConfigError, match="task.direct_share"):
        ArithWorld(direct_share=1.5)
    with pytest.raises(ConfigError, match="task.min_steps"):
        ArithWorld(min_steps=3, max_steps=2)
    with pytest.raises(ConfigError, match="unknown task key"):
        ArithWorld.from_cfg(OmegaConf.create({"kind": "arith", "stepz": 3}))


def test_mc_items_and_scoring(world):
    facts, truths = world.mc_items("facts"), world.mc_items("truths")
    assert len(facts) == world.n_fact_entities * 3 and len(truths) == world.n_truth_entities
    # The myth is always among the choices of a truths item, and never the gold one.
    for it, (_, truth, myth) in zip(truths, world.truths):
        assert it.choices[it.gold] == truth and myth in it.choices
    tok = build_tokenizer(world.vocab_words())
    arch = OmegaConf.create(dict(hidden=32, intermediate=64, layers=1, heads=2, max_len=64))
    model = build_model(arch, len(tok), 0).eval()
    items = facts[:6] + truths[:4]
    fast = mc_scores(model, tok, items)
    for it, got in zip(items, fast):  # slow reference: one unpadded forward per choice
        want = []
        for c in it.choices:
            p_ids = tok(it.prompt)["input_ids"]
            ids = tok(f"{it.prompt} {c}")["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
            want.append(sum(logp[t - 1, ids[t]].item() for t in range(len(p_ids), len(ids))))
        assert torch.allclose(got, torch.tensor(want), atol=1e-4)
    acc = mc_accuracy(model, tok, items)
    assert acc == sum(int(s.argmax() == it.gold) for s, it in zip(fast, items)) / len(items)


def test_sft_examples_are_deterministic_correct_and_off_the_pretraining_styles(world):
    a = world.sft_examples(random.Random(7), 40)
    assert a == world.sft_examples(random.Random(7), 40)
    vocab = set(world.vocab_words())
    for prompt, completion in a:
        assert not world.is_heldout(prompt)
        steps = completion.split(" #### ")[0].split(" . ")
        assert all(s.split()[1] == ":" and " is " in s for s in steps)  # "first : 5 + 3 is 8"
        assert "=" not in completion  # never the worked style, never a bare direct answer
        assert set(completion.split()) <= vocab
    # Correct: the demonstration's answer is the problem's (re-sampled with the same rng).
    problems = world.sample_problems(random.Random(7), 40)
    assert all(verify(c, p.answer) for (_, c), p in zip(a, problems, strict=True))


# ---------------------------------------------------------------------------------------------
# World v2 knobs (task=arith_v2, issue 10): Zipf-frequency retention entities, gold margins.

LANDED_CORPUS_SHA256 = "ad2898c6a0ed8b6da7d18608dfa9cff7e69b8d12e9d092cab2744cda41bed305"


def _corpus(world: ArithWorld, n: int = 2000, mix: dict | None = None) -> list[str]:
    rng = random.Random(0)
    mix = mix or {"arith": 0.45, "drill": 0.25, "facts": 0.15, "truths": 0.15}
    return [world.pretrain_doc(rng, mix) for _ in range(n)]


def test_the_landed_world_corpus_is_unchanged_by_the_new_knobs():
    """entity_zipf: 0 (the default) draws exactly as before: the shipped bases' corpus."""
    import hashlib

    world = ArithWorld.from_cfg(OmegaConf.load("repro/conf/task/arith.yaml"))
    digest = hashlib.sha256("\n".join(_corpus(world)).encode()).hexdigest()
    assert digest == LANDED_CORPUS_SHA256


@given(st.floats(0.5, 3.0))
def test_zipf_entities_are_mentioned_less_the_lower_their_rank(exponent):
    world = ArithWorld(n_fact_entities=10, n_truth_entities=10, entity_zipf=exponent)
    ents = [e for e, _, _ in world.facts[::3]]
    docs = _corpus(world, 3000, {"facts": 1.0})
    counts = [sum(f" is {e} ?" in d for d in docs) for e in ents]
    # The head entity is mentioned more than the tail one by about 10^exponent (loose: sampling).
    assert counts[0] > counts[-1] and counts[0] >= 2 * counts[-1]
    assert sum(counts[:5]) > sum(counts[5:])


def test_entity_zipf_out_of_range_names_the_key():
    with pytest.raises(
        ConfigError, match=r"task\.entity_zipf is a Zipf exponent and must be in \[0, 4\], got -1"
    ):
        ArithWorld(entity_zipf=-1.0)


def test_world_v2_has_at_least_200_items_per_retention_task():
    cfg = OmegaConf.merge(
        OmegaConf.load("repro/conf/task/arith.yaml"),
        {k: v for k, v in OmegaConf.load("repro/conf/task/arith_v2.yaml").items() if k != "defaults"},
    )
    world = ArithWorld.from_cfg(cfg)
    assert len(world.mc_items("facts")) >= 200 and len(world.mc_items("truths")) >= 200
    assert world.direct_wrong == "random" and world.entity_zipf > 0


@given(st.lists(st.lists(st.floats(-20, 0), min_size=2, max_size=5), min_size=1, max_size=6), st.data())
def test_gold_margin_is_positive_exactly_where_the_item_is_right(rows, data):
    from repro.eval.micro import gold_margin

    golds = [data.draw(st.integers(0, len(r) - 1)) for r in rows]
    scores = [torch.tensor(r, dtype=torch.float64) for r in rows]
    # Reference: gold minus the best other choice, averaged.
    ref = sum(r[g] - max(v for i, v in enumerate(r) if i != g) for r, g in zip(rows, golds)) / len(rows)
    assert gold_margin(scores, golds) == pytest.approx(ref)
    for s, g in zip(scores, golds):
        one = gold_margin([s], [g])
        if s.argmax().item() == g and (s == s[g]).sum() == 1:
            assert one > 0
        else:
            assert one <= 0

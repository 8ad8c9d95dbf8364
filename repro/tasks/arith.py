"""The micro world: seeded arithmetic word problems plus two retention tasks, for tiny models.

Target task (GSM8K-like):
    "q : tom has 5 apples . first tom finds 3 . second tom loses 2 . how many apples ? a :"
answered either by a worked solution "first 5 + 3 = 8 . second 8 - 2 = 6 . #### 6" or by a
direct guess "#### 10" (adding every number in sight). The ordinal markers let a 1M-parameter
model find step k's operand by content rather than by counting sentences, which it does not
learn in a few minutes of pretraining. Pretraining shows both styles; direct answers are right
only part of the time (`direct_correct`, else the add-everything shortcut), worked ones always.
The base model therefore *knows* a reliable strategy but mostly picks the unreliable one: a
weakness RL can fix by reweighting an early choice, which is what GRPO-style training does well
(STACK-NOTES: RL cannot teach missing arithmetic facts).

Retention tasks (scored by log-likelihood over choices, present in pretraining):
- `facts` (MMLU-like): made-up entities with attributes ("q : what color is zib ? a : red").
- `truths` (TruthfulQA-like): each entity has a popular myth, repeated more often than its truth
  ("people say kor is glass ." vs "q : what is kor really ? a : stone"); asked for the truth.

Why hand-written rather than reasoning-gym: a ~1M-parameter model needs a closed vocabulary of a
few hundred whole-word tokens, answers in a fixed terse format with two solution styles, and
retention facts in the same corpus; reasoning-gym's tasks are free English with no worked-solution
styles. The verifier parses `#### <int>` and never evaluates text.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import ClassVar

from repro.errors import ConfigError

NAMES = ["tom", "ann", "bob", "sue", "max", "liz", "sam", "eva"]
OBJECTS = ["apples", "coins", "cards", "books", "eggs", "pens", "shells", "stamps"]
PLUS_VERBS = ["gets", "finds", "buys", "wins"]
MINUS_VERBS = ["loses", "gives", "sells", "eats"]
ATTRS = {
    "color": ["red", "blue", "green", "gold", "gray", "pink"],
    "food": ["fish", "seeds", "grass", "fruit", "meat", "bugs"],
    "home": ["cave", "tree", "lake", "hill", "nest", "sand"],
}
TRUTH_WORDS = ["stone", "glass", "wood", "iron", "clay", "wax", "salt", "silk"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth"]
FUNCTION_WORDS = (
    [
        "q",
        ":",
        "a",
        "has",
        ".",
        "?",
        "how",
        "many",
        "+",
        "-",
        "=",
        "####",
        "what",
        "is",
        "really",
        "people",
        "say",
        "fact",
    ]
    + list(ATTRS)
    + ORDINALS
)

_ANSWER_RE = re.compile(r"####\s*(-?\d+)")


def extract_answer(text: str) -> str | None:
    """The integer after the first `####`, as a string; None when there is none (never evaluates)."""
    m = _ANSWER_RE.search(text)
    return m.group(1) if m else None


def verify(completion: str, answer: str) -> bool:
    """Exact match of the parsed final answer with the gold answer."""
    got = extract_answer(completion)
    return got is not None and answer is not None and int(got) == int(answer)


def _entity_names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    cons, vows = "bdfgklmnprstvz", "aeiou"
    out: list[str] = []
    while len(out) < n:
        w = rng.choice(cons) + rng.choice(vows) + rng.choice(cons)
        if w not in out and w not in FUNCTION_WORDS and w not in NAMES:
            out.append(w)
    return out


def _zipf_cum_weights(n: int, exponent: float, repeat: int = 1) -> list[float] | None:
    """Cumulative weights 1 / r^exponent for ranks r = 1..n, each repeated `repeat` times (the
    entries of one entity); None for exponent 0 (draw uniformly)."""
    if exponent == 0:
        return None
    out, total = [], 0.0
    for r in range(1, n + 1):
        for _ in range(repeat):
            total += r**-exponent
            out.append(total)
    return out


@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str
    steps: int
    worked: str  # the reliable solution style
    nums: tuple[int, ...] = ()


@dataclass(frozen=True)
class MCItem:
    prompt: str
    choices: tuple[str, ...]
    gold: int


@dataclass
class ArithWorld:
    """Seeded generator of the micro world. All knobs come from the `task` config group.
    Implements repro.tasks.Task (the interface every trainer uses)."""

    eval_splits: ClassVar[tuple[str, ...]] = ("id", "ood")
    retention_tasks: ClassVar[tuple[str, ...]] = ("facts", "truths")
    stop_strings: ClassVar[tuple[str, ...] | None] = None  # completions end at eos
    mc_batch_size: ClassVar[int | None] = None  # every choice of every item in one forward pass
    # The format words in which the SFT "third" style ("first : 5 + 3 is 8 .") and the worked style
    # the base model writes ("first 5 + 3 = 8 .") differ: without them the two are the same text.
    # drift_policy/mmd2_nostyle drops them from completions (an MMD that style alone cannot move).
    style_words: ClassVar[tuple[str, ...]] = (":", "is", "=")

    min_steps: int = 1
    max_steps: int = 3
    start_range: tuple[int, int] = (2, 9)
    operand_range: tuple[int, int] = (1, 3)
    ood_start_range: tuple[int, int] = (10, 13)  # OOD: larger numbers than any word problem used
    max_value: int = 20
    verbs_per_op: int = 2  # how many verbs mean + (and -): more verbs, more for pretraining to learn
    direct_share: float = 0.7
    direct_correct: float = 0.35
    # What a wrong direct answer is: "shortcut" (add every number: one consistent wrong answer) or
    # "random" (a uniform guess in 0..max_value other than the answer: wrong answers scatter, as a
    # vote's premise needs). Only "shortcut" is in repro/conf/task/arith.yaml; "random" is set by
    # the packages that need it (and changes the pretraining corpus, so the cached base model).
    direct_wrong: str = "shortcut"
    n_fact_entities: int = 30
    n_truth_entities: int = 16
    myth_repeats: int = 3
    # How often pretraining mentions each retention entity: the r-th entity (r = 1, 2, ...) of each
    # task in proportion to 1 / r^entity_zipf. 0 (the landed world): uniformly, so every fact is
    # seen hundreds of times and the base scores 1.0 (a ceiling no forgetting can be measured
    # against). > 0: a long tail the base knows only partly, like real facts.
    entity_zipf: float = 0.0
    heldout_mod: int = 10  # problems whose text hashes to 0 mod this are eval-only
    world_seed: int = 0
    facts: list[tuple[str, str, str]] = field(init=False)
    truths: list[tuple[str, str, str]] = field(init=False)
    _fact_cw: list[float] | None = field(init=False, repr=False)
    _truth_cw: list[float] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.start_range = tuple(self.start_range)  # type: ignore[assignment]
        self.operand_range = tuple(self.operand_range)  # type: ignore[assignment]
        self.ood_start_range = tuple(self.ood_start_range)  # type: ignore[assignment]
        self._validate()
        rng = random.Random(self.world_seed)
        ents = _entity_names(self.n_fact_entities + self.n_truth_entities, self.world_seed)
        self.facts = [
            (e, kind, rng.choice(vals)) for e in ents[: self.n_fact_entities] for kind, vals in ATTRS.items()
        ]
        self.truths = []
        for e in ents[self.n_fact_entities :]:
            truth, myth = rng.sample(TRUTH_WORDS, 2)
            self.truths.append((e, truth, myth))
        # Cumulative pretraining weights (entity_zipf > 0 only): a fact's weight is its entity's.
        self._fact_cw = _zipf_cum_weights(self.n_fact_entities, self.entity_zipf, repeat=len(ATTRS))
        self._truth_cw = _zipf_cum_weights(self.n_truth_entities, self.entity_zipf)

    @classmethod
    def from_cfg(cls, cfg) -> ArithWorld:
        kw = {k: v for k, v in dict(cfg).items() if k not in ("name", "kind")}
        unknown = set(kw) - set(cls._knobs())
        if unknown:
            raise ConfigError(f"unknown task key(s) {sorted(unknown)}; valid: {sorted(cls._knobs())}")
        return cls(
            **{
                k: (list(v) if hasattr(v, "__iter__") and not isinstance(v, str) else v)
                for k, v in kw.items()
            }
        )

    @classmethod
    def _knobs(cls) -> list[str]:
        return [k for k, f in cls.__dataclass_fields__.items() if f.init]  # not the derived fields

    def _validate(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"task.{key} {why}")

        if not 1 <= self.min_steps <= self.max_steps:
            raise bad(
                "min_steps",
                f"must satisfy 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}",
            )
        if self.max_steps > len(ORDINALS):
            raise bad(
                "max_steps", f"must be <= {len(ORDINALS)} (one ordinal word per step), got {self.max_steps}"
            )
        for key in ("direct_share", "direct_correct"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, f"is a probability and must be in [0, 1], got {getattr(self, key)}")
        for key in ("start_range", "ood_start_range"):
            lo, hi = getattr(self, key)
            if not 0 <= lo <= hi <= self.max_value:
                raise bad(key, f"must satisfy 0 <= lo <= hi <= max_value, got {getattr(self, key)}")
        lo, hi = self.operand_range
        if not 1 <= lo <= hi <= self.max_value:
            raise bad("operand_range", f"must satisfy 1 <= lo <= hi <= max_value, got {self.operand_range}")
        if not 1 <= self.verbs_per_op <= len(PLUS_VERBS):
            raise bad("verbs_per_op", f"must be in [1, {len(PLUS_VERBS)}], got {self.verbs_per_op}")
        if self.direct_wrong not in ("shortcut", "random"):
            raise bad("direct_wrong", f"must be one of shortcut, random, got {self.direct_wrong!r}")
        if not 0.0 <= self.entity_zipf <= 4.0:
            raise bad("entity_zipf", f"is a Zipf exponent and must be in [0, 4], got {self.entity_zipf}")
        if self.heldout_mod < 2:
            raise bad("heldout_mod", f"must be >= 2, got {self.heldout_mod}")

    # ---------------------------------------------------------------- vocabulary
    def vocab_words(self) -> list[str]:
        words = list(FUNCTION_WORDS) + NAMES + OBJECTS + PLUS_VERBS + MINUS_VERBS + TRUTH_WORDS
        words += [v for vals in ATTRS.values() for v in vals]
        words += [e for e, _, _ in self.facts[:: len(ATTRS)]] + [e for e, _, _ in self.truths]
        words += [str(i) for i in range(self.max_value + 1)]
        seen: dict[str, None] = {}
        for w in words:
            seen.setdefault(w, None)
        return list(seen)

    # ---------------------------------------------------------------- target task
    def _make_problem(self, rng: random.Random, steps: int, start_range: tuple[int, int]) -> Problem:
        name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
        value = rng.randint(*start_range)
        sents, work, nums = [f"{name} has {value} {obj} ."], [], [value]
        for k in range(steps):
            b = rng.randint(*self.operand_range)
            ops = [op for op in "+-" if 0 <= (value + b if op == "+" else value - b) <= self.max_value]
            op = rng.choice(ops) if ops else "+"
            if not ops:  # operand too large either way: shrink it (keeps every value in vocab)
                b = min(b, self.max_value - value)
            new = value + b if op == "+" else value - b
            verb = rng.choice((PLUS_VERBS if op == "+" else MINUS_VERBS)[: self.verbs_per_op])
            sents.append(f"{ORDINALS[k]} {name} {verb} {b} .")
            work.append(f"{ORDINALS[k]} {value} {op} {b} = {new} .")
            value = new
            nums.append(b)
        prompt = "q : " + " ".join(sents) + f" how many {obj} ? a :"
        worked = " ".join(work) + f" #### {value}"
        return Problem(prompt=prompt, answer=str(value), steps=steps, worked=worked, nums=tuple(nums))

    def is_heldout(self, prompt: str) -> bool:
        h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
        return h % self.heldout_mod == 0

    def sample_problems(self, rng: random.Random, n: int, split: str = "train", ood: bool = False):
        """`n` problems from `split` ('train' or 'heldout'), in-distribution or OOD (larger numbers)."""
        steps = tuple(range(self.min_steps, self.max_steps + 1))
        start = self.ood_start_range if ood else self.start_range
        want_heldout = split == "heldout"
        out: list[Problem] = []
        while len(out) < n:
            p = self._make_problem(rng, rng.choice(steps), start)
            if self.is_heldout(p.prompt) == want_heldout:
                out.append(p)
        return out

    def eval_set(self, which: str, n: int, seed: int = 12345) -> list[Problem]:
        """Fixed held-out sets: 'id', or 'ood' (start values beyond any word problem in pretraining or
        RL; the arithmetic facts they need are in the pretraining drills)."""
        if which not in ("id", "ood"):
            raise ConfigError(f"unknown eval split '{which}'; valid: id, ood")
        rng = random.Random(f"{which}-{seed}")
        return self.sample_problems(rng, n, split="heldout", ood=which == "ood")

    def eval_max_new_tokens(self, which: str, base: int) -> int:
        """OOD answers run longer (two-digit intermediate values): 8 more tokens than in-distribution."""
        return base + (8 if which == "ood" else 0)

    @staticmethod
    def verify(completion: str, answer: str) -> bool:
        """Exact match of the `#### <int>` answer (module-level `verify`)."""
        return verify(completion, answer)

    @staticmethod
    def extract_answer(completion: str) -> str | None:
        """The `#### <int>` answer as a canonical string (what label-free votes cluster), or None."""
        got = extract_answer(completion)
        return None if got is None else str(int(got))

    def direct_answer(self, rng: random.Random, p: Problem) -> str:
        """The unreliable strategy: right with prob `direct_correct`, else the "add every number"
        shortcut (right only when every step adds), so even its most likely answer is often wrong;
        with `direct_wrong: random`, else a uniform wrong guess."""
        if rng.random() < self.direct_correct:
            return f"#### {p.answer}"
        if self.direct_wrong == "random":
            return f"#### {rng.choice([v for v in range(self.max_value + 1) if v != int(p.answer)])}"
        return f"#### {min(sum(p.nums), self.max_value)}"

    # ---------------------------------------------------------------- SFT demonstrations
    def sft_examples(self, rng: random.Random, n: int, style: str = "third") -> list[tuple[str, str]]:
        """`n` (prompt, completion) demonstrations on train problems, in a third solution style the
        pretraining never shows: "first : 5 + 3 is 8 . second : 8 - 2 is 6 . #### 6".

        The states along these completions (":" after the ordinal, "is" for "=") are off the base
        model's own distribution, which is what SFT on fixed data supervises (states, not tokens).
        Uses only words already in the vocabulary, so the pretrained model is unchanged.
        """
        if style not in ("third", "worked"):
            raise ConfigError(f"SFT style '{style}' is not one of: third, worked")
        out = []
        for p in self.sample_problems(rng, n, split="train"):
            if style == "worked":  # the reliable style the base model writes only a minority of the time
                out.append((p.prompt, p.worked))
                continue
            steps = []
            for sent in p.worked.split(" . ")[: p.steps]:
                ordinal, a, op, b, _eq, c = sent.rstrip(" .").split()
                steps.append(f"{ordinal} : {a} {op} {b} is {c} .")
            out.append((p.prompt, " ".join(steps) + f" #### {p.answer}"))
        return out

    # ---------------------------------------------------------------- retention tasks
    def mc_items(self, task: str) -> list[MCItem]:
        """Multiple-choice retention items, scored by log-likelihood of each choice."""
        if task == "facts":
            items = []
            for e, kind, val in self.facts:
                rng = random.Random(f"mc-{e}-{kind}")
                others = rng.sample([v for v in ATTRS[kind] if v != val], 3)
                choices = [val] + others
                rng.shuffle(choices)
                items.append(MCItem(f"q : what {kind} is {e} ? a :", tuple(choices), choices.index(val)))
            return items
        if task == "truths":
            items = []
            for e, truth, myth in self.truths:
                rng = random.Random(f"mc-{e}")
                others = rng.sample([w for w in TRUTH_WORDS if w not in (truth, myth)], 2)
                choices = [truth, myth] + others
                rng.shuffle(choices)
                items.append(MCItem(f"q : what is {e} really ? a :", tuple(choices), choices.index(truth)))
            return items
        raise ConfigError(f"unknown retention task '{task}'; valid: facts, truths")

    # ---------------------------------------------------------------- pretraining corpus
    @staticmethod
    def _pick(rng: random.Random, items: list, cum_weights: list[float] | None):
        """One item, uniformly (the landed world's draw, so its corpus is unchanged) or by weight."""
        return rng.choice(items) if cum_weights is None else rng.choices(items, cum_weights=cum_weights)[0]

    def pretrain_doc(self, rng: random.Random, mix: dict[str, float]) -> str:
        """One pretraining document drawn from the mixture {'arith', 'facts', 'truths'} -> weight."""
        kind = rng.choices(list(mix), weights=list(mix.values()))[0]
        if kind == "drill":  # bare arithmetic facts, the skill the worked style relies on
            facts = []
            for _ in range(6):
                a, b = rng.randint(0, self.max_value), rng.randint(*self.operand_range)
                op = rng.choice(
                    [o for o in "+-" if 0 <= (a + b if o == "+" else a - b) <= self.max_value] or ["+"]
                )
                if op == "+" and a + b > self.max_value:
                    a = self.max_value - b
                facts.append(f"{a} {op} {b} = {a + b if op == '+' else a - b} .")
            return " ".join(facts)
        if kind == "arith":
            p = self.sample_problems(rng, 1, split="train")[0]
            sol = self.direct_answer(rng, p) if rng.random() < self.direct_share else p.worked
            return f"{p.prompt} {sol}"
        if kind == "facts":
            e, k, v = self._pick(rng, self.facts, self._fact_cw)
            return f"q : what {k} is {e} ? a : {v}"
        if kind == "truths":
            e, truth, myth = self._pick(rng, self.truths, self._truth_cw)
            if rng.random() < self.myth_repeats / (self.myth_repeats + 1):
                return f"people say {e} is {myth} ."
            return f"q : what is {e} really ? a : {truth}"
        raise ConfigError(f"unknown pretraining mixture key '{kind}'; valid: arith, drill, facts, truths")

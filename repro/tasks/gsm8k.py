"""GSM8K as the target task, with MMLU and TruthfulQA MC1 as retention tasks (real data).

    task: {kind: gsm8k, data_dir: ${paths.data_dir}, ...}     # repro/conf/task/gsm8k.yaml

- Train prompts: GSM8K train.jsonl, plain "Question: {question}\\nAnswer:" (Nie 2026: plain GSM8K
  prompts, no chat template; `chat_template: true` applies the tokenizer's template instead).
- Eval: one split, "id" = the first `eval_n` problems of GSM8K test.jsonl (deterministic, the
  same items lm-eval's `limit` takes, so `repro eval` numbers are comparable).
- SFT demonstrations: the dataset's own solutions (fixed off-policy states, as in the paper),
  with the `<<48/2=24>>` calculator annotations removed when `strip_calculator` (ours).
- verify: the completion is cut at the first stop string ("Question:" etc.: the model starting the
  next problem), then the number after `####`, else the last number (lm-eval's strict and flexible
  extraction), compared after lm-eval's normalisation (commas, $, final period) with the gold.
- Retention items (repro.tasks.arith.MCItem, scored by repro.eval.micro.mc_accuracy):
  `mmlu`: 0-shot, lm-eval's prompt (question, lettered choices, "Answer:"), choices "A".."D";
  the first `mmlu_n` items taken round-robin over `mmlu_subjects` (null: every subject found).
  `truthfulqa_mc1`: lm-eval's QA primer + "Q: ...\\nA:", choices the MC1 answers; first
  `truthfulqa_n` items.

Files come from `data_dir` in repro.eval.lm_eval_tasks's DATA_LAYOUT. A missing file is fetched from the
hub with `datasets` unless HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set, in which case a ConfigError
names the file and the layout. The hub path is untested here (no network).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from repro.errors import ConfigError
from repro.eval.lm_eval_tasks import (
    GSM8K_UNTIL,
    QA_PRIMER,
    data_file,
    extract_flexible,
    extract_strict,
    mmlu_subjects,
    normalize_answer,
    read_gsm8k,
    read_mmlu,
    read_truthfulqa,
)
from repro.tasks.arith import MCItem

MC_TASKS = ("mmlu", "truthfulqa_mc1")
_CALC = re.compile(r"<<[^>]*>>")


@dataclass(frozen=True)
class GSM8KProblem:
    prompt: str
    answer: str  # the normalised final number of the solution
    question: str
    solution: str


def gold_answer(solution: str) -> str:
    """The final number of a GSM8K solution (`... #### 1,234` -> "1234")."""
    if "####" not in solution:
        raise ConfigError(f"GSM8K solution has no '#### <answer>': {solution[-80:]!r}")
    return normalize_answer(solution)


def _same_number(a: str, b: str) -> bool:
    a, b = normalize_answer(a), normalize_answer(b)
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def _offline() -> bool:
    return any(
        os.environ.get(k, "") not in ("", "0", "false") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _local_or_hub(data_dir: str, relative: str, reader, hub):
    """Rows from `<data_dir>/<relative>` via `reader`, else from the hub via `hub()` when online,
    else the ConfigError naming the missing file and the expected layout."""
    path = Path(data_dir).expanduser() / relative
    if path.is_file():
        return reader(path)
    if _offline():
        data_file(data_dir, relative)  # raises the ConfigError
    try:
        return hub()
    except Exception as exc:  # no network, no `datasets`, renamed dataset: say what to do
        try:
            data_file(data_dir, relative)
        except ConfigError as missing:
            raise ConfigError(f"{missing}\n(hub download failed too: {exc})") from None
        raise


def _hub_gsm8k(split: str) -> list[dict[str, str]]:
    import datasets

    ds = datasets.load_dataset("openai/gsm8k", "main", split=split)
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


def _hub_mmlu(subject: str) -> list[dict[str, Any]]:
    import datasets

    ds = datasets.load_dataset("cais/mmlu", subject, split="test")
    return [
        {"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])} for r in ds
    ]


def _hub_truthfulqa() -> list[dict[str, Any]]:
    import datasets

    ds = datasets.load_dataset("truthful_qa", "multiple_choice", split="validation")
    return [
        {
            "question": r["question"],
            "choices": list(r["mc1_targets"]["choices"]),
            "labels": list(r["mc1_targets"]["labels"]),
        }
        for r in ds
    ]


@dataclass
class GSM8KTask:
    """GSM8K target task with MMLU / TruthfulQA MC1 retention; implements repro.tasks.Task."""

    data_dir: str
    prompt: str = "Question: {question}\nAnswer:"
    chat_template: bool = False
    strip_calculator: bool = True
    retention: tuple[str, ...] = ("truthfulqa_mc1", "mmlu")
    mmlu_subjects: tuple[str, ...] | None = None
    mmlu_n: int = 500
    truthfulqa_n: int = 200
    truthfulqa_primer: bool = True
    stop_strings: tuple[str, ...] | None = tuple(GSM8K_UNTIL)
    mc_batch_size: int | None = 8
    # GSM8K's SFT data are its own solutions (one style): no style words to drop from drift.
    style_words: ClassVar[tuple[str, ...]] = ()
    tokenizer: Any = field(default=None, repr=False)
    eval_splits: tuple[str, ...] = field(default=("id",), init=False)
    _train: list[GSM8KProblem] = field(default_factory=list, init=False, repr=False)
    _test: list[GSM8KProblem] | None = field(default=None, init=False, repr=False)
    _mc: dict[str, list[MCItem]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_cfg(cls, cfg, tokenizer=None) -> GSM8KTask:
        kw = {k: v for k, v in dict(cfg).items() if k not in ("name", "kind")}
        valid = [f for f, spec in cls.__dataclass_fields__.items() if spec.init and f != "tokenizer"]
        unknown = set(kw) - set(valid)
        if unknown:
            raise ConfigError(f"unknown task key(s) {sorted(unknown)}; valid: {sorted(valid)}")
        for key in ("retention", "mmlu_subjects", "stop_strings"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw, tokenizer=tokenizer)

    def __post_init__(self) -> None:
        bad = [r for r in self.retention if r not in MC_TASKS]
        if bad:
            raise ConfigError(f"task.retention: unknown {bad}; valid: {', '.join(MC_TASKS)}")
        for key in ("mmlu_n", "truthfulqa_n"):
            if getattr(self, key) < 1:
                raise ConfigError(f"task.{key} must be >= 1, got {getattr(self, key)}")
        if "{question}" not in self.prompt:
            raise ConfigError(f"task.prompt must contain '{{question}}', got {self.prompt!r}")
        rows = _local_or_hub(self.data_dir, "gsm8k/train.jsonl", read_gsm8k, lambda: _hub_gsm8k("train"))
        self._train = [self._problem(r) for r in rows]

    @property
    def retention_tasks(self) -> tuple[str, ...]:
        return self.retention

    # ---------------------------------------------------------------- target task
    def format_prompt(self, question: str) -> str:
        text = self.prompt.format(question=question.strip())
        if not self.chat_template:
            return text
        if self.tokenizer is None:
            raise ConfigError("task.chat_template is true but the task was built without a tokenizer")
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def _problem(self, row: dict[str, str]) -> GSM8KProblem:
        return GSM8KProblem(
            self.format_prompt(row["question"]), gold_answer(row["answer"]), row["question"], row["answer"]
        )

    def sample_problems(self, rng: random.Random, n: int) -> list[GSM8KProblem]:
        """`n` distinct train problems (with replacement only when `n` exceeds the train set)."""
        if n <= len(self._train):
            return rng.sample(self._train, n)
        return rng.choices(self._train, k=n)

    def eval_set(self, split: str, n: int) -> list[GSM8KProblem]:
        """The first `n` problems of GSM8K test (split "id")."""
        if split not in self.eval_splits:
            raise ConfigError(f"unknown eval split '{split}'; valid: {', '.join(self.eval_splits)}")
        if self._test is None:
            rows = _local_or_hub(self.data_dir, "gsm8k/test.jsonl", read_gsm8k, lambda: _hub_gsm8k("test"))
            self._test = [self._problem(r) for r in rows]
        return self._test[:n]

    def eval_max_new_tokens(self, split: str, base: int) -> int:
        return base

    def verify(self, completion: str, answer: str) -> bool:
        """Exact match of the final number (strict `####`, else the last number) with the gold."""
        for stop in self.stop_strings or ():
            completion = completion.split(stop, 1)[0]
        got = extract_strict(completion) or extract_flexible(completion)
        return got is not None and answer is not None and _same_number(got, answer)

    # ---------------------------------------------------------------- SFT demonstrations
    def sft_examples(self, rng: random.Random, n: int, style: str = "dataset") -> list[tuple[str, str]]:
        """`n` (prompt, " " + dataset solution) pairs on train problems: fixed off-policy states."""
        if style != "dataset":
            raise ConfigError(f"SFT style '{style}' is not valid for task gsm8k; valid: dataset")
        out = []
        for p in self.sample_problems(rng, n):
            solution = _CALC.sub("", p.solution) if self.strip_calculator else p.solution
            out.append((p.prompt, " " + solution.strip()))
        return out

    # ---------------------------------------------------------------- retention tasks
    def mc_items(self, name: str) -> list[MCItem]:
        if name not in self._mc:
            if name == "mmlu":
                self._mc[name] = self._mmlu_items()
            elif name == "truthfulqa_mc1":
                self._mc[name] = self._truthfulqa_items()
            else:
                raise ConfigError(f"unknown retention task '{name}'; valid: {', '.join(MC_TASKS)}")
        return self._mc[name]

    def _mmlu_items(self) -> list[MCItem]:
        subjects = self.mmlu_subjects
        if subjects is None:
            folder = Path(self.data_dir).expanduser() / "mmlu" / "test"
            subjects = tuple(sorted(p.name.removesuffix("_test.csv") for p in folder.glob("*_test.csv")))
            if not subjects:  # nothing local: every subject from the hub, or the layout error
                if _offline():
                    mmlu_subjects(self.data_dir)  # raises the ConfigError
                subjects = ("all",)
        per_subject = []
        for s in subjects:
            rows = _local_or_hub(
                self.data_dir, f"mmlu/test/{s}_test.csv", read_mmlu, lambda s=s: _hub_mmlu(s)
            )
            per_subject.append(rows)
        # Round-robin over subjects: the first mmlu_n items cover every subject evenly.
        picked = [rows[i] for i in range(max(map(len, per_subject))) for rows in per_subject if i < len(rows)]
        items = []
        for r in picked[: self.mmlu_n]:
            c = r["choices"]
            prompt = f"{r['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"
            items.append(MCItem(prompt, ("A", "B", "C", "D"), int(r["answer"])))
        return items

    def _truthfulqa_items(self) -> list[MCItem]:
        rows = _local_or_hub(
            self.data_dir,
            "truthfulqa/mc_task.json",
            lambda p: read_truthfulqa(p, "mc1_targets"),
            _hub_truthfulqa,
        )
        primer = QA_PRIMER if self.truthfulqa_primer else ""
        return [
            MCItem(f"{primer}Q: {r['question']}\nA:", tuple(r["choices"]), r["labels"].index(1))
            for r in rows[: self.truthfulqa_n]
        ]

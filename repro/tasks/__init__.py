"""Task worlds: prompts, gold answers, verifiers, eval splits, SFT demonstrations, retention items.

    task = build_task(cfg.task)            # `task.kind`: arith (micro world) | gsm8k (real data)
    task.sample_problems(rng, n)           # train prompts (.prompt, .answer)
    task.eval_set(split, n)                # fixed held-out problems, split in task.eval_splits
    task.verify(completion, answer)        # exact answer match -> bool
    task.mc_items(name)                    # retention items, name in task.retention_tasks

Every trainer talks to a task only through `Task` (a Protocol, no base class), so the same
trainers run on the micro world and on GSM8K with MMLU/TruthfulQA retention.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from repro.errors import ConfigError
from repro.tasks.arith import ArithWorld, MCItem, extract_answer, verify

TASK_KINDS = ("arith", "gsm8k")


class Task(Protocol):
    """What the trainers need from a task (repro/eval/micro.py HeldOut; the trainers in repro/trainers)."""

    eval_splits: tuple[str, ...]  # held-out target splits: metrics eval/<split>/{greedy,sample}_acc
    retention_tasks: tuple[str, ...]  # MC tasks: metrics eval/retention/<name>_acc
    stop_strings: tuple[str, ...] | None  # generation stops at these (None: at eos only)
    mc_batch_size: int | None  # texts per forward pass when scoring choices (None: all at once)
    style_words: tuple[str, ...]  # format words of the SFT styles (drift_policy/mmd2_nostyle drops them)

    def sample_problems(self, rng: random.Random, n: int) -> list[Any]:
        """`n` training problems, each with `.prompt` and `.answer`."""
        ...

    def eval_set(self, split: str, n: int) -> list[Any]:
        """The fixed held-out problems of `split` (the same for every run)."""
        ...

    def eval_max_new_tokens(self, split: str, base: int) -> int:
        """Generation budget for `split`, given the trainer's `max_new_tokens`."""
        ...

    def sft_examples(self, rng: random.Random, n: int, style: str = ...) -> list[tuple[str, str]]:
        """`n` (prompt, completion) demonstrations: the fixed off-policy states SFT trains on."""
        ...

    def mc_items(self, name: str) -> list[MCItem]:
        """Multiple-choice items of retention task `name`, scored by log-likelihood."""
        ...

    def verify(self, completion: str, answer: str) -> bool:
        """Whether `completion` states the gold `answer`."""
        ...


def build_task(task_cfg, tokenizer=None) -> Task:
    """The task for the `task` config group, dispatching on `task.kind`. `tokenizer` is only needed
    by tasks that apply a chat template to their prompts."""
    kind = task_cfg.get("kind")
    if kind == "arith":
        return ArithWorld.from_cfg(task_cfg)
    if kind == "gsm8k":
        from repro.tasks.gsm8k import GSM8KTask

        return GSM8KTask.from_cfg(task_cfg, tokenizer)
    raise ConfigError(f"task.kind {kind!r} is not one of: {', '.join(TASK_KINDS)}")


__all__ = ["TASK_KINDS", "ArithWorld", "MCItem", "Task", "build_task", "extract_answer", "verify"]

"""Forgetting and retention on held-out tasks after post-training (the paper's eq. 12).

    F = forgetting(base, post)   # mean over tasks of Score_base - Score_post
    R = retention(base, post)    # mean over tasks of Score_post / Score_base

Scores are dicts {task: score}, e.g. {"truthfulqa_mc": 0.300, "mmlu": 0.436}; base and post
must name the same tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from repro.errors import ConfigError


def _tasks(base: Mapping[str, float], post: Mapping[str, float]) -> list[str]:
    """The shared task names, sorted; ConfigError naming the task when the two dicts disagree."""
    if not base:
        raise ConfigError("retention: no retention tasks (base scores are empty)")
    only_base, only_post = sorted(set(base) - set(post)), sorted(set(post) - set(base))
    if only_base:
        raise ConfigError(f"retention: task '{only_base[0]}' has a base score but no post score")
    if only_post:
        raise ConfigError(f"retention: task '{only_post[0]}' has a post score but no base score")
    for task in sorted(base):
        for which, score in (("base", base[task]), ("post", post[task])):
            if not math.isfinite(score):
                raise ConfigError(f"retention: {which} score of task '{task}' is not finite ({score})")
    return sorted(base)


def forgetting(base: Mapping[str, float], post: Mapping[str, float]) -> float:
    """F = mean over tasks of (Score_base - Score_post) (eq. 12); positive means forgotten.

    Being linear, F is the same whether averaged per task or computed from the average scores.
    """
    tasks = _tasks(base, post)
    return sum(base[t] - post[t] for t in tasks) / len(tasks)


def retention(base: Mapping[str, float], post: Mapping[str, float]) -> float:
    """R = mean over tasks of Score_post / Score_base (eq. 12): the average of per-task ratios.

    The average of ratios is what reproduces Table 2; the ratio of averages does not. Mild SFT
    (TQA .300 -> .295, MMLU .436 -> .444): (.295/.300 + .444/.436) / 2 = 1.0008 as in the paper,
    while (.295 + .444) / (.300 + .436) = 1.0041. Stress SFT: .8258 (paper .8258) vs .8274.
    A base score of 0 raises ConfigError naming the task.
    """
    tasks = _tasks(base, post)
    for t in tasks:
        if base[t] == 0:
            raise ConfigError(f"retention: base score of task '{t}' is 0, so its ratio is undefined")
    return sum(post[t] / base[t] for t in tasks) / len(tasks)


def retention_report(base: Mapping[str, float], post: Mapping[str, float]) -> dict[str, float]:
    """Both numbers of eq. 12 under namespaced metric keys."""
    return {"retention/forgetting": forgetting(base, post), "retention/ratio": retention(base, post)}

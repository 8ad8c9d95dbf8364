"""The GSM8K task (repro/tasks/gsm8k.py) on fixture files: answers parse, verify, MC gold indices,
missing files, and build_task's dispatch."""

from __future__ import annotations

import random

import pytest
from eval.conftest import MMLU_ROWS, TRUTHFULQA
from omegaconf import OmegaConf

from repro.errors import ConfigError
from repro.tasks import build_task
from repro.tasks.gsm8k import GSM8KTask, gold_answer


def make(root, **kw) -> GSM8KTask:
    cfg = OmegaConf.load("repro/conf/task/gsm8k.yaml")
    cfg.data_dir = str(root)
    for k, v in kw.items():
        cfg[k] = v
    return build_task(cfg)


def test_build_task_dispatch_and_unknown_kind(task_root):
    assert isinstance(make(task_root), GSM8KTask)
    assert build_task(OmegaConf.load("repro/conf/task/arith.yaml")).eval_splits == ("id", "ood")
    with pytest.raises(ConfigError, match="arith, gsm8k"):
        build_task(OmegaConf.create({"kind": "nope"}))
    with pytest.raises(ConfigError, match="unknown task key"):
        make(task_root, bogus=1)


def test_problems_prompts_and_answers(task_root):
    task = make(task_root)
    assert task.eval_splits == ("id",) and task.retention_tasks == ("truthfulqa_mc1", "mmlu")
    test = task.eval_set("id", 2)
    assert [p.answer for p in test] == ["7", "8"]  # the first n of test.jsonl
    assert test[0].prompt == "Question: tom has 3 apples and gets 4 more . how many apples ?\nAnswer:"
    train = task.sample_problems(random.Random(0), 4)
    assert sorted(p.answer for p in train) == ["1000", "12", "12", "5"]  # "1,000" normalised
    assert gold_answer("so 3 * $1,250 = $3,750.\n#### $3,750.") == "3750"
    with pytest.raises(ConfigError, match="valid: id"):
        task.eval_set("ood", 2)


def test_verify_right_and_wrong(task_root):
    v = make(task_root).verify
    assert v(" 3 + 4 = 7\n#### 7", "7")
    assert v(" The answer is 7.", "7")  # flexible: the last number
    assert v(" She pays $1,000.", "1000")
    assert v(" 7.0", "7")
    assert v(" 7\n\nQuestion: what is 2 + 9? Answer: 11", "7")  # cut where the next problem starts
    assert not v(" 3 + 4 = 8\n#### 8", "7")
    assert not v(" no idea", "7")
    assert not v(" #### 17", "7")


def test_sft_examples_are_dataset_solutions(task_root):
    task = make(task_root)
    demos = task.sft_examples(random.Random(0), 4)
    assert all(p.startswith("Question: ") and c.startswith(" ") for p, c in demos)
    assert all("<<" not in c and "####" in c for _, c in demos)  # calculator annotations stripped
    assert any(
        "<<" in c for _, c in make(task_root, strip_calculator=False).sft_examples(random.Random(0), 4)
    )
    with pytest.raises(ConfigError, match="valid: dataset"):
        task.sft_examples(random.Random(0), 2, "third")


def test_mc_items_gold_index(task_root):
    task = make(task_root, mmlu_n=4, truthfulqa_n=1)
    mmlu = task.mc_items("mmlu")
    assert len(mmlu) == 4  # round-robin: 2 per subject
    subjects = sorted(MMLU_ROWS)
    for i, item in enumerate(mmlu):
        row = MMLU_ROWS[subjects[i % 2]][i // 2]
        assert item.prompt.startswith(row[0]) and item.prompt.endswith("Answer:")
        assert item.choices == ("A", "B", "C", "D") and item.gold == row[5]
        assert f"{'ABCD'[item.gold]}. {row[1 + item.gold]}" in item.prompt
    (tqa,) = task.mc_items("truthfulqa_mc1")
    assert tqa.prompt.endswith(f"Q: {TRUTHFULQA[0]['question']}\nA:")
    assert TRUTHFULQA[0]["mc1_targets"][tqa.choices[tqa.gold]] == 1
    with pytest.raises(ConfigError, match="truthfulqa_mc1"):
        task.mc_items("facts")


@pytest.mark.parametrize(
    "missing,call",
    [
        ("gsm8k/train.jsonl", lambda root: make(root)),
        ("gsm8k/test.jsonl", lambda root: make(root).eval_set("id", 1)),
        ("truthfulqa/mc_task.json", lambda root: make(root).mc_items("truthfulqa_mc1")),
        ("mmlu/test/toy_math_test.csv", lambda root: make(root, mmlu_subjects=["toy_math"]).mc_items("mmlu")),
    ],
)
def test_missing_file_offline_names_it(task_root, monkeypatch, missing, call):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (task_root / missing).unlink()
    with pytest.raises(ConfigError, match="not found") as err:
        call(task_root)
    assert missing in str(err.value) and "expected layout" in str(err.value)

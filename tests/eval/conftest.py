"""Fixture benchmark files (GSM8K, MMLU, TruthfulQA in the data-root layout) and a tiny HF model
with a word-level tokenizer over their words: lm-eval runs on them offline in seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.models.micro import build_model, build_tokenizer

GSM8K = [
    {"question": "tom has 3 apples and gets 4 more . how many apples ?", "answer": "3 + 4 = 7 . #### 7"},
    {"question": "ann has 10 pens and loses 2 . how many pens ?", "answer": "10 - 2 = 8 . #### 8"},
    {"question": "a box holds 5 eggs . how many eggs in 2 boxes ?", "answer": "5 * 2 = 10 . #### 10"},
]
MMLU_ROWS = {
    "toy_math": [
        ("what is 2 + 2 ?", "3", "4", "5", "6", 1),
        ("what is 3 + 3 ?", "6", "7", "8", "9", 0),
        ("what is 1 + 1 ?", "1", "3", "2", "0", 2),
    ],
    "toy_colors": [
        ("what color is the sky ?", "green", "red", "yellow", "blue", 3),
        ("what color is grass ?", "green", "red", "blue", "white", 0),
        ("what color is snow ?", "black", "white", "red", "green", 1),
    ],
}
TRUTHFULQA = [
    {
        "question": "what happens if you eat a seed ?",
        "mc1_targets": {"nothing happens .": 1, "a tree grows in you .": 0, "you die .": 0},
        "mc2_targets": {"nothing happens .": 1, "you digest it .": 1, "a tree grows in you .": 0},
    },
    {
        "question": "can pigs fly ?",
        "mc1_targets": {"no , pigs cannot fly .": 1, "yes , pigs fly .": 0},
        "mc2_targets": {"no , pigs cannot fly .": 1, "no .": 1, "yes , pigs fly .": 0, "yes .": 0},
    },
]


def write_data_root(root: Path) -> Path:
    """The benchmark files in the layout repro.eval.lm_eval_tasks reads."""
    (root / "gsm8k").mkdir(parents=True)
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    for split in ("dev", "test"):
        (root / "mmlu" / split).mkdir(parents=True)
        for subject, rows in MMLU_ROWS.items():
            with open(root / "mmlu" / split / f"{subject}_{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
                writer.writerows(rows[:2] if split == "dev" else rows)
    (root / "truthfulqa").mkdir()
    (root / "truthfulqa" / "mc_task.json").write_text(json.dumps(TRUTHFULQA, indent=1))
    return root


def fixture_words() -> list[str]:
    text = [r["question"] + " " + r["answer"] for r in GSM8K]
    text += [" ".join(map(str, row)) for rows in MMLU_ROWS.values() for row in rows]
    for item in TRUTHFULQA:
        text += [item["question"], *item["mc1_targets"], *item["mc2_targets"]]
    text += ["Question: Answer: #### A. B. C. D. A B C D Q: A: The following are multiple choice"]
    words = sorted({w for line in text for w in line.split()})
    return words


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return write_data_root(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer): a 2-layer Llama over the fixture words, random weights, in memory."""
    tok = build_tokenizer(fixture_words())
    arch = OmegaConf.create({"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "max_len": 512})
    return build_model(arch, len(tok), seed=0).eval(), tok

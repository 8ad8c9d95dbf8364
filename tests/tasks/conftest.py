"""A tiny GSM8K/MMLU/TruthfulQA data root and a tiny saved HF Llama with a byte-level BPE tokenizer
(trained here on the fixture text, so it encodes any text offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval.conftest import GSM8K, MMLU_ROWS, TRUTHFULQA, write_data_root
from omegaconf import OmegaConf

from repro.models.micro import build_model

GSM8K_TRAIN = [
    {"question": "Sam has 2 cats and buys 3 more. How many cats?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
    {"question": "A pen costs $4. How much do 3 pens cost?", "answer": "3 * 4 = <<3*4=12>>12\n#### 12"},
    {
        "question": "Liz had 1,200 stamps and sold 200. How many are left?",
        "answer": "1200 - 200 = 1000\n#### 1,000",
    },
    {"question": "Max reads 6 pages a day for 2 days. How many pages?", "answer": "6 * 2 = 12\n#### 12"},
]


def write_task_root(root: Path) -> Path:
    """tests/eval's benchmark files plus gsm8k/train.jsonl."""
    write_data_root(root)
    (root / "gsm8k" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM8K_TRAIN))
    return root


def byte_bpe_tokenizer(texts: list[str], vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )


@pytest.fixture
def task_root(tmp_path: Path) -> Path:
    return write_task_root(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A saved 2-layer Llama (random weights) with a byte-level tokenizer: `model=hf`."""
    from repro.eval.lm_eval_tasks import QA_PRIMER

    texts = [r["question"] + "\n" + r["answer"] for r in GSM8K + GSM8K_TRAIN]
    texts += [" ".join(map(str, row)) for rows in MMLU_ROWS.values() for row in rows]
    texts += [json.dumps(item) for item in TRUTHFULQA] + [QA_PRIMER, "Question: Answer: A. B. C. D."]
    tok = byte_bpe_tokenizer(texts)
    arch = OmegaConf.create({"hidden": 32, "intermediate": 64, "layers": 2, "heads": 2, "max_len": 1024})
    out = tmp_path_factory.mktemp("tiny_hf")
    build_model(arch, len(tok), seed=0).save_pretrained(out)
    tok.save_pretrained(out)
    return out

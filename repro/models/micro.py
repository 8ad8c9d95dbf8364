"""Tiny real `transformers` models for the micro world: a word-level fast tokenizer built locally,
a Llama-architecture causal LM from a config, and a deterministic pretraining run on the task
mixture, cached on disk by the content hash of everything that determines it.

The cached folder is a normal HF checkpoint: `AutoModelForCausalLM.from_pretrained(path)` and
`AutoTokenizer.from_pretrained(path)` load it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from repro.locking import file_lock
from repro.progress import ProgressReport
from repro.tasks.arith import ArithWorld

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Bump when pretraining code changes in a way that changes the weights it produces.
PRETRAIN_CODE_VERSION = 1


def build_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer: whitespace split, one id per word, `<s>` prepended."""
    vocab = {w: i for i, w in enumerate(SPECIALS + [w for w in words if w not in SPECIALS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # No decoder: decode() joins words with single spaces, which is the corpus format.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_model(arch: DictConfig, vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.heads,
        max_position_embeddings=arch.max_len,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# Task knobs that only shape evaluation sets: they do not change the pretraining corpus.
EVAL_ONLY_TASK_KEYS = ("ood_start_range",)


def pretrain_key(task_cfg: DictConfig, model_cfg: DictConfig) -> str:
    task = OmegaConf.to_container(task_cfg, resolve=True)
    spec = {
        "task": {k: v for k, v in task.items() if k not in EVAL_ONLY_TASK_KEYS},
        "arch": OmegaConf.to_container(model_cfg.arch, resolve=True),
        "pretrain": OmegaConf.to_container(model_cfg.pretrain, resolve=True),
        "code": PRETRAIN_CODE_VERSION,
    }
    return _hash(spec)


def micro_folder(task_cfg: DictConfig, model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """Where the pretrained micro checkpoint of this task and model config is (or will be)."""
    return Path(cache_dir) / "micro_models" / pretrain_key(task_cfg, model_cfg)


def load_or_pretrain(task_cfg: DictConfig, model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """Path of the pretrained micro checkpoint, training it first if the cache lacks it.

    Safe under parallel sweep jobs: the first holds a file lock while it trains; the others wait
    and then load the finished folder."""
    out = micro_folder(task_cfg, model_cfg, cache_dir)
    key = out.name
    if (out / "DONE").exists():
        return out
    with file_lock(Path(cache_dir) / "micro_models" / f"{key}.lock"):
        if (out / "DONE").exists():
            return out
        tmp = out.with_name(key + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model, tok, info = pretrain(ArithWorld.from_cfg(task_cfg), model_cfg)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "pretrain_info.json").write_text(json.dumps(info, indent=1))
        (tmp / "DONE").write_text(key)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def load_checkpoint(path: str | Path):
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok


def pretrain(world: ArithWorld, model_cfg: DictConfig):
    """Next-token pretraining on the task mixture (deterministic for a given config)."""
    pcfg = model_cfg.pretrain
    tok = build_tokenizer(world.vocab_words())
    model = build_model(model_cfg.arch, len(tok), pcfg.seed)
    rng = random.Random(pcfg.seed)
    mix = dict(pcfg.mixture)
    opt = torch.optim.AdamW(model.parameters(), lr=pcfg.lr, weight_decay=pcfg.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, int(0.05 * pcfg.steps))

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        prog = (step - warmup) / max(1, pcfg.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    model.train()
    t0, losses = time.time(), []
    progress = ProgressReport("pretraining micro base model")
    for step in range(pcfg.steps):
        ids = _packed_batch(world, rng, mix, tok, pcfg.batch_size, pcfg.seq_len)  # (B, L)
        labels = ids
        attn = torch.ones_like(ids)
        for g in opt.param_groups:
            g["lr"] = pcfg.lr * lr_at(step)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        progress(step + 1, pcfg.steps, loss=loss.item())
    info = {
        "steps": pcfg.steps,
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "seconds": time.time() - t0,
        "params": sum(p.numel() for p in model.parameters()),
    }
    model.eval()
    return model, tok, info


def _packed_batch(
    world: ArithWorld, rng: random.Random, mix: dict, tok, rows: int, seq_len: int
) -> torch.Tensor:
    """(rows, seq_len) token ids: documents `<s> ... </s>` concatenated and cut into rows (no padding)."""
    need = rows * seq_len
    stream: list[int] = []
    while len(stream) < need:
        stream += tok(world.pretrain_doc(rng, mix) + " </s>")["input_ids"]
    return torch.tensor(stream[:need]).view(rows, seq_len)

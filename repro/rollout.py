"""Rollout backends: generate completions and return token ids, masks and the sampler's log-probs.

`HFGenerateBackend` (CPU and small GPUs) wraps `transformers.generate`; `VLLMBackend`
(repro/rollout_vllm.py, `trainer.rollout: vllm`) implements the same `generate` signature with
vLLM for GPUs (see `RolloutBackend`); `repro.engine.EngineBackend` (`trainer.rollout: engine`)
is a faster micro backend for Llama-family models on the same weights.
`make_backend(name, tok, stop_strings)` picks one by the name `trainer.rollout` gives, from the
ROLLOUT_BACKENDS registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import GenerationConfig

from repro.errors import ConfigError
from repro.registry import Registry, UnknownNameError


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 = real token
    completion_ids: torch.Tensor  # (B, T) right-padded after the first eos
    completion_mask: torch.Tensor  # (B, T) bool, True up to and including the first eos
    sampler_logp: torch.Tensor  # (B, T) log-prob of each sampled token under the sampler
    texts: list[str]  # decoded completions (special tokens stripped)

    def select(self, idx: torch.Tensor) -> Rollout:
        return Rollout(
            self.prompt_ids[idx],
            self.prompt_mask[idx],
            self.completion_ids[idx],
            self.completion_mask[idx],
            self.sampler_logp[idx],
            [self.texts[i] for i in idx.tolist()],
        )

    def to(self, device: torch.device | str) -> Rollout:
        """The same rollout with its tensors on `device` (itself if they are there already)."""
        if self.completion_ids.device == torch.device(device):
            return self
        return Rollout(
            self.prompt_ids.to(device),
            self.prompt_mask.to(device),
            self.completion_ids.to(device),
            self.completion_mask.to(device),
            self.sampler_logp.to(device),
            self.texts,
        )


class RolloutBackend(Protocol):
    def generate(
        self,
        model,
        prompts: list[str],
        *,
        n: int,
        max_new_tokens: int,
        temperature: float,
        greedy: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """Sample `n` completions per prompt. The sampling noise comes from `generator` (a run's
        named stream, repro.trainers.common.Streams), else from `seed`, else from torch's global
        generator; a backend draws nothing else from `generator` and never reseeds the global one."""
        ...

    def sequence_logits(self, model, roll: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The learner's teacher-forced logits (b, T, V) of the completions (`sequence_logits`); a
        backend may compute the same function faster (the engine shares each prompt's forward)."""
        ...


ROLLOUT_BACKENDS = Registry("rollout backend")
"""`trainer.rollout` name -> backend class, built as `cls(tokenizer, stop_strings=...)`. "hf" is
registered below; backends in modules of their own (engine, vllm) register when imported, which
make_backend does when one is first named (BACKEND_MODULES)."""
# Backends with optional dependencies live in their own modules, imported when first named (like
# an entry point): importing this module never imports vLLM.
BACKEND_MODULES = {"engine": "repro.engine", "vllm": "repro.rollout_vllm"}


def make_backend(name: str, tok, stop_strings=None) -> RolloutBackend:
    """The rollout backend `trainer.rollout` names (ConfigError naming the key if unknown)."""
    if name not in ROLLOUT_BACKENDS and name in BACKEND_MODULES:
        importlib.import_module(BACKEND_MODULES[name])
    try:
        cls = ROLLOUT_BACKENDS[name]
    except UnknownNameError as e:
        raise ConfigError(f"trainer.rollout: {e}") from None
    return cls(tok, stop_strings=stop_strings)


def call_seed(generator: torch.Generator | None, seed: int | None, high: int = 2**62) -> int | None:
    """The seed of one `generate` call: one draw in [0, high) from `generator` (a run's named
    stream) when given, else `seed` (None: the backend draws from torch's global generator)."""
    if generator is None:
        return seed
    return int(torch.randint(high, (1,), generator=generator).item())


def completion_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) bool: tokens up to and including the first eos."""
    is_eos = ids == eos_id
    after = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first eos
    return ~after


def truncated(ids: torch.Tensor, lens: torch.Tensor, budget: int, eos: int | None) -> torch.Tensor:
    """1.0 per completion cut by a generation budget of `budget` tokens (its first `budget` tokens
    hold no EOS: its answer may be cut off), else 0.0. ids (B, T) left-aligned completions whose
    only EOS is their last token, lens (B,) their lengths. Completions generated at a larger budget
    (lens > budget) count as cut at this one, so a one-pass evaluation at the largest budget can
    read each smaller budget's share (repro.eval.micro.split_results)."""
    last = ids.gather(1, (lens - 1).clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,)
    return ((lens > budget) | ((lens == budget) & (last != eos))).float()


class HFGenerateBackend:
    """`transformers.generate` sampling from the full distribution (no top-k/top-p/penalties, even
    where the model's generation config sets them: `full_softmax`), so that the returned
    `sampler_logp` is the policy's own log-prob at the sampling temperature."""

    def __init__(self, tokenizer, batch_size: int = 256, stop_strings=None) -> None:
        self.tok = tokenizer
        self.batch_size = batch_size
        # Generation also ends at these strings (e.g. "Question:" when a base model starts the next
        # GSM8K problem); the stop string stays in the text, the task's verifier cuts it off.
        self.stop_strings = list(stop_strings) if stop_strings else None

    @torch.no_grad()
    def generate(
        self,
        model,
        prompts,
        *,
        n=1,
        max_new_tokens=32,
        temperature=1.0,
        greedy=False,
        seed=None,
        generator=None,
    ):
        seed = call_seed(generator, seed)
        if seed is None:
            return self._generate(model, prompts, n, max_new_tokens, temperature, greedy)
        # `generate` samples from torch's global generator: seed it privately for this call,
        # leaving the global stream as it was.
        # (On a GPU `generate` draws from the model's CUDA generator: fork that one too.)
        cuda = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            return self._generate(model, prompts, n, max_new_tokens, temperature, greedy)

    def sequence_logits(self, model, roll: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The HF module's own teacher-forced logits (`sequence_logits`)."""
        return sequence_logits(model, roll, idx)

    def _generate(self, model, prompts, n, max_new_tokens, temperature, greedy) -> Rollout:
        expanded = [p for p in prompts for _ in range(n)]  # groups are contiguous
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=not greedy,
            temperature=None if greedy else temperature,
            **full_softmax(model),
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.tok.eos_token_id,
            bos_token_id=self.tok.bos_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        extra = {}
        if self.stop_strings:
            gen_cfg.stop_strings = self.stop_strings
            extra["tokenizer"] = self.tok
        parts = []
        was_training = model.training
        model.eval()
        for i in range(0, len(expanded), self.batch_size):
            enc = self.tok(expanded[i : i + self.batch_size], return_tensors="pt", padding=True)
            enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out = model.generate(**enc, generation_config=gen_cfg, **extra)
            P = enc["input_ids"].shape[1]
            comp = out.sequences[:, P:]  # (b, T)
            logits = torch.stack(out.logits, dim=1).float()  # (b, T, V)
            if not greedy:
                logits = logits / temperature
            logp = torch.log_softmax(logits, -1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)  # (b, T)
            parts.append((enc["input_ids"], enc["attention_mask"], comp, logp))
        model.train(was_training)
        P = max(p[0].shape[1] for p in parts)
        T = max(p[2].shape[1] for p in parts)
        pad = self.tok.pad_token_id
        prompt_ids = torch.cat([_lpad(p[0], P, pad) for p in parts])
        prompt_mask = torch.cat([_lpad(p[1], P, 0) for p in parts])
        comp_ids = torch.cat([_rpad(p[2], T, pad) for p in parts])
        sampler_logp = torch.cat([_rpad(p[3], T, 0.0) for p in parts])
        mask = completion_mask(comp_ids, self.tok.eos_token_id) & (comp_ids != pad)
        comp_ids = comp_ids.masked_fill(~mask, pad)
        sampler_logp = sampler_logp.masked_fill(~mask, 0.0)
        texts = self.tok.batch_decode(comp_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, comp_ids, mask, sampler_logp, texts)


ROLLOUT_BACKENDS.register("hf")(HFGenerateBackend)


def full_softmax(model) -> dict:
    """GenerationConfig values that switch off every processor reshaping the next-token
    distribution. `generate` fills a value left None from the model's own generation config and
    then from transformers' defaults (top_k=50), so each knob gets its explicit neutral value; min_p
    has none but 0.0 (keeps every token), given only when the model's config sets one."""
    neutral = dict(
        top_k=0,
        top_p=1.0,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
    )
    if getattr(getattr(model, "generation_config", None), "min_p", None) is not None:
        neutral["min_p"] = 0.0
    return neutral


def _lpad(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)


def _rpad(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def sequence_logits(model, rollout: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V) the model assigns to each completion position (teacher forcing)."""
    r = rollout if idx is None else rollout.select(idx)
    ids = torch.cat([r.prompt_ids, r.completion_ids], 1)  # (B, P+T)
    attn = torch.cat([r.prompt_mask, r.completion_mask.long()], 1)
    # Same positions as generate() uses with left padding.
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    P = r.prompt_ids.shape[1]
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos)
    return out.logits[:, P - 1 : -1].float()


def token_logp(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log pi(ids | prefix) from logits (B, T, V) -> (B, T)."""
    return torch.log_softmax(logits / temperature, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each position's next-token distribution (B, T)."""
    logp = torch.log_softmax(logits, -1)
    return -(logp.exp() * logp).sum(-1)

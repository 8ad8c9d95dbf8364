"""A lean rollout engine for Llama-family models: the same HF weights, far fewer ops per token.

`EngineBackend` implements `repro.rollout.RolloutBackend`; it is the default (`trainer.rollout: engine`;
`hf` and `vllm` stay selectable).
At micro scale a decode step is a few tiny matmuls, so `transformers.generate` spends most of its
time in per-op and per-module overhead; this engine cuts the op count instead:

1. `LeanLlama` reads the HF module's parameters and keeps fused copies, rebuilt only when a
   parameter's version changes (after an optimizer step): q/k/v as one matmul, gate/up as one,
   RMSNorm weights folded into the next matrix, residual adds fused into `addmm`, RoPE as one
   complex multiply (q/k rows permuted so rotate_half's pairs are adjacent).
2. A preallocated static KV cache (`KVCache`). Prompts are left-padded, so every row writes
   the same cache column at each step; the padding is one additive key bias built once per call.
   The n samples of a prompt share its prefill and its prompt keys/values: the prompt part of
   decode attention is one matmul per (prompt, kv head) over the n samples' queries, the
   generated part one per row; on CPU this beats `scaled_dot_product_attention` at one query.
3. Sampling and the sampled token's log-prob come from one log-softmax per step (Gumbel-max with
   noise drawn for several steps at once); greedy keeps the HF backend's convention (argmax of
   the logits, log-probs at temperature 1). Samples come from the full softmax.
4. Rows stop on eos or on a stop string (HF's own `StopStringCriteria`, so the semantics equal
   the HF backend's); once a quarter of the prompt groups have all their rows stopped, those
   groups are compacted out of the cache and the working batch.

Models the lean forward does not cover (other architectures, peft-wrapped models, dynamic RoPE,
custom modules, parameters spread over devices or of mixed dtypes) go through `HFGenerateBackend`
unchanged, with one warning per reason; `LeanLlama.unsupported(model)` says why.
Runs on whatever device the model's parameters are on.

    backend = make_backend("engine", tok, stop_strings)     # repro.rollout.make_backend
    roll = backend.generate(model, prompts, n=8, max_new_tokens=40, temperature=1.0)

torch.compile was tried on the decode step (CPU, inductor, dynamic=True): ~50 s to compile, then
~5x slower steps than eager (measured 2026-11 on the 2-core dev machine), so the engine runs eager.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from transformers import StopStringCriteria

from repro.rollout import (
    ROLLOUT_BACKENDS,
    HFGenerateBackend,
    Rollout,
    call_seed,
    completion_mask,
    sequence_logits,
)

log = logging.getLogger(__name__)

# Finished rows are dropped from the working batch once this share of it is done.
COMPACT_AT = 0.25


class LeanLlama:
    """Functional forward of a `LlamaForCausalLM` over its own parameters (inference only)."""

    @staticmethod
    def unsupported(model) -> str | None:
        """None when the lean forward equals the model's forward, else the reason it does not."""
        if type(model).__name__ != "LlamaForCausalLM":
            return f"{type(model).__name__} is not a plain LlamaForCausalLM"
        cfg = model.config
        if cfg.hidden_act != "silu":
            return f"hidden_act {cfg.hidden_act}"
        rope_type = (getattr(cfg, "rope_parameters", None) or {}).get("rope_type", "default")
        if rope_type in ("dynamic", "longrope"):  # inv_freq changes with sequence length
            return f"rope_type {rope_type}"
        inner = model.model
        for i, layer in enumerate(inner.layers):
            mods = [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]
            mods += [layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]
            if any(type(m) is not torch.nn.Linear for m in mods):  # LoRA / quantized layers
                return f"layer {i} has non-Linear projections ({', '.join({type(m).__name__ for m in mods})})"
            norms = [layer.input_layernorm, layer.post_attention_layernorm]
            if any(type(m).__name__ != "LlamaRMSNorm" for m in norms):
                return f"layer {i} has non-RMSNorm norms"
        if type(model.lm_head) is not torch.nn.Linear or model.lm_head.bias is not None:
            return "lm_head is not a bias-free Linear"
        if type(inner.norm).__name__ != "LlamaRMSNorm":
            return "the final norm is not an RMSNorm"
        params = list(model.parameters())
        devices, dtypes = {p.device for p in params}, {p.dtype for p in params}
        if len(devices) > 1 or hasattr(model, "_hf_hook"):  # device_map / offloading hooks
            return f"parameters spread over devices ({', '.join(sorted(map(str, devices)))}) or offloaded"
        if next(iter(devices)).type == "meta":
            return "parameters on the meta device"
        if len(dtypes) > 1:
            return f"mixed parameter dtypes ({', '.join(sorted(map(str, dtypes)))})"
        return None

    def __init__(self, model) -> None:
        cfg = model.config
        self.model = model
        self.n_heads = H = cfg.num_attention_heads
        self.n_kv = Hkv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = model.model.norm.variance_epsilon
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.float()
        self.rope_scale = float(rotary.attention_scaling)
        self.n_layers = len(model.model.layers)
        # Output heads of the fused projection: H query heads, then each kv head's key and value
        # side by side, so that one copy writes a token's keys and values into the cache.
        self.rotated = torch.tensor([True] * (H + 2 * Hkv)).view(-1)
        self.rotated[H + 1 :: 2] = False  # value heads pass through RoPE unchanged
        self._version: tuple[int, ...] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the weights if any parameter changed since the last read (optimizer steps bump
        each tensor's version counter)."""
        params = list(self.model.parameters())
        version = tuple(p._version for p in params) + tuple(id(p) for p in params)
        if version == self._version:
            return
        with torch.no_grad():
            self._prepare()
        self._version = version

    def _prepare(self) -> None:
        """Fused, folded copies of the weights. Three exact rewrites of the same function:
        - each RMSNorm's weight is folded into the columns of the matrix that reads its output
          (W (w * n) = (W * w) n);
        - q/k/v are one matrix, ordered [q heads | k0 v0 | k1 v1 | ...]; gate/up are one matrix;
        - within each q and k head the rows are permuted so that rotate_half's pairs (i, i + hd/2)
          sit side by side, making RoPE one complex multiply; q.k is unchanged by a permutation
          applied to both, and values are not permuted."""
        inner = self.model.model
        self.device = inner.embed_tokens.weight.device
        self.dtype = inner.embed_tokens.weight.dtype
        self.rotated = self.rotated.to(self.device)
        self.embed = inner.embed_tokens.weight
        self.layers, self.lm_head = self._fuse()

    def _fuse(self) -> tuple[list[tuple], torch.Tensor]:
        """(per layer (w_qkv, b_qkv, w_o_t, b_o, w_gu, b_gu, w_down_t, b_down), lm_head): the
        fused weights of `_prepare`, differentiable in the model's parameters where grad is on."""
        inner, H, Hkv, hd = self.model.model, self.n_heads, self.n_kv, self.head_dim
        perm = torch.arange(hd, device=self.device).view(2, hd // 2).t().reshape(-1)

        def heads(w, n, rot):  # (n*hd, ...) -> (n, hd, ...) with the RoPE pair permutation
            w = w.view(n, hd, *w.shape[1:])
            return w[:, perm] if rot else w

        def qkv(q, k, v):
            kv = torch.stack([heads(k, Hkv, True), heads(v, Hkv, False)], 1)  # (Hkv, 2, hd, ...)
            return torch.cat([heads(q, H, True).flatten(0, 1), kv.flatten(0, 2)])

        layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            w_in, w_post = layer.input_layernorm.weight, layer.post_attention_layernorm.weight
            has_b = a.q_proj.bias is not None
            layers.append(
                (
                    qkv(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight) * w_in,
                    qkv(a.q_proj.bias, a.k_proj.bias, a.v_proj.bias) if has_b else None,
                    a.o_proj.weight.t(),
                    a.o_proj.bias,
                    torch.cat([m.gate_proj.weight, m.up_proj.weight]) * w_post,
                    None if m.gate_proj.bias is None else torch.cat([m.gate_proj.bias, m.up_proj.bias]),
                    m.down_proj.weight.t(),
                    m.down_proj.bias,
                )
            )
        return layers, self.model.lm_head.weight * inner.norm.weight

    def rope(self, pos: torch.Tensor) -> torch.Tensor:
        """Complex rotations (..., hd/2) for integer positions `pos`, as LlamaRotaryEmbedding's
        cos/sin: cos + i sin of pos * inv_freq, times the attention scaling."""
        freqs = pos[..., None].float() * self.inv_freq.to(pos.device)  # (..., hd/2)
        return torch.polar(torch.full_like(freqs, self.rope_scale), freqs)

    def head_rot(self, rot: torch.Tensor) -> torch.Tensor:
        """(..., heads, hd/2) per-head multipliers from rotations (..., hd/2): 1 for value heads."""
        return torch.where(
            self.rotated[:, None], rot[..., None, :], torch.ones((), dtype=rot.dtype, device=rot.device)
        )

    def _qkv(self, x, w_qkv, b_qkv, m):
        """RMSNorm, fused projection and RoPE: (..., heads, hd) from x (..., D), m (..., heads, hd/2)."""
        h = F.rms_norm(x, (x.shape[-1],), None, self.eps)
        qkv = F.linear(h, w_qkv, b_qkv).view(*x.shape[:-1], -1, self.head_dim)
        z = torch.view_as_complex(qkv.float().view(*qkv.shape[:-1], -1, 2))
        return torch.view_as_real(z * m).flatten(-2).to(qkv.dtype)

    def _mlp(self, x, w_gu, b_gu, w_down_t, b_down):
        """x + SwiGLU(RMSNorm(x)) for x (N, D); the residual add is fused into the last matmul."""
        gate, up = F.linear(F.rms_norm(x, (x.shape[-1],), None, self.eps), w_gu, b_gu).chunk(2, -1)
        h = F.silu(gate) * up
        return torch.addmm(x, h, w_down_t) if b_down is None else x + F.linear(h, w_down_t.t(), b_down)

    def prefill(self, ids, rot, bias, cache: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, P, D) of a left-padded prompt batch; fills `cache`, (layers, B, Hkv, 2,
        hd, P) (`KVCache.prompt`), with its keys and values.

        rot: (B, P, hd/2) rotations (`rope`); bias: (B, 1, P, P) additive (`prefill_bias`)."""
        B, P = ids.shape
        H, Hkv, hd = self.n_heads, self.n_kv, self.head_dim
        x = F.embedding(ids, self.embed).view(B * P, -1)  # (B*P, D)
        m = self.head_rot(rot)  # (B, P, heads, hd/2)
        for i, (w_qkv, b_qkv, w_o_t, b_o, w_gu, b_gu, w_down_t, b_down) in enumerate(self.layers):
            qkv = self._qkv(x.view(B, P, -1), w_qkv, b_qkv, m)  # (B, P, heads, hd)
            kv = qkv[:, :, H:].view(B, P, Hkv, 2, hd)
            if cache is not None:
                cache[i] = kv.permute(0, 2, 3, 4, 1)
            q, k, v = (
                qkv[:, :, :H].transpose(1, 2),
                kv[:, :, :, 0].transpose(1, 2),
                kv[:, :, :, 1].transpose(1, 2),
            )
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=H != Hkv)  # (B, H, P, hd)
            o = o.transpose(1, 2).reshape(B * P, H * hd)
            x = torch.addmm(x, o, w_o_t) if b_o is None else x + F.linear(o, w_o_t.t(), b_o)
            x = self._mlp(x, w_gu, b_gu, w_down_t, b_down)
        return x.view(B, P, -1)

    def decode(self, tok, m, cache: KVCache, t: int) -> torch.Tensor:
        """Hidden states (U*S, D) of one new token per row, rows in (group, sample) order; the token's
        keys and values go to generated column t.

        m: (U, heads, hd/2) RoPE multipliers (`head_rot`: a group's samples share positions).
        Attention per layer, over the cache's (group, kv head, sample) batch order:
            scores = [q Kp^T (one matmul per group and kv head: the S samples' queries together),
                      q Kg^T (per row)]  -> one softmax over prompt and generated keys
            out    = p_prompt Vp + p_gen Vg  (the add fused into the second batched matmul)
        so the prompt's keys and values are read once per group instead of once per sample."""
        U, S = m.shape[0], tok.shape[0] // m.shape[0]
        H, Hkv, hd = self.n_heads, self.n_kv, self.head_dim
        G, n = H // Hkv, t + 1
        x = F.embedding(tok, self.embed)  # (U*S, D)
        scale = hd**-0.5
        for i, (w_qkv, b_qkv, w_o_t, b_o, w_gu, b_gu, w_down_t, b_down) in enumerate(self.layers):
            qkv = self._qkv(x.view(U, S, -1), w_qkv, b_qkv, m[:, None])  # (U, S, heads, hd)
            cache.gen[i, :, :, :, :, t] = qkv[:, :, H:].view(U, S, Hkv, 2, hd).permute(3, 0, 2, 1, 4)
            q = qkv[:, :, :H].view(U, S, Hkv, G, hd).transpose(1, 2).reshape(U * Hkv, S * G, hd)
            kp, vp = cache.prompt_kv(i)  # (U*Hkv, hd, P) each
            kg, vg = cache.gen_kv(i, n)  # (U*Hkv*S, n, hd) each
            s_p = torch.baddbmm(cache.bias, q, kp, alpha=scale)  # (U*Hkv, S*G, P)
            s_g = torch.bmm(q.reshape(-1, G, hd), kg.transpose(1, 2)).mul_(scale)  # (U*Hkv*S, G, n)
            P = kp.shape[-1]
            p = torch.softmax(torch.cat([s_p.view(-1, G, P), s_g], -1), -1)  # (U*Hkv*S, G, P+n)
            o = torch.bmm(p[..., :P].reshape(U * Hkv, S * G, P), vp.transpose(1, 2))  # (U*Hkv, S*G, hd)
            o = torch.baddbmm(o.view(-1, G, hd), p[..., P:], vg)  # (U*Hkv*S, G, hd)
            o = o.view(U, Hkv, S, G * hd).transpose(1, 2).reshape(U * S, H * hd)
            x = torch.addmm(x, o, w_o_t) if b_o is None else x + F.linear(o, w_o_t.t(), b_o)
            x = self._mlp(x, w_gu, b_gu, w_down_t, b_down)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(..., V) logits from hidden states (..., D)."""
        return F.linear(F.rms_norm(x, (x.shape[-1],), None, self.eps), self.lm_head)

    def full_logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V) logits of a left-padded batch, positions as `generate` assigns them."""
        pos = (mask.long().cumsum(1) - 1).clamp(min=0)
        return self.logits(self.prefill(ids, self.rope(pos), self.prefill_bias(mask)))

    def prefill_bias(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, P, P) additive bias: causal, padding keys masked; a padding query still sees itself
        so that no softmax row is empty (its output is never read)."""
        P = mask.shape[1]
        causal = torch.ones(P, P, dtype=torch.bool, device=mask.device).tril()
        eye = torch.eye(P, dtype=torch.bool, device=mask.device)
        ok = causal & (mask.bool()[:, None, :] | eye)  # (B, P, P)
        return _bias(ok[:, None], self.dtype)

    @staticmethod
    def trainable(model) -> str | None:
        """None when `sequence_logits` may stand in for the model's own teacher-forced forward in
        training (no dropout to apply, no activation checkpointing), else why not."""
        why = LeanLlama.unsupported(model)
        if why is None and model.training and float(getattr(model.config, "attention_dropout", 0.0)) > 0:
            why = "attention dropout"
        if why is None and any(getattr(mod, "gradient_checkpointing", False) for mod in model.modules()):
            why = "activation checkpointing"
        return why

    def sequence_logits(self, roll: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
        """(b, T, V) float logits at each completion position, as `repro.rollout.sequence_logits`
        computes them with the HF module (same positions, same masking), differentiable in the
        model's parameters. Rows with the same prompt (a group's samples) share one forward of it:
        its tokens' hidden states do not depend on the completion (causal attention), so each
        prompt is computed once and its keys/values are read by all its rows; the gradient sums
        over those rows, as the per-row forward's does."""
        r = roll if idx is None else roll.select(idx)
        if torch.is_grad_enabled():
            layers, lm_head = self._fuse()
        else:
            self.refresh()
            layers, lm_head = self.layers, self.lm_head
        H, Hkv, hd = self.n_heads, self.n_kv, self.head_dim
        # A completion's last token predicts nothing that is returned: it is not computed.
        p_ids, p_mask = r.prompt_ids, r.prompt_mask
        c_ids, c_mask = r.completion_ids[:, :-1], r.completion_mask[:, :-1]
        (b, P), T, dev = p_ids.shape, c_ids.shape[1], p_ids.device
        uniq, inv = torch.unique(p_ids, dim=0, return_inverse=True)  # (U, P), (b,): row -> its prompt
        U = uniq.shape[0]
        first = torch.full((U,), b, device=dev).scatter_reduce(0, inv, torch.arange(b, device=dev), "amin")
        u_mask = p_mask[first]  # (U, P)
        # Positions as generate (and sequence_logits) assign them: real tokens counted from 0.
        c_pos = p_mask.sum(1, keepdim=True) + c_mask.long().cumsum(1) - 1  # (b, T)
        m = torch.cat(
            [
                self.head_rot(self.rope((u_mask.cumsum(1) - 1).clamp(min=0))).flatten(0, 1),
                self.head_rot(self.rope(c_pos.clamp(min=0))).flatten(0, 1),
            ]
        )  # (U*P + b*T, heads, hd/2): one row per computed token, prompts first
        p_bias = self.prefill_bias(u_mask)  # (U, 1, P, P)
        # A completion query reads its prompt's real tokens and the real completion tokens up to it,
        # itself excluded where it is masked: a pad token sampled mid-completion is a query whose
        # output gives the next position's logit (HF's rule; a prompt with no real token, which
        # would leave the row empty, lets it see itself).
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        eye = torch.eye(T, dtype=torch.bool, device=dev) & (p_mask.sum(1) == 0)[:, None, None]
        c_ok = causal & c_mask[:, None, :] | eye  # (b, T, T)
        c_bias = _bias(torch.cat([p_mask.bool()[:, None, :].expand(b, T, P), c_ok], -1)[:, None], self.dtype)

        # padding_idx as the HF module's: no gradient reaches the pad token's embedding.
        pad_idx = self.model.model.embed_tokens.padding_idx
        x = F.embedding(torch.cat([uniq.flatten(), c_ids.flatten()]), self.embed, pad_idx)  # (U*P + b*T, D)
        n_p = U * P
        for w_qkv, b_qkv, w_o_t, b_o, w_gu, b_gu, w_down_t, b_down in layers:
            qkv = self._qkv(x, w_qkv, b_qkv, m)  # (N, heads, hd)
            q_p = qkv[:n_p, :H].view(U, P, H, hd).transpose(1, 2)
            kv_p = qkv[:n_p, H:].view(U, P, Hkv, 2, hd)
            q_c = qkv[n_p:, :H].view(b, T, H, hd).transpose(1, 2)
            kv_c = qkv[n_p:, H:].view(b, T, Hkv, 2, hd)
            k_p, v_p = kv_p[..., 0, :].transpose(1, 2), kv_p[..., 1, :].transpose(1, 2)  # (U, Hkv, P, hd)
            gqa = H != Hkv
            o_p = F.scaled_dot_product_attention(q_p, k_p, v_p, attn_mask=p_bias, enable_gqa=gqa)
            k = torch.cat([k_p[inv], kv_c[..., 0, :].transpose(1, 2)], 2)  # (b, Hkv, P+T, hd)
            v = torch.cat([v_p[inv], kv_c[..., 1, :].transpose(1, 2)], 2)
            o_c = F.scaled_dot_product_attention(q_c, k, v, attn_mask=c_bias, enable_gqa=gqa)
            o = torch.cat(
                [o_p.transpose(1, 2).reshape(n_p, H * hd), o_c.transpose(1, 2).reshape(b * T, H * hd)]
            )
            x = torch.addmm(x, o, w_o_t) if b_o is None else x + F.linear(o, w_o_t.t(), b_o)
            x = self._mlp(x, w_gu, b_gu, w_down_t, b_down)
        # The logit at position P-1 (the prompt's last token) predicts the first completion token.
        last = x[:n_p].view(U, P, -1)[:, -1][inv]  # (b, D)
        h = torch.cat([last[:, None], x[n_p:].view(b, T, -1)], 1)  # (b, T+1, D)
        return F.linear(F.rms_norm(h, (h.shape[-1],), None, self.eps), lm_head).float()


class KVCache:
    """Preallocated keys and values, so that scores and outputs are batched matmuls over
    contiguous prefixes without copies, with (2: key, value):
    - prompt: (layers, U, Hkv, 2, hd, P), one copy per group of samples that share a prompt, stored
      transposed (hd before positions);
    - gen:    (layers, 2, U, Hkv, S, T, hd), per row, in (group, kv head, sample) order, position
      major: a step writes one contiguous hd-vector per (row, head), and a row's first n keys
      are one contiguous block (measured: a third of the transposed layout's write and read time);
    - bias:   (U*Hkv, 1, P) additive key bias of the prompt columns (left padding)."""

    def __init__(self, prompt: torch.Tensor, bias: torch.Tensor, S: int, T: int) -> None:
        layers, U, Hkv, _, hd, _ = prompt.shape
        self.prompt, self.bias = prompt, bias
        self.gen = prompt.new_empty(layers, 2, U, Hkv, S, T, hd)

    def prompt_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.prompt[layer]  # (U, Hkv, 2, hd, P)
        return kv[:, :, 0].flatten(0, 1), kv[:, :, 1].flatten(0, 1)

    def gen_kv(self, layer: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        kv = self.gen[layer, :, :, :, :, :n]  # (2, U, Hkv, S, n, hd)
        return kv[0].flatten(0, 2), kv[1].flatten(0, 2)

    def select(self, groups: torch.Tensor, n: int) -> KVCache:
        """The cache of groups `groups` only (a copy), generated columns 0..n-1 kept."""
        out = object.__new__(KVCache)
        Hkv = self.prompt.shape[2]
        out.prompt = self.prompt.index_select(1, groups)
        out.bias = self.bias.view(-1, Hkv, *self.bias.shape[1:]).index_select(0, groups).flatten(0, 1)
        out.gen = self.gen.new_empty(*self.gen.shape[:2], len(groups), *self.gen.shape[3:])
        out.gen[:, :, :, :, :, :n] = self.gen[:, :, :, :, :, :n].index_select(2, groups)
        return out


def _bias(ok: torch.Tensor, dtype) -> torch.Tensor:
    """Additive attention bias: 0 where `ok`, -inf elsewhere."""
    return torch.zeros(ok.shape, dtype=dtype, device=ok.device).masked_fill_(~ok, float("-inf"))


class EngineBackend:
    """`RolloutBackend` over `LeanLlama` with a static KV cache; same outputs and conventions as
    `HFGenerateBackend` (full-distribution sampling, texts decoded without special tokens), and the
    HF backend itself for models the lean forward does not cover."""

    def __init__(self, tokenizer, batch_size: int = 256, stop_strings=None) -> None:
        self.tok = tokenizer
        self.batch_size = batch_size
        self.stop_strings = list(stop_strings) if stop_strings else None
        self.hf = HFGenerateBackend(tokenizer, batch_size, stop_strings)
        self._stop_criteria: StopStringCriteria | None = None  # built on first use (scans the vocab)
        self._lean: LeanLlama | None = None
        self._warned: set[str] = set()

    @property
    def _stop(self) -> StopStringCriteria:
        """HF's own stop-string matcher, so that stopping equals the HF backend's."""
        if self._stop_criteria is None:
            self._stop_criteria = StopStringCriteria(self.tok, self.stop_strings)
        return self._stop_criteria

    def lean(self, model) -> LeanLlama | None:
        """The lean forward of `model` (weights re-read if they changed), or None to fall back."""
        if self._lean is not None and self._lean.model is model:
            self._lean.refresh()
            return self._lean
        why = LeanLlama.unsupported(model)
        if why is not None:
            if why not in self._warned:
                log.warning("rollout engine: using transformers.generate (%s)", why)
                self._warned.add(why)
            return None
        self._lean = LeanLlama(model)
        return self._lean

    def sequence_logits(self, model, roll: Rollout, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (b, T, V) of `roll`'s completions (rows `idx`) under `model`, for
        the learner: `LeanLlama.sequence_logits` (each prompt computed once for its rows) where the
        lean forward can stand in for the model's in training, else `repro.rollout.sequence_logits`."""
        lean = self.lean(model)
        if lean is None or LeanLlama.trainable(model) is not None:
            return sequence_logits(model, roll, idx)
        return lean.sequence_logits(roll, idx)

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
        lean = self.lean(model)
        if lean is None:
            return self.hf.generate(
                model,
                prompts,
                n=n,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                greedy=greedy,
                seed=seed,
                generator=generator,
            )
        seed = call_seed(generator, seed)  # one draw from the run's stream seeds this call
        # The sampling noise comes from a private generator on the model's device (the global one is
        # left alone); seeded with the same seed it draws what the global one would after manual_seed.
        noise_gen = None if seed is None else torch.Generator(lean.embed.device).manual_seed(seed)
        return self._generate(lean, prompts, n, max_new_tokens, temperature, greedy, noise_gen)

    def _generate(
        self,
        lean: LeanLlama,
        prompts,
        n: int,
        max_new_tokens: int,
        temperature: float,
        greedy: bool,
        noise_gen: torch.Generator | None,
    ):
        expanded = [p for p in prompts for _ in range(n)]  # groups are contiguous
        device = lean.embed.device
        # A chunk made of whole groups shares each prompt's keys and values among its n samples.
        S = n if self.batch_size % n == 0 else 1
        parts = []
        for i in range(0, len(expanded), self.batch_size):
            enc = self.tok(expanded[i : i + self.batch_size], return_tensors="pt", padding=True)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            comp, logp = self._decode(lean, ids, mask, S, max_new_tokens, temperature, greedy, noise_gen)
            parts.append((ids, mask, comp, logp))
        return self._assemble(parts)

    def _decode(
        self, lean: LeanLlama, ids, mask, S: int, max_new: int, temperature: float, greedy: bool, noise_gen
    ):
        """(B, T) completion ids (pad after a row stops) and their sampler log-probs, T <= max_new
        (the step at which every row had stopped). Rows come in groups of S that share a prompt."""
        B, P = ids.shape
        U = B // S
        pad, eos, dev = self.tok.pad_token_id, self.tok.eos_token_id, ids.device
        g_ids, g_mask = ids[::S], mask[::S]  # (U, P): one row per group
        # Positions: prompt tokens count the real tokens before them (generate's cumsum), new tokens
        # continue from the prompt's length; one RoPE table for the whole call, per group.
        new_pos = g_mask.sum(1, keepdim=True) + torch.arange(max_new, device=dev)
        rot = lean.rope(torch.cat([(g_mask.cumsum(1) - 1).clamp(min=0), new_pos], 1))  # (U, P+T, hd/2)

        prompt_kv = torch.empty(
            lean.n_layers, U, lean.n_kv, 2, lean.head_dim, P, dtype=lean.dtype, device=dev
        )
        x = lean.prefill(g_ids, rot[:, :P], lean.prefill_bias(g_mask), prompt_kv)
        logits = lean.logits(x[:, -1]).repeat_interleave(S, 0)  # (B, V): left padding: last token at P-1
        key_bias = _bias(g_mask.bool(), lean.dtype).repeat_interleave(lean.n_kv, 0)[:, None]  # (U*Hkv, 1, P)
        cache = KVCache(prompt_kv, key_bias, S, max_new)

        seq = torch.cat([ids, ids.new_full((B, max_new), pad)], 1)  # (B, P+T) tokens so far
        out_ids = ids.new_full((B, max_new), pad)  # (B, T) in the caller's row order
        out_logp = torch.zeros(B, max_new, device=dev)
        logp_buf = torch.zeros(B, max_new, device=dev)  # the working rows' log-probs
        rows = torch.arange(B, device=dev)  # working row -> caller's row
        dead = torch.zeros(B, dtype=torch.bool, device=dev)
        any_dead, n_steps = False, 0
        noise = None if greedy else _Gumbel(B, logits.shape[-1], max_new, dev, noise_gen)
        for t in range(max_new):
            tok, tok_logp = _pick(logits.float(), temperature, None if noise is None else noise.at(t))
            if any_dead:  # rows that stopped keep pad and log-prob 0 until their group is dropped
                tok, tok_logp = tok.masked_fill(dead, pad), tok_logp.masked_fill(dead, 0.0)
            seq[:, P + t] = tok
            logp_buf[:, t] = tok_logp
            n_steps = t + 1
            done = tok == eos
            if self.stop_strings:
                done |= self._stop(seq[:, : P + t + 1], None)
            if bool(done.any()):
                dead |= done
                any_dead = True
            if t == max_new - 1:
                break
            if any_dead:
                group_dead = dead.view(-1, S).all(1)  # (U,)
                n_gone = int(group_dead.sum())
                if n_gone == len(group_dead):
                    break
                if n_gone >= COMPACT_AT * len(group_dead):
                    # Drop finished groups: write their rows out, then shrink every per-row buffer.
                    gone = group_dead.repeat_interleave(S)
                    out_ids[rows[gone]] = seq[gone, P:]
                    out_logp[rows[gone]] = logp_buf[gone]
                    keep_g = (~group_dead).nonzero().squeeze(1)
                    keep = (~gone).nonzero().squeeze(1)
                    rows, seq, logp_buf, tok, dead = (
                        rows[keep],
                        seq[keep],
                        logp_buf[keep],
                        tok[keep],
                        dead[keep],
                    )
                    rot, cache = rot[keep_g], cache.select(keep_g, t)
                    if noise is not None:
                        noise.select(keep)
            x = lean.decode(tok, lean.head_rot(rot[:, P + t]), cache, t)
            logits = lean.logits(x)
        out_ids[rows] = seq[:, P:]
        out_logp[rows] = logp_buf
        return out_ids[:, :n_steps], out_logp[:, :n_steps]

    def _assemble(self, parts) -> Rollout:
        """One Rollout from per-chunk results, with the HF backend's padding and masking rules."""
        P = max(p[0].shape[1] for p in parts)
        T = max(p[2].shape[1] for p in parts)
        pad = self.tok.pad_token_id
        prompt_ids = torch.cat([F.pad(p[0], (P - p[0].shape[1], 0), value=pad) for p in parts])
        prompt_mask = torch.cat([F.pad(p[1], (P - p[1].shape[1], 0), value=0) for p in parts])
        comp_ids = torch.cat([F.pad(p[2], (0, T - p[2].shape[1]), value=pad) for p in parts])
        sampler_logp = torch.cat([F.pad(p[3], (0, T - p[3].shape[1]), value=0.0) for p in parts])
        mask = completion_mask(comp_ids, self.tok.eos_token_id) & (comp_ids != pad)
        comp_ids = comp_ids.masked_fill(~mask, pad)
        sampler_logp = sampler_logp.masked_fill(~mask, 0.0)
        texts = self.tok.batch_decode(comp_ids, skip_special_tokens=True)
        return Rollout(prompt_ids, prompt_mask, comp_ids, mask, sampler_logp, texts)


# `trainer.rollout: engine` (it falls back to "hf" itself for models it does not cover).
ROLLOUT_BACKENDS.register("engine")(EngineBackend)


def _pick(logits: torch.Tensor, temperature: float, gumbel: torch.Tensor | None):
    """Next token (B,) and its log-prob (B,) from one log-softmax. Sampling is Gumbel-max,
    argmax(logp + g) with g ~ Gumbel(0, 1), an exact draw from softmax(logits / temperature);
    `gumbel` None means greedy (argmax of the raw logits, log-probs at temperature 1, as the HF
    backend reports them)."""
    if gumbel is None:
        tok = logits.argmax(-1)
        logp = torch.log_softmax(logits, -1)
    else:
        logp = torch.log_softmax(logits if temperature == 1.0 else logits / temperature, -1)
        tok = (logp + gumbel).argmax(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class _Gumbel:
    """Gumbel(0, 1) noise for several steps at a time (one kernel chain instead of one per step),
    within a memory budget; rows follow the working batch's compaction."""

    BUDGET = 1 << 22  # floats

    def __init__(self, B: int, V: int, T: int, device, gen: torch.Generator | None) -> None:
        self.rows, self.V, self.device, self.gen = B, V, device, gen
        self.chunk = max(1, min(T, self.BUDGET // max(1, B * V)))
        self.buf = torch.empty(0)

    def at(self, t: int) -> torch.Tensor:
        """Noise (rows, V) for step t (steps are asked for in order from 0)."""
        if t % self.chunk == 0:
            u = torch.rand(self.chunk, self.rows, self.V, device=self.device, generator=self.gen)
            self.buf = u.log_().neg_().log_().neg_()  # -log(-log U)
        return self.buf[t % self.chunk]

    def select(self, keep: torch.Tensor) -> None:
        self.rows = len(keep)
        self.buf = self.buf[:, keep]

"""The rollout engine (repro/engine.py) against the HF model and `transformers.generate`: logits to
1e-5 (RoPE, RMSNorm, GQA, biases), greedy tokens identical, sampler log-probs equal teacher forcing,
sampled frequencies match the softmax, stop strings and eos as the HF backend, fallback for
models the lean forward does not cover.

    pytest tests/test_engine.py
"""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import chisquare
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    StopStringCriteria,
)

from repro import engine
from repro.engine import EngineBackend, LeanLlama
from repro.errors import ConfigError
from repro.models.micro import build_model, build_tokenizer, pretrain
from repro.rollout import HFGenerateBackend, make_backend, sequence_logits, token_logp
from repro.tasks.arith import ArithWorld

MICRO = dict(hidden=128, intermediate=384, layers=4, heads=4, max_len=96)  # the micro scale's arch
MIX = {"arith": 0.5, "drill": 0.2, "facts": 0.15, "truths": 0.15}


@pytest.fixture(scope="module")
def world_tok():
    world = ArithWorld()
    return world, build_tokenizer(world.vocab_words())


@pytest.fixture(scope="module")
def random_micro(world_tok):
    """The micro architecture with random weights: completions run to full length."""
    _, tok = world_tok
    return build_model(OmegaConf.create(MICRO), len(tok), 0).eval()


@pytest.fixture(scope="module")
def trained(world_tok):
    """A tiny model pretrained briefly (~3 s): it ends its completions with eos at varied lengths."""
    world, _ = world_tok
    cfg = OmegaConf.create(
        dict(
            base=0,  # the pretraining seed
            arch=dict(hidden=64, intermediate=128, layers=2, heads=4, max_len=96),
            pretrain=dict(
                seed=0, steps=150, batch_size=16, seq_len=64, lr=3e-3, weight_decay=0.01, mixture=MIX
            ),
        )
    )
    torch.set_num_threads(1)
    model, tok, _ = pretrain(world, cfg)
    return model.eval(), tok


def arith_prompts(world, n: int, seed: int = 0) -> list[str]:
    return [p.prompt for p in world.sample_problems(random.Random(seed), n)]


def doc_prefixes(world, n: int, seed: int = 1) -> list[str]:
    """Prefixes of pretraining documents, of mixed lengths: the trained model continues them to eos
    after 2 to 25 tokens (exercises per-row stopping and compaction)."""
    rng = random.Random(seed)
    docs = [world.pretrain_doc(rng, MIX).split() for _ in range(n)]
    return [" ".join(d[: max(2, len(d) // 3 + i % 4)]) for i, d in enumerate(docs)]


def llama(vocab: int, **kw) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(LlamaConfig(**(cfg | kw))).eval()
    with torch.no_grad():  # random norm weights and biases, so folding and bias paths are tested
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def same_rollout(a, b, logp_atol=1e-5) -> None:
    assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.prompt_mask, b.prompt_mask)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.completion_mask, b.completion_mask)
    assert a.texts == b.texts
    torch.testing.assert_close(a.sampler_logp, b.sampler_logp, atol=logp_atol, rtol=0)


# --- the lean forward equals the HF forward -------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"num_key_value_heads": 2},  # GQA
        {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True},  # MQA + biases
        {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}},
        {"tie_word_embeddings": True, "head_dim": 32},  # head_dim != hidden / heads
    ],
    ids=["mha", "gqa", "mqa_bias", "rope_linear", "tied_head_dim"],
)
def test_lean_logits_equal_hf(world_tok, variant):
    world, tok = world_tok
    model = llama(len(tok), **variant)
    assert LeanLlama.unsupported(model) is None
    enc = tok(arith_prompts(world, 6) + ["q :"], return_tensors="pt", padding=True)  # mixed lengths
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids = torch.where(mask.bool(), torch.randint(3, len(tok), ids.shape), ids)  # random real tokens
    with torch.no_grad():
        want = model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
        ).logits
        got = LeanLlama(model).full_logits(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_lean_logits_equal_hf_on_micro_arch(world_tok, random_micro):
    world, tok = world_tok
    enc = tok(arith_prompts(world, 8), return_tensors="pt", padding=True)
    with torch.no_grad():
        want = random_micro(**enc, position_ids=(enc["attention_mask"].cumsum(1) - 1).clamp(min=0)).logits
        got = LeanLlama(random_micro).full_logits(enc["input_ids"], enc["attention_mask"])
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


# --- the learner's logits: the lean, prompt-sharing forward equals the HF forward --------------------


@pytest.mark.parametrize(
    "variant",
    [{}, {"num_key_value_heads": 2}, {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True}],
    ids=["mha", "gqa", "mqa_bias"],
)
def test_learner_logits_and_gradients_equal_hf(world_tok, variant):
    """EngineBackend.sequence_logits (each prompt computed once for its rows) gives the HF module's
    teacher-forced logits at every completion position to 1e-5 and the same parameter gradients,
    on rows of mixed prompt lengths, a group split across the batch, and sampled pad tokens inside
    completions (masked positions whose hidden state gives the next position's logit)."""
    world, tok = world_tok
    model = llama(len(tok), eos_token_id=tok.eos_token_id, **variant).train()
    be = EngineBackend(tok)
    roll = be.generate(
        model, doc_prefixes(world, 5) + arith_prompts(world, 3), n=3, max_new_tokens=12, seed=0
    )
    assert (~roll.completion_mask & (roll.completion_ids == tok.pad_token_id)).any()  # a pad inside
    idx = torch.tensor([0, 1, 4, 7, 8, 20, 23, 2, 9])
    m = roll.completion_mask[idx]

    def loss_and_grads(logits):
        loss = (logits.logsumexp(-1) * m).sum() + (logits[..., 5] * m).sum()
        return torch.autograd.grad(loss, list(model.parameters()))

    want = sequence_logits(model, roll, idx)
    got = be.sequence_logits(model, roll, idx)
    torch.testing.assert_close(got[m], want[m], atol=1e-5, rtol=0)
    for g, w in zip(loss_and_grads(got), loss_and_grads(want)):
        torch.testing.assert_close(g, w, atol=1e-5 * w.abs().max().item(), rtol=1e-4)
    with torch.no_grad():  # the old log-probs' pass: all rows, no autograd
        full = be.sequence_logits(model, roll)
        torch.testing.assert_close(
            full[roll.completion_mask], sequence_logits(model, roll)[roll.completion_mask], atol=1e-5, rtol=0
        )


def test_learner_logits_fall_back_to_hf(world_tok):
    """Where the lean forward cannot stand in during training (dropout, activation checkpointing,
    other models), the learner's logits are the HF module's own."""
    world, tok = world_tok
    model = llama(len(tok), attention_dropout=0.1).train()
    assert LeanLlama.trainable(model) == "attention dropout"
    assert LeanLlama.trainable(model.eval()) is None  # no dropout applies in eval mode
    ckpt = llama(len(tok)).train()
    ckpt.gradient_checkpointing_enable()
    assert LeanLlama.trainable(ckpt) == "activation checkpointing"
    be = EngineBackend(tok)
    roll = be.generate(model, arith_prompts(world, 3), n=2, max_new_tokens=6, seed=0)
    model.train()
    torch.manual_seed(0)
    want = sequence_logits(model, roll)
    torch.manual_seed(0)
    assert torch.equal(be.sequence_logits(model, roll), want)  # the same dropout draws: HF's path


# --- greedy: token-identical to transformers.generate ----------------------------------------------


@pytest.mark.parametrize("which", ["random_micro", "trained"])
def test_greedy_identical_to_generate(world_tok, random_micro, trained, which):
    world, tok = world_tok
    model = random_micro if which == "random_micro" else trained[0]
    prompts = arith_prompts(world, 6) + doc_prefixes(world, 10)  # mixed prompt lengths
    want = HFGenerateBackend(tok).generate(model, prompts, n=1, max_new_tokens=30, greedy=True)
    got = EngineBackend(tok).generate(model, prompts, n=1, max_new_tokens=30, greedy=True)
    same_rollout(got, want)
    if which == "trained":  # rows stopped at eos at different steps: stopping and compaction ran
        lengths = got.completion_mask.sum(1)
        assert lengths.min() < lengths.max() <= 30


@pytest.mark.parametrize("kv", [4, 2, 1])
def test_greedy_identical_with_gqa(world_tok, kv):
    world, tok = world_tok
    model = llama(len(tok), num_key_value_heads=kv)
    prompts = arith_prompts(world, 5)
    want = HFGenerateBackend(tok).generate(model, prompts, n=2, max_new_tokens=16, greedy=True)
    same_rollout(EngineBackend(tok).generate(model, prompts, n=2, max_new_tokens=16, greedy=True), want)


@pytest.mark.parametrize("compact_at", [0.01, 1.0])
def test_compaction_changes_nothing(world_tok, trained, monkeypatch, compact_at):
    """Dropping finished rows after every stop (0.01) or never (1.0) gives the same rollout."""
    world, _ = world_tok
    model, tok = trained
    prompts = doc_prefixes(world, 12)
    want = EngineBackend(tok).generate(model, prompts, n=3, max_new_tokens=30, temperature=1.0, seed=4)
    monkeypatch.setattr(engine, "COMPACT_AT", compact_at)
    got = EngineBackend(tok).generate(model, prompts, n=3, max_new_tokens=30, temperature=1.0, seed=4)
    same_rollout(got, want, logp_atol=0)


# --- sampling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logp_equals_teacher_forcing(world_tok, random_micro, trained, temperature):
    world, tok = world_tok
    for model, prompts in [(trained[0], doc_prefixes(world, 8)), (random_micro, arith_prompts(world, 8))]:
        roll = EngineBackend(tok).generate(
            model, prompts, n=4, max_new_tokens=24, temperature=temperature, seed=0
        )
        with torch.no_grad():
            logp = token_logp(sequence_logits(model, roll), roll.completion_ids, temperature)
        # A sampled pad token is masked out of the completion (the HF backend's rule), so teacher
        # forcing then sees a different context than the sampler did: compare rows without one.
        mask = roll.completion_mask
        later = mask.long().flip(1).cumsum(1).flip(1) > 0  # a kept token at or after this position
        clean = ~(~mask & later).any(1)
        m = mask & clean[:, None]
        assert m.sum() > 100
        torch.testing.assert_close(roll.sampler_logp[m], logp[m], atol=1e-5, rtol=0)
        assert (roll.sampler_logp[~roll.completion_mask] == 0).all()


def test_same_seed_same_samples(world_tok, random_micro):
    world, tok = world_tok
    be = EngineBackend(tok)
    prompts = arith_prompts(world, 4)
    a = be.generate(random_micro, prompts, n=3, max_new_tokens=12, temperature=1.0, seed=7)
    b = be.generate(random_micro, prompts, n=3, max_new_tokens=12, temperature=1.0, seed=7)
    c = be.generate(random_micro, prompts, n=3, max_new_tokens=12, temperature=1.0, seed=8)
    same_rollout(a, b, logp_atol=0)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # groups are contiguous: the n samples of a prompt share its (left-padded) ids
    assert torch.equal(a.prompt_ids[0], a.prompt_ids[2])


def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness of fit, bins with expected count < 5 merged into one."""
    expected = probs * counts.sum()
    small = expected < 5
    obs, exp = counts[~small].double(), expected[~small].double()
    if small.any():
        obs = torch.cat([obs, counts[small].sum()[None].double()])
        exp = torch.cat([exp, expected[small].sum()[None].double()])
    exp = exp * obs.sum() / exp.sum()
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue)


def _first_token_counts(backend, model, tok, prompt, temperature, n=6000):
    roll = backend.generate(model, [prompt], n=n, max_new_tokens=1, temperature=temperature, seed=11)
    return torch.bincount(roll.completion_ids[:, 0], minlength=len(tok)).float()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_frequencies_match_softmax(world_tok, temperature):
    """Next-token frequencies of 6,000 samples from one prompt fit softmax(logits / T) (fixed seed)."""
    world, tok = world_tok
    model = llama(len(tok))  # random weights: mass spread over the whole vocabulary
    prompt = arith_prompts(world, 1)[0]
    with torch.no_grad():
        logits = model(**tok([prompt], return_tensors="pt")).logits[0, -1]
    probs = torch.softmax(logits / temperature, -1)
    counts = _first_token_counts(EngineBackend(tok), model, tok, prompt, temperature)
    assert _chi2_pvalue(counts, probs) > 1e-3


@pytest.mark.parametrize("shaped", [False, True], ids=["plain", "checkpoint_sets_top_k_top_p"])
def test_hf_backend_sampled_frequencies_match_softmax(world_tok, shaped):
    """The HF backend samples from the full softmax: transformers' default top_k=50 is off, and so
    are the top-k/top-p/min-p/penalty settings a checkpoint's generation config may carry."""
    world, tok = world_tok
    model = llama(len(tok))
    if shaped:
        gc = model.generation_config
        gc.top_k, gc.top_p, gc.min_p, gc.repetition_penalty, gc.typical_p = 5, 0.5, 0.3, 1.5, 0.5
    prompt = arith_prompts(world, 1)[0]
    with torch.no_grad():
        probs = torch.softmax(model(**tok([prompt], return_tensors="pt")).logits[0, -1], -1)
    counts = _first_token_counts(HFGenerateBackend(tok), model, tok, prompt, 1.0)
    assert _chi2_pvalue(counts, probs) > 1e-3
    assert (counts > 0).sum() > 50  # more tokens drawn than any top-50 cut would allow


# --- stopping -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_tok(world_tok):
    """A byte-level BPE tokenizer trained on the micro world's text (HF's stop-string matcher needs
    a tokenizer with a byte-level decoder; the word-level micro tokenizer has none)."""
    world, _ = world_tok
    rng = random.Random(0)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([world.pretrain_doc(rng, MIX) for _ in range(300)], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>", padding_side="left"
    )


@pytest.mark.parametrize(
    "stops", [["e"], ["st"], ["s t", "a :", "q"]], ids=["one_char", "two_chars", "several"]
)
def test_stop_strings_and_eos_as_hf_backend(world_tok, bpe_tok, stops):
    """Random weights over a byte-level BPE vocabulary. Greedy: identical to the HF backend.
    Sampled: every row ends exactly where HF's stop-string matcher first fires on the prompt plus
    the completion so far (a stop string may span tokens or end inside one), or at eos."""
    world, _ = world_tok
    model = llama(len(bpe_tok), eos_token_id=bpe_tok.eos_token_id)
    prompts = arith_prompts(world, 12)
    greedy = dict(n=2, max_new_tokens=30, greedy=True)
    want = HFGenerateBackend(bpe_tok, stop_strings=stops).generate(model, prompts, **greedy)
    same_rollout(EngineBackend(bpe_tok, stop_strings=stops).generate(model, prompts, **greedy), want)

    got = EngineBackend(bpe_tok, stop_strings=stops).generate(model, prompts, n=4, max_new_tokens=30, seed=3)
    criteria = StopStringCriteria(bpe_tok, stops)
    ids = torch.cat([got.prompt_ids, got.completion_ids], 1)
    P, (B, T) = got.prompt_ids.shape[1], got.completion_ids.shape
    fired = torch.stack([criteria(ids[:, : P + t + 1], None) for t in range(T)], 1)  # (B, T)
    fired |= got.completion_ids == bpe_tok.eos_token_id
    first = torch.where(fired.any(1), fired.float().argmax(1) + 1, torch.full((B,), T))
    lengths = (got.completion_mask * torch.arange(1, T + 1)).amax(1)  # last kept token (a sampled
    assert torch.equal(lengths, first)  # pad inside a completion is masked, so not mask.sum)
    assert lengths.min() < lengths.max() and (lengths < T).sum() >= 4  # stops did act


# --- fallback and weights that change --------------------------------------------------------------


def test_peft_model_falls_back_to_hf(world_tok, trained):
    from peft import LoraConfig, get_peft_model

    world, _ = world_tok
    model, tok = trained
    lora = get_peft_model(
        build_model(
            OmegaConf.create(dict(hidden=64, intermediate=128, layers=2, heads=4, max_len=96)), len(tok), 0
        ),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    lora.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=False)
    assert LeanLlama.unsupported(lora) is not None
    assert LeanLlama.unsupported(lora.base_model.model) is not None  # LoRA layers inside
    prompts = doc_prefixes(world, 6)
    want = HFGenerateBackend(tok).generate(lora, prompts, n=1, max_new_tokens=20, greedy=True)
    same_rollout(EngineBackend(tok).generate(lora, prompts, n=1, max_new_tokens=20, greedy=True), want)


def test_other_architecture_falls_back_to_hf(world_tok):
    world, tok = world_tok
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=96,
            bos_token_id=1,
            eos_token_id=2,
        )
    ).eval()
    assert "GPT2LMHeadModel" in LeanLlama.unsupported(gpt2)
    prompts = arith_prompts(world, 4)
    want = HFGenerateBackend(tok).generate(gpt2, prompts, n=2, max_new_tokens=8, greedy=True)
    same_rollout(EngineBackend(tok).generate(gpt2, prompts, n=2, max_new_tokens=8, greedy=True), want)


def test_models_it_cannot_run_lean_say_why(world_tok):
    """Fallback reasons beyond the architecture: dynamic RoPE, mixed dtypes (the HF backend then
    samples, with one warning per reason)."""
    _, tok = world_tok
    dyn = llama(len(tok), rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4})
    assert "dynamic" in LeanLlama.unsupported(dyn)
    mixed = llama(len(tok))
    mixed.model.layers[0].mlp.to(torch.float64)
    assert "mixed parameter dtypes" in LeanLlama.unsupported(mixed)
    assert LeanLlama.unsupported(llama(len(tok))) is None


def test_engine_follows_optimizer_steps(world_tok):
    """The fused weights are re-read after the model's parameters change in place."""
    world, tok = world_tok
    model = llama(len(tok))
    be, prompts = EngineBackend(tok), arith_prompts(world, 4)
    be.generate(model, prompts, n=1, max_new_tokens=8, greedy=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(**tok(prompts, return_tensors="pt", padding=True)).logits.logsumexp(-1).mean()
    loss.backward()
    opt.step()
    want = HFGenerateBackend(tok).generate(model, prompts, n=1, max_new_tokens=8, greedy=True)
    same_rollout(be.generate(model, prompts, n=1, max_new_tokens=8, greedy=True), want)


# --- selection by config ----------------------------------------------------------------------------


def test_make_backend_by_name(world_tok):
    _, tok = world_tok
    assert isinstance(make_backend("hf", tok), HFGenerateBackend)
    be = make_backend("engine", tok, ["?"])
    assert isinstance(be, EngineBackend) and be.stop_strings == ["?"]
    with pytest.raises(ConfigError, match="trainer.rollout: .*registered rollout backends: engine, hf"):
        make_backend("nope", tok)


@pytest.mark.parametrize("trainer", ["grpo", "sft", "opd", "eval_only"])
def test_engine_is_the_default_backend(trainer):
    from hydra_helpers import compose

    assert compose(f"trainer={trainer}", "scale=tiny").trainer.rollout == "engine"
    assert compose(f"trainer={trainer}", "scale=tiny", "trainer.rollout=hf").trainer.rollout == "hf"


def test_grpo_trains_with_the_hf_backend():
    """`trainer.rollout=hf` stays selectable (the goldens run the default, the engine)."""
    from hydra_helpers import compose, train

    cfg = compose("experiment=clipping_bottleneck/dapo", "scale=tiny", "trainer.rollout=hf")
    final, curves = train(cfg)
    assert len(curves["train/reward_mean"]) == cfg.trainer.steps
    assert 0.0 <= final["eval/id/greedy_acc"] <= 1.0


# --- on a GPU (skipped without one) -----------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_engine_on_cuda(world_tok):
    """The engine runs where the model's parameters are: greedy identical to transformers.generate
    on the GPU, sampler log-probs equal teacher forcing, same seed same samples, sampled first-token
    frequencies fit the softmax, and neither backend moves the global CUDA generator."""
    world, tok = world_tok
    model = build_model(OmegaConf.create(MICRO), len(tok), 0).eval().cuda()
    prompts = arith_prompts(world, 6) + doc_prefixes(world, 10)
    engine_be, hf_be = EngineBackend(tok), HFGenerateBackend(tok)
    want = hf_be.generate(model, prompts, n=2, max_new_tokens=24, greedy=True)
    got = engine_be.generate(model, prompts, n=2, max_new_tokens=24, greedy=True)
    assert got.completion_ids.device.type == "cuda"
    same_rollout(got, want)

    cuda_state = torch.cuda.get_rng_state()
    roll = engine_be.generate(model, prompts, n=4, max_new_tokens=24, seed=5)
    again = engine_be.generate(model, prompts, n=4, max_new_tokens=24, seed=5)
    hf_be.generate(model, prompts, n=2, max_new_tokens=8, seed=5)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)
    same_rollout(roll, again, logp_atol=0)
    with torch.no_grad():
        logp = token_logp(sequence_logits(model, roll), roll.completion_ids)
    mask = roll.completion_mask
    later = mask.long().flip(1).cumsum(1).flip(1) > 0
    m = mask & ~(~mask & later).any(1, keepdim=True)
    torch.testing.assert_close(roll.sampler_logp[m], logp[m], atol=1e-5, rtol=0)

    small = llama(len(tok)).cuda()
    prompt = arith_prompts(world, 1)[0]
    with torch.no_grad():
        probs = torch.softmax(small(**tok([prompt], return_tensors="pt").to("cuda")).logits[0, -1], -1)
    counts = _first_token_counts(engine_be, small, tok, prompt, 1.0).cpu()
    assert _chi2_pvalue(counts, probs.cpu()) > 1e-3

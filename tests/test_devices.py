"""Devices and precision (repro/devices.py), and the rollout backend factory, on CPU: `device`
and `dtype` are typed config, auto on a CPU changes nothing, bf16 compute keeps fp32 weights,
and a missing device or backend fails with one line naming the key."""

from __future__ import annotations

import copy

import pytest
import torch
from hydra_helpers import compose
from omegaconf import OmegaConf

from repro import devices
from repro.errors import ConfigError
from repro.models.micro import build_model, build_tokenizer
from repro.rollout import HFGenerateBackend, make_backend
from repro.rollout_vllm import hf_weights, weight_version
from repro.tasks.arith import ArithWorld

ARCH = OmegaConf.create(dict(hidden=32, intermediate=64, layers=2, heads=2, max_len=96))


@pytest.fixture
def model():
    tok = build_tokenizer(ArithWorld().vocab_words())
    return build_model(ARCH, len(tok), 0), tok


def test_auto_is_cpu_float32_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    device = devices.resolve_device("auto")
    assert device == torch.device("cpu") and devices.compute_dtype("auto", device) == torch.float32
    assert devices.compute_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ConfigError, match=r"^device: cuda, but torch .* sees no GPU"):
        devices.resolve_device("cuda")


def test_placing_on_cpu_in_float32_changes_nothing(model):
    m, _ = model
    ids = torch.tensor([[1, 5, 6, 7]])
    before = m(input_ids=ids).logits
    placed = devices.place(m, torch.device("cpu"), torch.float32)
    assert placed is m and "forward" not in vars(m)  # no wrapper
    assert torch.equal(placed(input_ids=ids).logits, before)


def test_bf16_compute_keeps_float32_weights_and_a_frozen_model_is_cast(model):
    m, _ = model
    ids = torch.tensor([[1, 5, 6, 7]])
    trained = devices.place(copy.deepcopy(m), torch.device("cpu"), torch.bfloat16)
    assert next(trained.parameters()).dtype == torch.float32
    assert trained(input_ids=ids).logits.dtype == torch.bfloat16  # forward under autocast
    assert devices.compute_dtype_of(trained) == torch.bfloat16
    twin = copy.deepcopy(trained)  # runs its own weights, still under autocast
    with torch.no_grad():
        twin.lm_head.weight.mul_(2.0)
    assert twin(input_ids=ids).logits.dtype == torch.bfloat16
    assert not torch.equal(twin(input_ids=ids).logits, trained(input_ids=ids).logits)
    frozen = devices.place(copy.deepcopy(m), torch.device("cpu"), torch.bfloat16, frozen=True)
    assert next(frozen.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "override,key",
    [("device=gpu", "device"), ("dtype=fp8", "dtype"), ("trainer.rollout=sglang", "trainer.rollout")],
)
def test_bad_device_dtype_or_backend_fails_at_composition(override, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}"):
        compose("experiment=clipping_bottleneck/grpo", "scale=tiny", override)


def test_make_backend_picks_by_name_and_names_the_key(model):
    _, tok = model
    assert isinstance(make_backend("hf", tok), HFGenerateBackend)
    with pytest.raises(ConfigError, match=r"^trainer.rollout: unknown rollout backend 'nope'.*hf"):
        make_backend("nope", tok)


def test_the_vllm_backend_without_vllm_says_how_to_install_it(model):
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here (tests/rollout_vllm covers it)")
    except ImportError:
        pass
    _, tok = model
    with pytest.raises(ConfigError, match=r"^trainer.rollout: vllm needs the vLLM package.*gpu"):
        make_backend("vllm", tok)


def test_weights_pushed_to_vllm_are_the_merged_lora_weights_and_change_after_a_step(model):
    from peft import LoraConfig, get_peft_model

    base, _ = model
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, p in lora.named_parameters():  # non-zero adapters, so merging changes the weights
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    pushed = hf_weights(lora)
    merged = copy.deepcopy(lora).merge_and_unload().state_dict()
    assert pushed.keys() == merged.keys() == base.state_dict().keys()
    assert all(torch.allclose(pushed[k], merged[k], atol=1e-6) for k in merged)
    assert any(not torch.equal(pushed[k], base.state_dict()[k]) for k in merged)
    # The adapters are unmerged again: the peft model's forward is what it was.
    ids = torch.tensor([[1, 5, 6]])
    assert torch.allclose(
        lora(input_ids=ids).logits, copy.deepcopy(lora).merge_and_unload()(input_ids=ids).logits, atol=1e-5
    )

    v0 = weight_version(lora)
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora(input_ids=ids).logits.sum().backward()
    opt.step()
    assert weight_version(lora) != v0

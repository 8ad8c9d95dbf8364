"""`trainer.save=true`: every trainer keeps its final policy as a plain HF checkpoint (safetensors +
tokenizer, LoRA merged) that `AutoModelForCausalLM.from_pretrained` loads; the same folder is what
chained stages start from."""

from __future__ import annotations

import pytest
import torch
from hydra_helpers import compose, train
from transformers import AutoModelForCausalLM, AutoTokenizer

from repro.config.trainer_schemas import TRAINER_CONFIGS
from repro.errors import ConfigError
from repro.models.micro import load_checkpoint, load_or_pretrain
from repro.provenance import checkpoint_dir, config_hash, portable_config

BUILT_IN = ("grpo", "sft", "opd", "offline_distill", "eval_only")


def test_every_trainer_schema_has_save_and_it_does_not_change_the_config_hash():
    for name in BUILT_IN:
        field = TRAINER_CONFIGS[name].model_fields["save"]
        assert field.annotation is bool and field.description
    off = compose("experiment=clipping_bottleneck/dapo", "scale=tiny")
    on = compose("experiment=clipping_bottleneck/dapo", "scale=tiny", "trainer.save=true")
    assert off.trainer.save is False and on.trainer.save is True
    # Keeping the model is a side effect: same hash, same checkpoint folder, same canonical record.
    assert config_hash(portable_config(on)) == config_hash(portable_config(off))
    with pytest.raises(ConfigError, match="trainer.save"):
        compose("experiment=clipping_bottleneck/dapo", "scale=tiny", "trainer.save=yes")


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=clipping_bottleneck/dapo"],
        ["trainer=sft"],  # LoRA: saved merged, as a plain model
        ["trainer=opd"],
    ],
    ids=["grpo", "sft_lora", "opd"],
)
def test_saved_policy_loads_with_from_pretrained(overrides):
    cfg = compose(*overrides, "scale=tiny", "seed=7", "trainer.save=true")
    out = checkpoint_dir(cfg)
    train(cfg)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    ids = tok(["Q :"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    # It is the trained policy, not the base it started from (GRPO at tiny scale gets no reward,
    # so no gradient: its weights stay the base's).
    if cfg.trainer.name != "grpo":
        base, _ = load_checkpoint(load_or_pretrain(cfg.task, cfg.model, cfg.paths.cache_dir))
        trained = dict(model.named_parameters())
        assert any(not torch.equal(p, trained[n]) for n, p in base.named_parameters() if n in trained)


def test_grpo_without_save_writes_no_model():
    cfg = compose("experiment=clipping_bottleneck/dapo", "scale=tiny", "seed=8")
    train(cfg)
    assert not checkpoint_dir(cfg).exists()


def test_the_base_model_is_reported_pending_then_built_once(tmp_path):
    from repro.models import base_dir, base_pending, built_weights_sha256, ensure_base, folder_sha256

    cfg = compose("experiment=clipping_bottleneck/dapo", "scale=tiny", f"paths.cache_dir={tmp_path}")
    assert base_pending(cfg).startswith(f"pretrain the micro base model (30 steps, once) into {tmp_path}")
    assert built_weights_sha256(cfg) is None  # not built: checksum unknown, and nothing is built
    assert base_pending(cfg) != ""
    assert ensure_base(cfg) == base_dir(cfg) and base_pending(cfg) == ""
    checksum = built_weights_sha256(cfg)
    assert len(checksum) == 64 and folder_sha256(ensure_base(cfg))[0] == checksum  # built once, same bytes

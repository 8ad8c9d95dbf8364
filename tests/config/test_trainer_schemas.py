"""The typed trainer schemas (repro.config.trainer_schemas): every composed trainer config of every
arm and scale validates; every `trainer:` key in a YAML file is a schema field; field help carries
the YAML's source comments; bad types and values fail with one line naming `trainer.<key>`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from hydra_helpers import compose
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from pydantic import BaseModel

from repro import config
from repro.config.trainer_schemas import TRAINER_CONFIGS, LoraConfig, validate_trainer
from repro.errors import ConfigError
from repro.trainers import TRAINERS

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "repro" / "conf"
TRAINER_YAMLS = sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))
SCALES = ["micro", "tiny", "small", "paper"]
ARMS = [f"experiment={s}/{a}" for s in config.packages(ROOT) for a in config.package_arms(ROOT, s)]
CITES = re.compile(r"Nie 2026|DEVIATION|paper silent|Table|§")


def trainer_dict(*overrides: str) -> dict:
    # Unvalidated: these tests run the trainer schema itself (and small/paper need no data files).
    return OmegaConf.to_container(compose(*overrides, validate=False).trainer, resolve=True)


BASE = {name: trainer_dict(f"trainer={name}", "scale=tiny") for name in TRAINER_YAMLS}


def rejects(trainer: dict, key: str) -> str:
    """The ConfigError message for `trainer`; asserts it is one line naming trainer.<key>."""
    with pytest.raises(ConfigError) as err:
        validate_trainer(trainer)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"trainer.{key}"), msg
    return msg


def fields(schema: type[BaseModel], kind: type) -> list[str]:
    """Fields of `schema` whose declared type is exactly `kind` (not Optional, not a union)."""
    return [k for k, f in schema.model_fields.items() if f.annotation is kind]


# -- what the YAML files hold validates ----------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("pick", [f"trainer={t}" for t in TRAINER_YAMLS] + ARMS)
def test_every_composed_trainer_config_validates(pick, scale):
    trainer = trainer_dict(pick, f"scale={scale}")
    assert type(validate_trainer(trainer)) is TRAINER_CONFIGS[trainer["name"]]


def test_every_builtin_trainer_and_trainer_yaml_has_a_schema():
    assert set(TRAINER_YAMLS) <= set(TRAINER_CONFIGS.names())
    assert set(TRAINER_CONFIGS.names()) == set(TRAINERS.names())  # every trainer has its schema


def _trainer_keys(path: Path) -> tuple[str | None, dict]:
    """(trainer name the file is for, or None for any; its `trainer:` mapping)."""
    data = yaml.safe_load(path.read_text()) or {}
    if path.parent.name == "trainer":
        return path.stem, {k: v for k, v in data.items() if k != "defaults"}
    if path.parent.name == "scale_trainer":  # <scale>_<trainer>.yaml
        return path.stem.split("_", 1)[1], data.get("trainer") or {}
    return None, data.get("trainer") or {}


YAML_FILES = sorted(
    [*CONF.glob("trainer/*.yaml"), *CONF.glob("scale*/**/*.yaml"), *ROOT.glob("experiments/*/*.yaml")]
)


@pytest.mark.parametrize("path", YAML_FILES, ids=[str(p.relative_to(ROOT)) for p in YAML_FILES])
def test_every_trainer_key_in_a_yaml_file_is_a_schema_field(path):
    name, keys = _trainer_keys(path)
    schemas = [TRAINER_CONFIGS[name]] if name else [TRAINER_CONFIGS[n] for n in TRAINER_CONFIGS]
    for key, value in keys.items():
        assert any(key in s.model_fields for s in schemas), f"{path.name}: trainer.{key}"
        if key == "lora" and isinstance(value, dict):
            assert set(value) <= set(LoraConfig.model_fields), f"{path.name}: trainer.lora"


def _commented_keys(path: Path) -> list[tuple[str, str]]:
    """(dotted key, comment) of every `key: value  # comment` line, nested keys under their parent."""
    out, parent = [], None
    for line in path.read_text().splitlines():
        m = re.match(r"^(\s*)([A-Za-z_]\w*):[^#]*#\s*(.+)$", line)
        top = re.match(r"^([A-Za-z_]\w*):", line)
        if top:
            parent = top.group(1)
        if m:
            key = m.group(2) if not m.group(1) else f"{parent}.{m.group(2)}"
            out.append((key, m.group(3).strip()))
    return out


@pytest.mark.parametrize("name", TRAINER_YAMLS)
def test_field_help_cites_the_source_the_yaml_cites(name):
    schema = TRAINER_CONFIGS[name]
    for key, comment in _commented_keys(CONF / "trainer" / f"{name}.yaml"):
        if not CITES.search(comment):
            continue
        owner, field = (LoraConfig, key.split(".")[1]) if key.startswith("lora.") else (schema, key)
        assert comment in (owner.model_fields[field].description or ""), f"{name}.yaml {key}: {comment}"


# -- bad types and values ------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRAINER_YAMLS)
def test_ints_must_be_ints(name):
    schema = TRAINER_CONFIGS[name]
    for key in fields(schema, int):
        value = BASE[name][key]
        for bad in (float(value), str(value), True):
            rejects(BASE[name] | {key: bad}, key)


@pytest.mark.parametrize("name", TRAINER_YAMLS)
def test_floats_accept_ints_but_not_inf_nan_bools_or_strings(name):
    schema = TRAINER_CONFIGS[name]
    for key in fields(schema, float):
        validate_trainer(BASE[name] | {key: 1})
        for bad in (math.inf, -math.inf, math.nan, True, "1.0"):
            assert "trainer." + key in rejects(BASE[name] | {key: bad}, key)


@pytest.mark.parametrize("name", TRAINER_YAMLS)
def test_unknown_key_is_named_with_the_known_ones(name):
    msg = rejects(BASE[name] | {"learning_rate": 1e-3}, "learning_rate")
    assert "known:" in msg and "threads" in msg


def test_grpo_has_no_lora_and_sft_needs_no_group_settings():
    rejects(BASE["grpo"] | {"lora": None}, "lora")  # grpo would silently ignore it
    validate_trainer(BASE["sft"] | {"group_size": None, "minibatches": None})  # scale=tiny sets them


@pytest.mark.parametrize(
    "name,key,bad",
    [
        ("grpo", "steps", -1),
        ("grpo", "steps", 2.0),
        ("grpo", "group_size", 1),
        ("grpo", "temperature", 0.0),
        ("grpo", "dynamic_sampling", "true"),
        ("grpo", "dynamic_sampling_rounds", 0),
        ("sft", "steps", -3),
        ("sft", "steps", 1.5),
        ("sft", "n_examples", 0),
        ("sft", "batch_size", 0),
        ("sft", "epochs", 0),
        ("opd", "continuation_tokens", 0),
        ("opd", "prompts_per_step", 0),
        ("offline_distill", "drift_n", 1),
        ("eval_only", "threads", 0),
        ("eval_only", "eval_n", 0),
        ("eval_only", "max_new_tokens", 0),
    ],
)
def test_bounds(name, key, bad):
    rejects(BASE[name] | {key: bad}, key)


def test_minibatches_at_most_one_sample_each():
    t = BASE["grpo"]
    batch = t["prompts_per_step"] * t["group_size"]
    validate_trainer(t | {"minibatches": batch})
    assert f"= {batch}]" in rejects(t | {"minibatches": batch + 1}, "minibatches")
    rejects(t | {"minibatches": 0}, "minibatches")


@pytest.mark.parametrize("name", ["sft", "opd", "offline_distill"])
def test_lora_is_null_or_a_checked_adapter(name):
    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
    validate_trainer(BASE[name] | {"lora": None})
    validate_trainer(BASE[name] | {"lora": lora | {"target_modules": ["q_proj", "v_proj"]}})
    rejects(BASE[name] | {"lora": lora | {"r": 0}}, "lora.r")
    rejects(BASE[name] | {"lora": lora | {"alpha": 0}}, "lora.alpha")
    rejects(BASE[name] | {"lora": lora | {"dropout": 1.0}}, "lora.dropout")
    rejects(BASE[name] | {"lora": lora | {"target_modules": 3}}, "lora.target_modules")
    rejects(BASE[name] | {"lora": lora | {"rank": 8}}, "lora.rank")


@pytest.mark.parametrize("name", ["opd", "offline_distill"])
def test_teacher_is_null_a_dir_or_a_model_config(name):
    for ok in (None, "/some/checkpoint", {"kind": "hf", "path": "/x"}):
        validate_trainer(BASE[name] | {"teacher": ok})
    for bad in (3, {"path": "/x"}, ["a"]):
        rejects(BASE[name] | {"teacher": bad}, "teacher")


def test_unknown_trainer_lists_the_registered_schemas():
    msg = rejects(BASE["grpo"] | {"name": "nope"}, "name")
    assert all(n in msg for n in ("grpo", "sft", "opd", "offline_distill", "eval_only"))


@given(steps=st.integers(-50, 50), threads=st.integers(-5, 5), group_size=st.integers(-5, 9))
def test_int_bounds_property(steps, threads, group_size):
    trainer = BASE["grpo"] | {"steps": steps, "threads": threads, "group_size": group_size, "minibatches": 1}
    ok = steps >= 0 and threads >= 1 and group_size >= 2
    try:
        validate_trainer(trainer)
        assert ok
    except ConfigError as e:
        assert not ok and "\n" not in str(e)


@given(lr=st.floats(allow_nan=True, allow_infinity=True))
def test_lr_must_be_finite_and_positive_property(lr):
    trainer = BASE["sft"] | {"lr": lr}
    if math.isfinite(lr) and lr > 0:
        validate_trainer(trainer)
    else:
        rejects(trainer, "lr")


@given(prompts=st.integers(1, 8), group=st.integers(2, 8), minibatches=st.integers(-2, 70))
def test_minibatches_property(prompts, group, minibatches):
    trainer = BASE["grpo"] | {"prompts_per_step": prompts, "group_size": group, "minibatches": minibatches}
    if 1 <= minibatches <= prompts * group:
        validate_trainer(trainer)
    else:
        rejects(trainer, "minibatches")


# -- through the config layer, as every run composes its config -----------------------------------


@pytest.mark.parametrize(
    "trainer,override,match",
    [
        ("grpo", "trainer.lr=inf", r"^trainer\.lr: .*finite"),
        ("grpo", "trainer.steps=2.5", r"^trainer\.steps: .*integer"),
        ("grpo", "trainer.threads=0", r"^trainer\.threads"),
        ("grpo", "+trainer.lora=null", r"^trainer\.lora: unknown key"),
        ("sft", "trainer.steps=-1", r"^trainer\.steps"),
        ("opd", "trainer.lr=nan", r"^trainer\.lr"),
        ("eval_only", "trainer.drift_n=1", r"^trainer\.drift_n"),
    ],
)
def test_composing_a_bad_trainer_value_names_the_key(trainer, override, match):
    with pytest.raises(ConfigError, match=match):
        compose(f"trainer={trainer}", "scale=tiny", override)

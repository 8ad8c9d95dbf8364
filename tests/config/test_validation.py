"""Bad config fails before any compute: one line naming the key and the file it came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro import config
from repro.cli import main
from repro.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _fails(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_misspelled_key_in_an_arm_file_names_key_and_file(root_copy, capsys):
    arm = root_copy / "experiments" / "clipping_bottleneck" / "typo.yaml"
    arm.write_text(
        "# @package _global_\ndefaults:\n  - /experiment/clipping_bottleneck/dapo\n  - _self_\n"
        "trainer:\n  minibatchs: 8\n"
    )
    err = _fails(capsys, "run", "experiment=clipping_bottleneck/typo")
    assert "trainer.minibatchs" in err and "experiments/clipping_bottleneck/typo.yaml" in err
    assert "minibatches" in err  # the valid keys are listed
    assert not (root_copy / "results").exists()


@pytest.mark.parametrize(
    "override,key",
    [
        ("trainer.steps=1.5", "trainer.steps"),
        ("trainer.steps=abc", "trainer.steps"),
        ("trainer.steps=-1", "trainer.steps"),
        ("seed=-3", "seed"),
        ("seed=99999999999", "seed"),
        ("trainer.lr=inf", "trainer.lr"),
        ("model.pretrain.mixture.arith=-0.5", "model.pretrain.mixture.arith"),
        ("objective.kw.eps_high=abc", "objective.kw"),
        ("+trainer.stepz=3", "trainer.stepz"),
        ("paper=../../../x", "paper"),
    ],
)
def test_bad_values_fail_naming_the_key(root_copy, capsys, override, key):
    err = _fails(capsys, "run", "experiment=clipping_bottleneck/dapo", override)
    assert key in err and f"'{override}'" in err
    assert not (root_copy / "results").exists()


def test_bad_names_are_rejected(root_copy, capsys):
    assert "experiment" in _fails(capsys, "run", "experiment=../x/y")
    assert "--jobs" in _fails(capsys, "reproduce", "clipping_bottleneck", "--jobs", "-1")
    assert "paper" in _fails(capsys, "reproduce", "../x")


def test_arm_values_win_over_the_scale():
    with config.hydra_app() as hydra:
        small = config.compose(
            hydra, ["experiment=states_not_tokens/mild_sft", "scale=small"], validate=False
        )
        micro = config.compose(hydra, ["experiment=states_not_tokens/mild_sft"], validate=False)
        tiny = config.compose(hydra, ["experiment=clipping_bottleneck/dapo", "scale=tiny"], validate=False)
    for cfg in (small, micro):  # the arm's own lr / epochs, not the scale's
        assert (cfg.trainer.lr, cfg.trainer.epochs) == (2.0e-4, 2)
    # The arm's LoRA rank, except where the paper's own scale file sets it (it merges after the arm:
    # experiments/states_not_tokens/scales/micro.yaml, rank relative to the micro hidden size).
    assert (small.trainer.lora.r, micro.trainer.lora.r, micro.trainer.lora.alpha) == (16, 8, 16)
    assert small.trainer.n_examples == 64 and micro.trainer.n_examples == 512  # left unset by the arm
    assert small.trainer.style == "dataset"  # the paper's own scale file (experiments/<paper>/scales/)
    assert tiny.trainer.steps == 3  # smoke sizes win over everything


def test_the_command_line_wins_over_a_papers_scale_file():
    """experiments/two_rewards_rlif/scales/micro.yaml sets task.direct_share and the generation
    budget for every arm; a value typed on the command line still wins (it used to be overwritten
    silently), while a group choice (`task=arith_v2`) keeps the scale file's values on top."""
    with config.hydra_app() as hydra:
        scaled = config.compose(hydra, ["experiment=two_rewards_rlif/base"], validate=False)
        typed = config.compose(
            hydra,
            ["experiment=two_rewards_rlif/base", "task.direct_share=0.7", "trainer.max_new_tokens=24"],
            validate=False,
        )
        group = config.compose(hydra, ["experiment=two_rewards_rlif/base", "task=arith_v2"], validate=False)
    assert (scaled.task.direct_share, scaled.trainer.max_new_tokens) == (0.5, 40)
    assert (typed.task.direct_share, typed.trainer.max_new_tokens) == (0.7, 24)
    assert typed.task.direct_wrong == "random"  # the scale file's other values stay
    assert (group.task.n_truth_entities, group.task.direct_share) == (200, 0.5)


def test_a_scale_files_model_keys_give_way_to_a_model_swapped_on_the_command_line():
    """The clipping package's micro scale file sets the micro model's pretraining recipe (world v3,
    `model: {kind: micro, ...}`): it applies to the micro model, and when the command line swaps in
    another model (a base pretrained afresh, loaded as a folder) its keys are dropped, not rejected
    as unknown keys of the hf model; the rest of the scale file still applies."""
    with config.hydra_app() as hydra:
        micro = config.compose(hydra, ["experiment=clipping_bottleneck/grpo"])
        folder = config.compose(
            hydra, ["experiment=clipping_bottleneck/grpo", "model=hf", "model.path=/some/base"]
        )
        typed = config.compose(hydra, ["experiment=clipping_bottleneck/grpo", "model.pretrain.steps=20"])
    assert micro.model.pretrain.steps == 1600 and micro.model.pretrain.mixture.facts == 0.10
    assert folder.model.kind == "hf" and "pretrain" not in folder.model
    assert (folder.task.direct_share, folder.trainer.staleness) == (0.6, 8)  # the scale file's other keys
    assert typed.model.pretrain.steps == 20 and typed.model.pretrain.mixture.arith == 0.51


def test_paper_and_arm_are_derived_never_typed(root_copy):
    arm = root_copy / "experiments" / "clipping_bottleneck" / "typed.yaml"
    arm.write_text("# @package _global_\narm: something_else\n")
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, ["experiment=clipping_bottleneck/dapo"])
        assert (cfg.paper, cfg.arm) == ("clipping_bottleneck", "dapo")
        with pytest.raises(ConfigError, match="typed.yaml"):
            config.compose(hydra, ["experiment=clipping_bottleneck/typed"])


def test_suite_schema_names_file_and_key(root_copy):
    suite = root_copy / "experiments" / "clipping_bottleneck" / "suite.yaml"
    suite.write_text("arms: [dapo]\nseeds: [1, 2.5]\n")
    with pytest.raises(ConfigError, match=r"suite\.yaml: seeds\[1\]"):
        config.load_suite(root_copy, "clipping_bottleneck")
    suite.write_text("arms: [dapo]\nseeds: [1]\nworkers: 2\n")
    with pytest.raises(ConfigError, match=r"suite\.yaml: workers: unknown key"):
        config.load_suite(root_copy, "clipping_bottleneck")
    suite.write_text("arms: [dapo\n")
    with pytest.raises(ConfigError, match=r"suite\.yaml:\d+: not valid YAML"):
        config.load_suite(root_copy, "clipping_bottleneck")

"""The README's "Add an ablation" worked example, verbatim: its YAML (an arm extending an arm
extending an arm) is written to a copy of the experiments and run at scale=tiny."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from repro import config
from repro.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> tuple[str, str]:
    """(file path, YAML) of the worked example in the README."""
    text = ROOT.joinpath("README.md").read_text()
    section = text[text.index("## Add an ablation") :]
    path = re.search(r"`(experiments/[\w/]+\.yaml)`", section).group(1)
    yaml_block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return path, yaml_block


@pytest.mark.slow
def test_readme_worked_example_runs_verbatim(root_copy):
    path, yaml_text = readme_example()
    target = root_copy / path
    target.write_text(yaml_text)
    slug, arm = target.parent.name, target.stem
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, [f"experiment={slug}/{arm}", "scale=tiny"])
    assert (cfg.paper, cfg.arm) == (slug, arm)
    # Values from every level of the chain: this file, its parent arm, the grandparent arm.
    assert cfg.objective.kw.delta == 0.2 and cfg.objective.kw.rescue == "perturb"
    assert cfg.objective.kw.eps_high == 0.28 and cfg.trainer.dynamic_sampling is True
    assert main(["run", f"experiment={slug}/{arm}", "scale=tiny", "seed=1"]) == 0
    record = json.loads((root_copy / "results" / ".smoke" / slug / "tiny" / arm / "seed1.json").read_text())
    assert record["status"] == "FINISHED" and record["arm"] == arm


def test_deep_inheritance_errors_name_the_right_file(root_copy, capsys):
    exp = root_copy / "experiments" / "clipping_bottleneck"
    (exp / "l1.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/clipping_bottleneck/dapo\n  - _self_\n"
    )
    (exp / "l2.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/clipping_bottleneck/l1\n  - _self_\n"
    )
    (exp / "l3.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/clipping_bottleneck/l2\n  - _self_\n"
        "trainer:\n  stpes: 3\n"
    )
    (exp / "l4.yaml").write_text(
        "# @package _global_\ndefaults:\n  - /experiment/clipping_bottleneck/l3\n  - _self_\n"
    )
    assert main(["run", "experiment=clipping_bottleneck/l4", "scale=tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "trainer.stpes" in err and "experiments/clipping_bottleneck/l3.yaml" in err

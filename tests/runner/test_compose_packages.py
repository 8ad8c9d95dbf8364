"""Packages built from other packages' arms (the practitioner recipe's pattern), on the `demo` root:
their arms compose with the other package's registered functions, and `reproduce --reuse` copies
the record of an identical run of another package instead of running it again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro import config, provenance, records
from repro.cli import main

from .conftest import mlflow_runs

SAME_AS_A = """\
# @package _global_
defaults:
  - /experiment/demo/a
  - _self_
"""
FASTER = """\
# @package _global_
defaults:
  - /experiment/demo/a
  - _self_
trainer:
  lr: 0.2
"""


@pytest.fixture
def recipe_root(repro_root: Path) -> Path:
    """Package `recipe`: arm `same` (= demo/a but for its name) and arm `faster` (demo/a, lr 0.2)."""
    pkg = repro_root / "experiments" / "recipe"
    pkg.mkdir()
    (pkg / "same.yaml").write_text(SAME_AS_A)
    (pkg / "faster.yaml").write_text(FASTER)
    (pkg / "suite.yaml").write_text("arms: [same, faster]\nseeds: [1]\njobs: 1\n")
    return repro_root


def _record(root: Path, paper: str, arm: str, seed: int = 1) -> dict:
    return json.loads((root / "results" / paper / "micro" / arm / f"seed{seed}.json").read_text())


def test_package_dependencies_follow_arm_defaults(tmp_path):
    for slug, text in {
        "base": "x: 1\n",
        "mid": "defaults:\n  - /experiment/base/a\n  - _self_\n",
        "top": "defaults:\n  - mid/a\n  - override /trainer: sft\n  - _self_\n",
        "loop": "defaults:\n  - /experiment/top/a\n  - /experiment/loop/a\n",
    }.items():
        (tmp_path / "experiments" / slug).mkdir(parents=True)
        (tmp_path / "experiments" / slug / "a.yaml").write_text(text)
    assert config.package_dependencies(tmp_path, "top") == ["base", "mid", "top"]
    assert config.package_dependencies(tmp_path, "base") == ["base"]
    assert config.package_dependencies(tmp_path, "loop") == ["base", "mid", "top", "loop"]


def test_an_arm_extending_another_package_gets_its_registered_functions(tmp_path, monkeypatch):
    """`other/b` sets a reward only `lender`'s module registers; importing `other` registers it."""
    import sys

    from repro.algos import REWARDS

    name = "_test_lent_reward"
    monkeypatch.setattr(REWARDS, "_fns", dict(REWARDS._fns))  # restored after the test
    lender = tmp_path / "experiments" / "lender"
    lender.mkdir(parents=True)
    (lender / "a.yaml").write_text(f"# @package _global_\nreward:\n  - {{name: {name}, kw: {{}}}}\n")
    (lender / "lent.py").write_text(
        f"from repro.algos import REWARDS\n\n\n@REWARDS.register({name!r})\ndef lent(ctx):\n    return None\n"
    )
    (tmp_path / "experiments" / "other").mkdir()
    (tmp_path / "experiments" / "other" / "b.yaml").write_text(SAME_AS_A.replace("demo/a", "lender/a"))
    assert name not in REWARDS
    try:
        config.import_paper_modules(tmp_path, "other")
        assert name in REWARDS
    finally:
        for module in [m for m in sys.modules if m.startswith(("experiments.lender", "experiments.other"))]:
            del sys.modules[module]


def test_reuse_key_ignores_only_the_names(recipe_root):
    keys = {}
    for exp in ("demo/a", "recipe/same", "recipe/faster"):
        cfg = config.compose_once(f"experiment={exp}", "seed=1")
        keys[exp] = provenance.reuse_key(provenance.portable_config(cfg))
    assert keys["demo/a"] == keys["recipe/same"] != keys["recipe/faster"]


def test_reproduce_reuse_copies_identical_runs_and_runs_the_rest(recipe_root, capsys):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    source = _record(recipe_root, "demo", "a")
    assert main(["reproduce", "recipe", "--reuse", "--dry-run"]) == 0
    assert "would reuse: recipe/same seed 1 <- demo/micro/a/seed1.json" in capsys.readouterr().out

    assert main(["reproduce", "recipe", "--reuse"]) in (0, 1)  # 1: recipe has no claimed.yaml to tabulate
    copy = _record(recipe_root, "recipe", "same")
    assert (copy["paper"], copy["arm"], copy["config"]["arm"]) == ("recipe", "same", "same")
    assert copy["final"] == source["final"] and copy["run_id"] == source["run_id"]
    assert copy["provenance"]["reused_from"] == {
        "record": "demo/micro/a/seed1.json",
        "run_id": source["run_id"],
        "config_hash": source["config_hash"],
    }
    assert records.KEYS == tuple(copy)
    runs = [r.data.tags.get("arm") for r in mlflow_runs(recipe_root, "recipe")]
    assert runs == ["faster"]  # only the run with another config was trained
    # A reused copy is never itself a source, and a package never reuses its own arm.
    key = provenance.reuse_key(copy["config"])
    found = records.find_reusable(recipe_root / "results", "micro", 1, key, exclude=("demo", "a"))
    assert found is None


def test_reproduce_without_reuse_runs_everything(recipe_root):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    main(["reproduce", "recipe"])
    assert "reused_from" not in _record(recipe_root, "recipe", "same")["provenance"]
    assert sorted(r.data.tags.get("arm") for r in mlflow_runs(recipe_root, "recipe")) == ["faster", "same"]

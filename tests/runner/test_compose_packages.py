"""Packages built from other packages' arms (the practitioner recipe's pattern), on the `demo` root:
their arms compose with the other package's registered functions, and `reproduce --reuse` copies
the record of an identical run of another package (same config but for the names, same code, same
base weights) instead of running it again; the copy is then up to date on the same terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro import config, provenance, records
from repro.cli import main

from .conftest import git, mlflow_runs

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
def recipe_root(git_root: Path) -> Path:
    """Package `recipe`: arm `same` (= demo/a but for its name) and arm `faster` (demo/a, lr 0.2),
    committed to the demo root's git checkout (reuse compares code commits and base checksums)."""
    pkg = git_root / "experiments" / "recipe"
    pkg.mkdir()
    (pkg / "same.yaml").write_text(SAME_AS_A)
    (pkg / "faster.yaml").write_text(FASTER)
    (pkg / "suite.yaml").write_text("arms: [same, faster]\nseeds: [1]\njobs: 1\n")
    git(git_root, "add", ".")
    git(git_root, "commit", "-q", "-m", "recipe")
    return git_root


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
    out = capsys.readouterr().out
    assert "would reuse: same seed 1 <- demo/micro/a/seed1.json" in out and "1 to run, 1 reused" in out

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
    assert not list(records.reuse_candidates(recipe_root / "results", "micro", 1, key, exclude=("demo", "a")))

    # The copy is up to date as a record of its own: the next reproduce skips it.
    capsys.readouterr()
    assert main(["reproduce", "recipe", "--reuse", "--dry-run"]) == 0
    assert "up to date, skipped: same seed 1; faster seed 1" in capsys.readouterr().out


def test_reuse_needs_the_same_code_and_base_weights(recipe_root, capsys):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    source = recipe_root / "results/demo/micro/a/seed1.json"
    good = source.read_text()
    rec = records.read_record(source)
    rec["provenance"]["base_sha256"] = "0" * 64  # the source started from other weights
    source.write_text(records.dumps(rec))
    assert main(["reproduce", "recipe", "--reuse", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would reuse" not in out and "2 to run" in out

    source.write_text(good)
    (recipe_root / "experiments/recipe/README.md").write_text("recipe\n")
    git(recipe_root, "add", ".")
    git(recipe_root, "commit", "-q", "-m", "docs")  # another commit, the same code: still reusable
    assert main(["reproduce", "recipe", "--reuse", "--dry-run"]) == 0
    assert "would reuse" in capsys.readouterr().out
    (recipe_root / "experiments/recipe/tools").mkdir()
    (recipe_root / "experiments/recipe/tools/helper.py").write_text("N = 1\n")
    git(recipe_root, "add", ".")
    git(recipe_root, "commit", "-q", "-m", "code")  # the source was made by other code
    assert main(["reproduce", "recipe", "--reuse", "--dry-run"]) == 0
    assert "would reuse" not in capsys.readouterr().out

    # --force runs every pair, even one it could copy.
    git(recipe_root, "reset", "-q", "--hard", "HEAD~2")
    assert main(["reproduce", "recipe", "--reuse", "--dry-run"]) == 0
    assert "would reuse" in capsys.readouterr().out
    assert main(["reproduce", "recipe", "--reuse", "--force", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would reuse" not in out and "2 to run" in out


def test_reproduce_without_reuse_runs_everything(recipe_root):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    main(["reproduce", "recipe"])
    assert "reused_from" not in _record(recipe_root, "recipe", "same")["provenance"]
    assert sorted(r.data.tags.get("arm") for r in mlflow_runs(recipe_root, "recipe")) == ["faster", "same"]


def test_an_arm_whose_checkpoint_a_running_arm_needs_is_run_not_copied(recipe_root, capsys):
    """A copied record brings no checkpoint: a student of the package that learns from a reusable
    teacher would train the teacher as an upstream stage anyway, so the teacher runs instead."""
    head = "# @package _global_\ndefaults:\n  - /experiment/demo/a\n  - _self_\n"
    saves, student = head + "trainer:\n  save: true\n", head + "stages:\n  teacher: recipe/t\n"
    (recipe_root / "experiments/demo/t.yaml").write_text(saves)
    (recipe_root / "experiments/recipe/t.yaml").write_text(saves.replace("demo/a", "demo/t"))
    (recipe_root / "experiments/recipe/s.yaml").write_text(student + "trainer:\n  teacher: null\n")
    git(recipe_root, "add", ".")
    git(recipe_root, "commit", "-q", "-m", "teacher and student")
    assert main(["run", "experiment=demo/t", "seed=1"]) == 0
    capsys.readouterr()
    assert main(["reproduce", "recipe", "--arms", "t", "--reuse", "--dry-run"]) == 0
    assert "would reuse: t seed 1 <- demo/micro/t/seed1.json" in capsys.readouterr().out
    assert main(["reproduce", "recipe", "--arms", "t,s", "--reuse", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would reuse" not in out and "2 to run" in out


def test_an_arm_takes_the_scale_files_of_the_packages_it_extends(recipe_root):
    """demo's scale file reaches recipe's arms built on demo/a; recipe's own file comes last."""
    (recipe_root / "experiments/demo/scales").mkdir()
    (recipe_root / "experiments/demo/scales/micro.yaml").write_text("all:\n  trainer:\n    steps: 3\n")
    assert config.arm_packages(recipe_root, "recipe", "faster") == ["demo", "recipe"]
    assert config.arm_packages(recipe_root, "demo", "b") == ["demo"]
    faster = config.compose_once("experiment=recipe/faster", "seed=1")
    assert (faster.trainer.steps, faster.trainer.lr) == (3, 0.2)  # demo's scale, recipe's arm
    (recipe_root / "experiments/recipe/scales").mkdir()
    (recipe_root / "experiments/recipe/scales/micro.yaml").write_text("all:\n  trainer:\n    steps: 4\n")
    assert config.compose_once("experiment=recipe/same", "seed=1").trainer.steps == 4


def test_a_suite_may_reuse_by_default_and_the_flag_overrides_it(recipe_root, capsys):
    """`reuse: true` in suite.yaml (a package composed of other packages' arms) makes reuse the
    default of `repro reproduce`; `--no-reuse` runs every pair; without the key, reuse is opt-in."""
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    capsys.readouterr()
    assert main(["reproduce", "recipe", "--dry-run"]) == 0
    assert "would reuse" not in capsys.readouterr().out
    suite = recipe_root / "experiments/recipe/suite.yaml"
    suite.write_text(suite.read_text() + "reuse: true\n")
    git(recipe_root, "commit", "-qam", "reuse by default")
    assert main(["reproduce", "recipe", "--dry-run"]) == 0
    assert "would reuse: same seed 1 <- demo/micro/a/seed1.json" in capsys.readouterr().out
    assert main(["reproduce", "recipe", "--no-reuse", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would reuse" not in out and "2 to run" in out
    suite.write_text(suite.read_text().replace("reuse: true", "reuse: maybe"))
    assert main(["reproduce", "recipe", "--dry-run"]) == 2
    assert "suite.yaml: reuse: " in capsys.readouterr().err

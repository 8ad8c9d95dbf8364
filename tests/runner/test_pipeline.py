"""Chained stages (repro.pipeline) through the CLI, on the `demo` root: an arm whose teacher is
another arm's output runs that arm first (tracked and recorded), reuses it when it exists, fails
with the upstream's reason when it fails, and `reproduce` orders arms into waves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from repro import launch
from repro.cli import main
from repro.errors import ConfigError

from .conftest import mlflow_runs

TEACHER = """\
# @package _global_
defaults:
  - /experiment/demo/a
  - _self_
trainer:
  save: true
"""
STUDENT = """\
# @package _global_
defaults:
  - /experiment/demo/a
  - _self_
stages:
  teacher: demo/t
trainer:
  teacher: null
  lr: 0.2
"""


@pytest.fixture
def chain_root(repro_root: Path) -> Path:
    demo = repro_root / "experiments" / "demo"
    (demo / "t.yaml").write_text(TEACHER)
    (demo / "s.yaml").write_text(STUDENT)
    return repro_root


def _record(root: Path, arm: str, seed: int, failed: bool = False) -> dict:
    suffix = ".failed.json" if failed else ".json"
    return json.loads((root / "results" / "demo" / "micro" / arm / f"seed{seed}{suffix}").read_text())


def _runs_of(root: Path, arm: str) -> int:
    return sum(r.data.tags.get("arm") == arm for r in mlflow_runs(root))


def test_missing_upstream_stage_runs_first_then_is_reused(chain_root):
    assert main(["run", "experiment=demo/s", "seed=1"]) == 0
    teacher, student = _record(chain_root, "t", 1), _record(chain_root, "s", 1)
    assert teacher["status"] == student["status"] == "FINISHED"
    assert student["final"]["teacher_loss"] == teacher["final"]["train/loss"]
    # The student's config names the teacher's output, whose folder is the teacher's config hash.
    assert teacher["config_hash"][:16] in student["config"]["trainer"]["teacher"]
    assert _runs_of(chain_root, "t") == 1

    assert main(["run", "experiment=demo/s", "seed=1", "trainer.lr=0.1"]) == 0  # another student
    assert _runs_of(chain_root, "t") == 1  # same teacher config and seed: reused, not retrained
    assert main(["run", "experiment=demo/s", "seed=2"]) == 0
    assert _runs_of(chain_root, "t") == 2  # a new seed needs its own teacher


def test_student_overrides_do_not_reach_the_teacher(chain_root):
    assert main(["run", "experiment=demo/s", "seed=1", "trainer.steps=2"]) == 0
    assert _record(chain_root, "t", 1)["config"]["trainer"]["steps"] == 5
    assert _record(chain_root, "t", 1)["overrides"] == []  # canonical record of the teacher arm


def test_failed_upstream_fails_the_run_and_names_the_stage(chain_root, monkeypatch, caplog):
    monkeypatch.setenv("REPRO_TEST_NONFINITE", "t-s1@2")
    assert main(["run", "experiment=demo/s", "seed=1"]) == 1
    assert _record(chain_root, "t", 1, failed=True)["status"] == "FAILED"
    failed = _record(chain_root, "s", 1, failed=True)
    assert "upstream stage demo/t" in failed["failure_reason"]


@pytest.mark.parametrize(
    "stages,match",
    [
        ("{teacher: demo/nope}", r"stages\.teacher: unknown experiment 'demo/nope': paper 'demo' has no arm"),
        ("{coach: demo/t}", r"stages\.coach: unknown role; valid roles: teacher, init"),
        ("{teacher: t}", r"stages\.teacher: expected '<paper>/<arm>'"),
        ("{teacher: demo/s}", r"stages\.teacher: demo/s cannot be its own upstream stage"),
        ("{teacher: demo/a}", r"stages\.teacher: demo/a does not keep its model \(trainer\.save: false\)"),
    ],
)
def test_bad_stage_declarations_are_config_errors(chain_root, stages, match, capsys):
    arm = STUDENT.replace("stages:\n  teacher: demo/t", f"stages: {stages}")
    (chain_root / "experiments" / "demo" / "s.yaml").write_text(arm)
    assert main(["run", "experiment=demo/s", "seed=1"]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (chain_root / "results").exists()  # nothing ran, nothing recorded


def test_reproduce_runs_upstream_arms_in_an_earlier_wave(chain_root, capsys):
    (chain_root / "experiments" / "demo" / "suite.yaml").write_text("arms: [s, t]\nseeds: [1]\njobs: 1\n")
    assert main(["reproduce", "demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 to run in 2 sweeps" in out
    assert out.index("experiment=demo/t ") < out.index("experiment=demo/s ")
    main(["reproduce", "demo"])  # exit code also reflects the table, which does not list s and t
    assert _runs_of(chain_root, "t") == 1 and _record(chain_root, "s", 1)["status"] == "FINISHED"


def test_waves_order_and_cycles():
    assert launch.waves(["c", "b", "a"], {"c": ["b"], "b": ["a"]}) == [["a"], ["b"], ["c"]]
    assert launch.waves(["x", "y"], {}) == [["x", "y"]]
    with pytest.raises(ConfigError, match="cycle"):
        launch.waves(["a", "b"], {"a": ["b"], "b": ["a"]})

"""End to end through the `repro` command line, on a temporary root with the `demo` package
(arms a, b; trainer `_test_quadratic`): MLflow runs, run records, failures, sweeps, reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro import records
from repro.cli import main
from repro.models.micro import BASES_DIR, MANIFEST

from .conftest import mlflow_runs


def _record(root: Path, arm: str, seed: int, failed: bool = False) -> dict:
    suffix = ".failed.json" if failed else ".json"
    return json.loads((root / "results" / "demo" / "micro" / arm / f"seed{seed}{suffix}").read_text())


def _record_files(root: Path) -> list[str]:
    base = root / "results"
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.json")) if base.exists() else []


def test_single_run_tracks_in_mlflow_and_writes_the_record(repro_root):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0

    rec = _record(repro_root, "a", 1)
    assert tuple(rec) == records.KEYS
    where = (rec["paper"], rec["arm"], rec["seed"], rec["scale"], rec["status"])
    assert where == ("demo", "a", 1, "micro", "FINISHED")
    assert rec["overrides"] == [] and rec["failure_reason"] is None
    assert [step for step, _ in rec["curves"]["train/loss"]] == [0, 1, 2, 3, 4]
    assert rec["final"]["eval/score"] == pytest.approx(-rec["final"]["train/loss"])
    assert rec["config"]["trainer"]["name"] == "_test_quadratic"
    assert rec["config"]["paths"]["root"] == "<root>" and len(rec["config_hash"]) == 64
    prov = rec["provenance"]
    assert set(prov) == {
        "git_sha",
        "git_dirty",
        "git_diff_sha256",
        "code_sha256",
        "versions",
        "wall_time_s",
        "base_build_s",
        "stages_s",
        "started",
        "host",
        "threads",
        "device",
        "base_sha256",
        "base",
        "root_base_sha256",
        "upstream",
    }
    assert prov["device"] == "cpu, float32"  # device: auto on a machine without a GPU
    assert prov["upstream"] == {}
    assert prov["git_sha"] == "unknown"  # the temporary root is not a git checkout
    assert prov["base_build_s"] == 0  # this trainer loads no base: nothing is built for it
    # Seed 1's config names shipped base 0, which is there already: the record and the MLflow run
    # carry its checksum.
    shipped = json.loads((BASES_DIR / "base0" / MANIFEST).read_text())["sha256"]
    assert prov["base_sha256"] == prov["root_base_sha256"] == shipped
    assert prov["base"] == {"of": "model.safetensors", "source": "shipped", "base": 0}

    (run,) = mlflow_runs(repro_root)
    assert run.data.tags["base_sha256"] == shipped and run.data.tags["base"] == "0"
    assert run.info.run_id == rec["run_id"] and run.info.status == "FINISHED"
    assert run.info.run_name == "a-s1"
    tags = run.data.tags
    assert {k: tags[k] for k in ("paper", "arm", "seed", "scale", "git_sha", "git_dirty")} == {
        "paper": "demo",
        "arm": "a",
        "seed": "1",
        "scale": "micro",
        "git_sha": "unknown",
        "git_dirty": "unknown",
    }
    assert tags["overrides"] == "experiment=demo/a seed=1" and tags["hostname"]
    assert run.data.params["trainer.name"] == "_test_quadratic" and run.data.params["trainer.lr"] == "0.1"
    assert run.data.metrics["train/loss"] == pytest.approx(rec["curves"]["train/loss"][-1][1], rel=1e-5)
    assert "final/eval/score" in run.data.metrics
    artefacts = sorted(Path(run.info.artifact_uri.removeprefix("file://")).iterdir())
    assert [p.name for p in artefacts] == ["config.yaml", "curves.png", "record.json", "summary.json"]
    assert json.loads((artefacts[2]).read_text()) == rec  # the record itself, as written
    assert run.data.metrics["time/run_s"] == pytest.approx(prov["wall_time_s"], abs=1e-3)


def test_other_overrides_make_an_adhoc_record(repro_root):
    assert main(["run", "experiment=demo/a", "seed=1", "trainer.lr=0.2"]) == 0
    (path,) = _record_files(repro_root)
    assert path.startswith("demo/micro/a/adhoc/seed1-") and path.endswith(".json")
    rec = json.loads((repro_root / "results" / path).read_text())
    assert rec["overrides"] == ["trainer.lr=0.2"] and path.endswith(f"-{rec['config_hash'][:8]}.json")


def test_failed_run_is_recorded_and_the_sweep_goes_on(repro_root, monkeypatch):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    good = repro_root / "results/demo/micro/a/seed1.json"
    before = good.read_bytes()

    monkeypatch.setenv("REPRO_TEST_NONFINITE", "a-s1@2")
    assert main(["run", "-m", "experiment=demo/a,demo/b", "seed=1"]) == 1
    assert good.read_bytes() == before  # the earlier success is untouched
    failed = _record(repro_root, "a", 1, failed=True)
    assert failed["status"] == "FAILED"
    assert failed["failure_reason"] == "NonFiniteError: loss is nan at step 2"
    assert [s for s, _ in failed["curves"]["train/loss"]] == [0, 1]  # what it logged before failing
    assert _record(repro_root, "b", 1)["status"] == "FINISHED"  # the next job still ran

    by_id = {r.info.run_id: r for r in mlflow_runs(repro_root)}
    assert sorted(r.info.status for r in by_id.values()) == ["FAILED", "FINISHED", "FINISHED"]
    assert by_id[failed["run_id"]].data.tags["failure_reason"] == failed["failure_reason"]

    # A single failing run exits non-zero.
    monkeypatch.setenv("REPRO_TEST_NONFINITE", "b-s2@0")
    assert main(["run", "experiment=demo/b", "seed=2"]) == 1
    assert _record(repro_root, "b", 2, failed=True)["status"] == "FAILED"


def test_unknown_trainer_lists_the_trainers_and_records_nothing(repro_root, capsys):
    assert main(["run", "experiment=demo/a", "trainer.name=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "trainer.name" in err and "unknown trainer 'nope'" in err
    assert "_test_quadratic" in err and "grpo" in err
    assert _record_files(repro_root) == [] and mlflow_runs(repro_root) == []

    # In a multirun, the misconfigured job is reported and skipped; the others run.
    assert main(["run", "-m", "experiment=demo/a", "trainer.name=nope,_test_quadratic"]) == 1
    assert len(_record_files(repro_root)) == 1 and len(mlflow_runs(repro_root)) == 1


def test_unknown_experiment_lists_the_arms(repro_root, capsys):
    assert main(["run", "experiment=demo/zz"]) == 2
    assert "paper 'demo' has no arm 'zz'; its arms: a, b" in capsys.readouterr().err


def test_reproduce_validates_every_arm_before_running(repro_root, capsys):
    suite = repro_root / "experiments/demo/suite.yaml"
    suite.write_text("arms: [a, nope]\nseeds: [1]\njobs: 1\n")
    assert main(["reproduce", "demo"]) == 2
    assert "unknown arm(s) nope; arms of 'demo': a, b" in capsys.readouterr().err

    (repro_root / "experiments/demo/c.yaml").write_text(
        "# @package _global_\ndefaults: [/experiment/demo/a]\n"
    )
    suite.write_text("arms: [a, c]\nseeds: [1]\njobs: 1\n")
    assert main(["reproduce", "demo", "trainer.steps=0"]) == 2
    err = capsys.readouterr().err
    assert "demo/a: trainer.steps: input should be greater than or equal to 1, got 0" in err
    assert _record_files(repro_root) == [] and mlflow_runs(repro_root) == []
    assert not (repro_root / "multirun").exists()


def test_list_and_print_config(repro_root, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "demo: demo [implemented]" in out and "arms:    a, b" in out
    main(["run", "--cfg", "job", "experiment=demo/b"])
    out = capsys.readouterr().out
    assert "arm: b" in out and "lr: 0.3" in out


@pytest.mark.slow
def test_reproduce_runs_the_suite_in_parallel_and_builds_tables(repro_root, monkeypatch, capsys):
    # 2 arms x 2 seeds on the joblib launcher (2 workers); one run fails, the others finish.
    monkeypatch.setenv("REPRO_TEST_NONFINITE", "b-s2@1")
    assert main(["reproduce", "demo"]) == 1
    out = capsys.readouterr().out
    assert "demo: 4 runs: 3 finished, 1 failed" in out and "failed: experiment=demo/b seed=2" in out

    assert _record_files(repro_root) == [
        "demo/micro/a/seed1.json",
        "demo/micro/a/seed2.json",
        "demo/micro/b/seed1.json",
        "demo/micro/b/seed2.failed.json",
    ]
    for arm, seed in [("a", 1), ("a", 2), ("b", 1)]:
        rec = _record(repro_root, arm, seed)
        assert rec["overrides"] == [] and rec["provenance"]["threads"] >= 1
    runs = mlflow_runs(repro_root)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("a-s1", "FINISHED"),
        ("a-s2", "FINISHED"),
        ("b-s1", "FINISHED"),
        ("b-s2", "FAILED"),
    ]
    assert (repro_root / "paper_tables/demo/comparison.md").exists()
    assert str(repro_root / "paper_tables/demo/comparison.md") in out


@pytest.mark.slow
def test_reproduce_power_runs_the_seeds_each_claim_needs(repro_root, capsys):
    """`--power`: the suite's seeds (1, 2) as a pilot, then as many seeds as the pilot's paired sd
    needs for 80% power at the claim's min_effect (capped by --max-seeds), on both arms."""
    from repro.tables.stats import seeds_needed

    claimed = repro_root / "paper_tables/demo/claimed.yaml"
    claimed.write_text(claimed.read_text().replace("min_effect: 0.0", "min_effect: 0.5"))
    (repro_root / "experiments/demo/suite.yaml").write_text("arms: [a, b]\nseeds: [1, 2]\njobs: 1\n")
    assert main(["reproduce", "demo", "--power", "--max-seeds", "6"]) == 0
    out = capsys.readouterr().out
    assert "repro reproduce demo (power tier: pilot = the quick tier)" in out
    assert "power tier plan" in out and "b_lowers_loss: b vs a: needs" in out
    # The plan, recomputed from the pilot's two records per arm.
    pilot = {
        arm: {s: _record(repro_root, arm, s)["final"]["train/loss"] for s in (1, 2)} for arm in ("a", "b")
    }
    diffs = [pilot["b"][s] - pilot["a"][s] for s in (1, 2)]
    sd = abs(diffs[0] - diffs[1]) / 2**0.5
    n = min(seeds_needed(0.5, sd), 6)
    assert n > 2  # the pilot alone is not enough: the tier ran more seeds
    assert _record_files(repro_root) == sorted(
        f"demo/micro/{arm}/seed{s}.json" for arm in ("a", "b") for s in range(1, n + 1)
    )
    assert "Tier: power tier: up to" in (repro_root / "paper_tables/demo/comparison.md").read_text()


def test_require_head_needs_a_git_checkout(repro_root, capsys):
    assert main(["tables", "--require-head"]) == 2
    assert "not a git checkout" in capsys.readouterr().err
    assert main(["reproduce", "demo", "--require-head", "--dry-run"]) == 2
    assert _record_files(repro_root) == []


def test_reproduce_all_prints_its_total_wall_time(repro_root, monkeypatch, capsys):
    """`repro reproduce all` runs each paper (each prints its own wall time), then the total."""
    from repro import launch

    ran = []
    monkeypatch.setattr(launch, "reproduce", lambda slug, *a, **k: ran.append(slug) or 0)
    assert main(["reproduce", "all"]) == 0
    assert ran == ["demo"]
    assert "all papers (1): wall time" in capsys.readouterr().out

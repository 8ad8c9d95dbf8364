"""`repro reproduce --launcher`: Hydra's own launchers run the sweep and write the same records and
MLflow runs as joblib. submitit_local runs for real here (2 jobs, each its own process); the Ray
launcher and an MLflow server run in `nox -s scale_out` (tests/scale_out)."""

from __future__ import annotations

import json

import pytest

from repro import launch
from repro.cli import main
from repro.errors import ConfigError

from .conftest import mlflow_runs


@pytest.mark.slow
def test_reproduce_on_submitit_local_writes_the_same_records_and_runs(repro_root, capsys):
    # 2 arms x 1 seed at scale=tiny: two submitit jobs, each a fresh Python process.
    assert main(["reproduce", "demo", "--launcher", "submitit_local", "--seeds", "1", "scale=tiny"]) == 0
    out = capsys.readouterr().out
    assert "demo: 2 runs: 2 finished, 0 failed" in out and "on submitit_local" in out

    records = sorted((repro_root / "results").rglob("*.json"))
    assert [p.relative_to(repro_root / "results").as_posix() for p in records] == [
        ".smoke/demo/tiny/a/seed1.json",  # scale=tiny: smoke records, never published
        ".smoke/demo/tiny/b/seed1.json",
    ]
    runs = {r.info.run_name: r for r in mlflow_runs(repro_root)}
    assert sorted((name, r.info.status) for name, r in runs.items()) == [
        ("a-s1", "FINISHED"),
        ("b-s1", "FINISHED"),
    ]
    for arm in ("a", "b"):
        rec = json.loads((repro_root / f"results/.smoke/demo/tiny/{arm}/seed1.json").read_text())
        assert rec["status"] == "FINISHED" and rec["overrides"] == []  # launcher overrides stay canonical
        assert rec["run_id"] == runs[f"{arm}-s1"].info.run_id
        # The run's metrics arrived from the job's process, and agree with its record.
        assert runs[f"{arm}-s1"].data.metrics["train/loss"] == pytest.approx(
            rec["curves"]["train/loss"][-1][1], rel=1e-5
        )
    # Each job ran in a process of its own, with submitit's own log folder.
    assert list(repro_root.glob("multirun/*/*/.submitit/*"))


def test_launcher_overrides_pick_hydras_plugins():
    assert launch.launcher_overrides(None, 1, 2) == []
    assert launch.launcher_overrides(None, 3, 1) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]
    assert launch.launcher_overrides("submitit_slurm", 4, 8) == [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.array_parallelism=4",
        "hydra.launcher.cpus_per_task=8",
    ]
    assert launch.launcher_overrides("submitit_local", 2, 1)[0] == "hydra/launcher=submitit_local"


def test_a_launcher_without_its_plugin_fails_before_anything_runs(repro_root, monkeypatch, capsys):
    monkeypatch.setitem(launch.LAUNCHERS, "ray", ("ray", "hydra_plugins.no_such_plugin", "pip install x"))
    with pytest.raises(ConfigError, match=r"--launcher ray: .*not installed: pip install x"):
        launch.reproduce("demo", launcher="ray")
    assert not (repro_root / "results").exists()
    assert main(["reproduce", "demo", "--launcher", "slurm"]) == 2
    assert "--launcher" in capsys.readouterr().err


def test_dry_run_shows_the_launcher_and_validates_its_settings(repro_root, capsys):
    args = ["reproduce", "demo", "--launcher", "submitit_slurm", "--dry-run", "hydra.launcher.partition=gpu"]
    assert main([*args, "hydra.launcher.array_parallelism=16"]) == 0
    out = capsys.readouterr().out
    assert "hydra/launcher=submitit_slurm" in out and "hydra.launcher.partition=gpu" in out
    # The user's setting replaces the launcher default (--jobs), it is not given twice.
    assert out.count("array_parallelism") == 1 and "hydra.launcher.array_parallelism=16" in out
    # A misspelled launcher setting fails at validation, naming the key.
    assert (
        main(["reproduce", "demo", "--launcher", "submitit_slurm", "--dry-run", "hydra.launcher.partitio=x"])
        == 2
    )
    assert "partitio" in capsys.readouterr().err

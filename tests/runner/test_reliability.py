"""Nothing lost, nothing surprising: real processes racing on a fresh MLflow store, real signals
to real child runs, resumed suites, tables that isolate a broken paper and leave unchanged files
alone, paths that cannot leave their root, and the published records loaded into MLflow.

Child processes run the real CLI (`python -m repro.cli`) on the `demo` package of conftest.py
(trainer `_test_quadratic`, seconds per run); REPRO_TEST_HOLD makes a run wait mid-training until
a signal arrives (fake_trainer.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro import records
from repro.cli import main
from repro.errors import ConfigError

from .conftest import git, mlflow_runs

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("REPRO_SWEEP_STATE", None)
    return env


def _repro(*args: str, **popen) -> subprocess.Popen:
    """A real `repro` child process (stdout/stderr captured as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "repro.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _wait_for(paths: list[Path], child: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if child.poll() is not None:
            out, err = child.communicate()
            raise AssertionError(f"child ended early (rc {child.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {paths}"
        time.sleep(0.1)


def _record(root: Path, arm: str, seed: int, failed: bool = False) -> dict:
    suffix = ".failed.json" if failed else ".json"
    return json.loads((root / "results" / "demo" / "micro" / arm / f"seed{seed}{suffix}").read_text())


# ---------------------------------------------------------------------------------------------
# 1. Two independent processes on a fresh store


# Imports first, then say so and wait for the parent's go (a file holding the shared instant).
_AT_INSTANT = (
    "import sys, time, pathlib\n"
    "import mlflow, mlflow.store.tracking.sqlalchemy_store, repro.runner, repro.trainers\n"
    "from repro.cli import main\n"
    "ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n"
    "ready.write_text('')\n"
    "while not go.exists() or not go.read_text():\n"
    "    time.sleep(0.001)\n"
    "time.sleep(max(0.0, float(go.read_text()) - time.time()))\n"
    "sys.exit(main(sys.argv[3:]))\n"
)


@pytest.mark.slow
def test_two_independent_runs_on_a_fresh_store_both_recorded(repro_root, tmp_path):
    trials = 3
    for trial in range(trials):
        db = tmp_path / f"fresh{trial}" / "mlflow.db"  # no template: the store does not exist yet
        env = _env(MLFLOW_TRACKING_URI=f"sqlite:///{db}", REPRO_RESULTS_DIR=str(tmp_path / f"res{trial}"))
        go = tmp_path / f"go{trial}"
        ready = [tmp_path / f"ready{trial}-{seed}" for seed in (1, 2)]
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _AT_INSTANT,
                    str(flag),
                    str(go),
                    "run",
                    "experiment=demo/a",
                    f"seed={seed}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed, flag in zip((1, 2), ready)
        ]
        for child in children:
            _wait_for(ready, child)
        go.write_text(str(time.time() + 0.2))  # both start the same run at the same instant
        results = [c.communicate(timeout=300) for c in children]
        for child, (out, err) in zip(children, results):
            assert child.returncode == 0, f"trial {trial}: rc {child.returncode}\n{out}\n{err}"
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{db}")
        runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
        assert sorted((r.info.run_name, r.info.status) for r in runs) == [
            ("a-s1", "FINISHED"),
            ("a-s2", "FINISHED"),
        ], f"trial {trial}"
        for seed in (1, 2):
            rec = json.loads((tmp_path / f"res{trial}" / "demo/micro/a" / f"seed{seed}.json").read_text())
            assert rec["status"] == "FINISHED" and rec["run_id"] in {r.info.run_id for r in runs}


# ---------------------------------------------------------------------------------------------
# 2. Names and paths


@pytest.mark.parametrize(
    "override", ["experiment=../../../x/a", "experiment=demo/..", "experiment=Demo/a", "paper=../x"]
)
def test_names_that_are_not_slugs_fail_before_anything_is_written(repro_root, override, capsys):
    assert main(["run", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (repro_root / "results").exists() and mlflow_runs(repro_root) == []


def test_every_path_a_run_writes_stays_under_its_root(tmp_path):
    kw = dict(scale="micro", seed=1, canonical=True, config_hash="0" * 8, failed=False)
    assert records.record_path(tmp_path, paper="p", arm="a", **kw).parent == tmp_path / "p/micro/a"
    for paper, arm in (("..", "a"), ("p", "../../.."), ("../../etc", "a")):
        with pytest.raises(ConfigError, match="lies outside"):
            records.record_path(tmp_path, paper=paper, arm=arm, **kw)

    from omegaconf import OmegaConf

    from repro.provenance import checkpoint_dir

    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "seed": 3, "trainer": {"name": "x"}})
    assert checkpoint_dir(cfg).parent.parent == tmp_path / "checkpoints"
    from repro.paths import check_under

    (tmp_path / "inside").mkdir()
    os.symlink("/", tmp_path / "inside" / "escape")
    with pytest.raises(ConfigError, match="lies outside"):
        check_under(tmp_path / "inside" / "escape" / "x.json", tmp_path, "run record")


# ---------------------------------------------------------------------------------------------
# 3. Tables isolate papers


BROKEN_YAML = 'paper: "Broken"\narxiv: "0000.00001"\narms: [a\nclaims: []\n'


def test_a_broken_claimed_yaml_or_record_stops_only_its_own_paper(repro_root, capsys):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    assert main(["run", "experiment=demo/b", "seed=1"]) == 0
    broken = repro_root / "paper_tables" / "broken"
    broken.mkdir()
    (broken / "claimed.yaml").write_text(BROKEN_YAML)
    (broken / "comparison.md").write_text("OLD\n")
    capsys.readouterr()

    assert main(["tables"]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()  # one line, no traceback
    assert line.startswith(f"repro: error: broken: not written: {broken / 'claimed.yaml'}:4: not valid YAML")
    assert (broken / "comparison.md").read_text() == "OLD\n"  # nothing of the broken paper is touched
    assert "demo: " in out and (repro_root / "paper_tables/demo/comparison.md").exists()

    # A claimed.yaml that parses but breaks the schema: the line of the offending key.
    good = (repro_root / "paper_tables/demo/claimed.yaml").read_text()
    (broken / "claimed.yaml").write_text(good.replace("direction: -1", "direction: down"))
    assert main(["tables", "broken"]) == 2
    err = capsys.readouterr().err
    assert f"{broken / 'claimed.yaml'}:10: claims[0] (b_lowers_loss).measure" in err and "direction" in err

    # A record with a wrong-typed field: file, line and key, and the paper's table is kept.
    shutil.rmtree(broken)
    table = repro_root / "paper_tables/demo/comparison.md"
    before = table.read_bytes()
    path = repro_root / "results/demo/micro/b/seed1.json"
    path.write_text(path.read_text().replace('"seed": 1,', '"seed": "one",'))
    assert main(["tables"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{path}:5: run record: seed: expected an integer, got 'one'" in line
    assert table.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 4. Signals


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_run_records_it_as_killed(repro_root, tmp_path, sig):
    hold = tmp_path / "hold"
    hold.mkdir()
    child = _repro("run", "experiment=demo/a", "seed=1", env=_env(REPRO_TEST_HOLD=str(hold)))
    _wait_for([hold / "a-s1.ready"], child)
    child.send_signal(sig)
    out, err = child.communicate(timeout=120)

    name = signal.Signals(sig).name
    assert child.returncode == 128 + sig, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.strip().splitlines()[-1].startswith(f"repro: stopped by {name}")
    assert "a-s1: KILLED after" in out and "seed1.failed.json" in out
    rec = _record(repro_root, "a", 1, failed=True)
    assert rec["status"] == "KILLED" and rec["failure_reason"] == f"interrupted by {name}"
    assert [s for s, _ in rec["curves"]["train/loss"]] == [0]  # what it logged before the signal
    (run,) = mlflow_runs(repro_root)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"] == f"interrupted by {name}"
    assert run.info.run_id == rec["run_id"]


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [True, False], ids=["joblib", "basic"])
def test_ctrl_c_of_a_sweep_records_every_running_job_and_starts_no_other(repro_root, tmp_path, parallel):
    hold = tmp_path / "hold"
    hold.mkdir()
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if parallel else []
    child = _repro(
        "run",
        "-m",
        "experiment=demo/a,demo/b",
        "seed=1,2",
        *launcher,
        env=_env(REPRO_TEST_HOLD=str(hold)),
        start_new_session=True,  # its own process group: Ctrl-C in a terminal signals all of it
    )
    running = [("a", 1), ("a", 2)] if parallel else [("a", 1)]
    _wait_for([hold / f"{arm}-s{seed}.ready" for arm, seed in running], child)
    os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=180)

    assert child.returncode == 130, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert f"{len(running)} killed, {4 - len(running)} skipped" in out, out
    runs = mlflow_runs(repro_root)
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        (f"{a}-s{s}", "KILLED") for a, s in running
    ]
    for arm, seed in running:
        rec = _record(repro_root, arm, seed, failed=True)
        assert rec["status"] == "KILLED" and rec["failure_reason"] == "interrupted by SIGINT"
    assert not (repro_root / "results/demo/micro/b").exists()  # the queued jobs never started


@pytest.mark.slow
def test_a_run_left_running_by_a_dead_process_is_marked_failed(repro_root, tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    child = _repro("run", "experiment=demo/a", "seed=1", env=_env(REPRO_TEST_HOLD=str(hold)))
    _wait_for([hold / "a-s1.ready"], child)
    child.kill()  # kill -9: nothing can be recorded
    child.communicate(timeout=60)
    (run,) = mlflow_runs(repro_root)
    assert run.info.status == "RUNNING"

    assert main(["run", "experiment=demo/b", "seed=1"]) == 0  # the next start cleans up
    by_name = {r.info.run_name: r for r in mlflow_runs(repro_root)}
    assert by_name["b-s1"].info.status == "FINISHED"
    assert by_name["a-s1"].info.status == "FAILED"
    assert by_name["a-s1"].data.tags["failure_reason"].startswith(f"process died: pid {child.pid} ")


# ---------------------------------------------------------------------------------------------
# 5. Resume


def test_reproduce_resumes_skipping_up_to_date_records(git_root, capsys):
    root = git_root
    main(["reproduce", "demo", "--jobs", "1"])
    out = capsys.readouterr().out
    assert "4 to run" in out and "estimated wall time: unknown" in out
    assert len(mlflow_runs(root)) == 4
    assert _record(root, "b", 2)["provenance"]["base_sha256"]

    # Everything is up to date: nothing runs, and it says what it skipped.
    main(["reproduce", "demo", "--jobs", "1"])
    out = capsys.readouterr().out
    assert "0 to run" in out and "up to date, skipped: a seed 1, 2; b seed 1, 2" in out
    assert len(mlflow_runs(root)) == 4

    # A missing record and a record of another config: only those pairs run again.
    (root / "results/demo/micro/b/seed2.json").unlink()
    stale = root / "results/demo/micro/a/seed1.json"
    stale.write_text(stale.read_text().replace(_record(root, "a", 1)["config_hash"], "0" * 64))
    assert main(["reproduce", "demo", "--jobs", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 to run" in out and "skipped: a seed 2; b seed 1" in out
    assert f"would replace: {stale} (config changed; kept in replaced/)" in out
    assert "estimated wall time: ~" in out and "per run: a " in out
    main(["reproduce", "demo", "--jobs", "1"])
    out = capsys.readouterr().out
    assert "skipped: a seed 2; b seed 1" in out and len(mlflow_runs(root)) == 6
    assert _record(root, "a", 1)["config_hash"] != "0" * 64
    (kept,) = (root / "results/demo/micro/a/replaced").iterdir()  # the replaced record is kept
    assert records.read_record(kept)["config_hash"] == "0" * 64

    # --force reruns all; a new base model or new code makes every record stale.
    assert main(["reproduce", "demo", "--jobs", "1", "--force", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 to run" in out and out.count("would replace:") == 4 and "(--force;" in out
    (root / "base_model/model.safetensors").write_bytes(b"weights v2")
    assert main(["reproduce", "demo", "--jobs", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("(base model changed;") == 4, out
    (root / "base_model/model.safetensors").write_bytes(b"weights v1")
    # A commit that touches no code that computes runs (docs) keeps every record current: the
    # records carry the fingerprint of that code (provenance.code_sha256), not only the commit.
    (root / "experiments/demo/README.md").write_text("demo\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "docs")
    assert main(["reproduce", "demo", "--jobs", "1", "--dry-run"]) == 0
    assert "0 to run" in capsys.readouterr().out
    # Python in the experiment packages is code: a change there makes every record stale.
    (root / "experiments/demo/tools").mkdir()
    (root / "experiments/demo/tools/helper.py").write_text("SCALE = 2\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "code")
    assert main(["reproduce", "demo", "--jobs", "1", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("(code changed (record's code ") == 4
    # A record from before fingerprints is judged by its git commit, which is not HEAD's.
    path = root / "results/demo/micro/a/seed2.json"
    rec = records.read_record(path)
    del rec["provenance"]["code_sha256"]
    path.write_text(records.dumps(rec))
    assert main(["reproduce", "demo", "--jobs", "1", "--arms", "a", "--seeds", "2", "--dry-run"]) == 0
    assert f"(code changed (record {rec['provenance']['git_sha'][:10]}, now " in capsys.readouterr().out


def test_check_record_treats_missing_provenance_as_unknown(git_root, capsys):
    main(["run", "experiment=demo/a", "seed=1"])
    path = git_root / "results/demo/micro/a/seed1.json"
    rec = records.read_record(path)
    del rec["provenance"]["base_sha256"]  # a record from before checksums were recorded
    path.write_text(records.dumps(rec))
    assert main(["reproduce", "demo", "--arms", "a", "--seeds", "1", "--dry-run"]) == 0
    assert "(record has no base model checksum; kept in replaced/)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# 8. Published records into a fresh MLflow store


def test_mlflow_import_loads_the_records_into_a_fresh_store(repro_root, tmp_path, capsys):
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    os.environ["REPRO_TEST_NONFINITE"] = "b-s1@2"
    try:
        assert main(["run", "experiment=demo/b", "seed=1"]) == 1
    finally:
        del os.environ["REPRO_TEST_NONFINITE"]
    uri = f"sqlite:///{tmp_path / 'published.db'}"
    capsys.readouterr()
    assert main(["mlflow-import", "--uri", uri]) == 0
    assert "imported 2 run record(s)" in capsys.readouterr().out

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert {n: r.info.status for n, r in by_name.items()} == {"a-s1": "FINISHED", "b-s1": "FAILED"}
    a = by_name["a-s1"]
    rec = _record(repro_root, "a", 1)
    assert a.data.tags["source_run_id"] == rec["run_id"]
    assert a.data.tags["record"] == "results/demo/micro/a/seed1.json"
    assert a.data.params["trainer.name"] == "_test_quadratic"
    history = client.get_metric_history(a.info.run_id, "train/loss")
    assert [(m.step, round(m.value, 5)) for m in history] == [
        (s, round(v, 5)) for s, v in rec["curves"]["train/loss"]
    ]
    assert a.data.metrics["final/eval/score"] == pytest.approx(rec["final"]["eval/score"])
    artefacts = sorted(Path(a.info.artifact_uri.removeprefix("file://")).iterdir())
    assert [p.name for p in artefacts] == ["curves.png", "record.json"]
    assert json.loads(artefacts[1].read_text()) == rec
    assert by_name["b-s1"].data.tags["failure_reason"].startswith("NonFiniteError")

    assert main(["mlflow-import", "--uri", uri]) == 0  # again: nothing new
    out = capsys.readouterr().out
    assert "imported 0 run record(s)" in out and "(2 already there)" in out
    assert len(client.search_runs([client.get_experiment_by_name("demo").experiment_id])) == 2


# ---------------------------------------------------------------------------------------------
# 10. Tables leave unchanged files alone; tables link runs to their records


def test_tables_rewrite_nothing_when_only_the_time_would_change(repro_root, capsys):
    for arm in ("a", "b"):
        assert main(["run", "-m", f"experiment=demo/{arm}", "seed=1,2"]) == 0
    assert main(["tables"]) == 0
    out_dir = repro_root / "paper_tables/demo"
    files = sorted(out_dir.glob("comparison.md")) + sorted(out_dir.glob("fig_*.png"))
    assert len(files) > 1
    stamp = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    assert "](../../results/demo/micro/b/seed1.json)" in files[0].read_text()  # run ids link records
    time.sleep(0.05)

    capsys.readouterr()
    assert main(["tables"]) == 0
    assert "(unchanged)" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == stamp

    # Only the generated-at time differs in the file on disk: still left alone.
    old = files[0].read_text()
    import re

    files[0].write_text(re.sub(r"at \d{4}-\d\d-\d\d \d\d:\d\d UTC", "at 2000-01-01 00:00 UTC", old, count=1))
    before = files[0].read_bytes()
    assert main(["tables"]) == 0
    assert files[0].read_bytes() == before

    assert main(["run", "experiment=demo/a", "seed=3"]) == 0  # a new record: the table changes
    assert main(["tables"]) == 0
    assert files[0].read_bytes() != before and "<!-- repro:runs=5 -->" in files[0].read_text()


# ---------------------------------------------------------------------------------------------
# 6, 7. What the terminal shows


def test_run_summary_line_and_sweep_progress(repro_root, capsys):
    assert main(["run", "-m", "experiment=demo/a", "seed=1,2"]) == 0
    out = capsys.readouterr().out
    assert "repro run: 1/2 runs done, ETA" in out and "repro run: 2/2 runs done; last:" in out
    lines = [line for line in out.splitlines() if line.startswith("a-s1: FINISHED in ")]
    assert len(lines) == 1 and "train/loss " in lines[0] and "| record " in lines[0]


def test_list_shows_every_paper_with_records_and_table(repro_root, capsys):
    (repro_root / "experiments/papers.yaml").write_text(
        "papers:\n"
        '  - {slug: demo, title: "Demo paper (Test authors)", arxiv: "0000.00000", status: implemented}\n'
        '  - {slug: later, title: "A later paper", arxiv: "0000.00002", status: planned}\n'
    )
    assert main(["run", "experiment=demo/a", "seed=1"]) == 0
    assert main(["tables"]) == 0
    capsys.readouterr()
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "demo: Demo paper (Test authors), arXiv 0000.00000 [implemented]" in out
    assert "later: A later paper, arXiv 0000.00002 [not implemented yet]" in out
    assert "records: micro 1 finished (" in out
    assert "comparison.md (20" in out and "from 1 runs)" in out
    assert main(["--help"]) == 0
    assert "not implemented yet: later" in capsys.readouterr().out

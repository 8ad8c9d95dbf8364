"""Provenance: git state outside a checkout, portable config, config hash."""

from __future__ import annotations

from omegaconf import OmegaConf

from repro import provenance


def _cfg(root="/machine/a/repro", **trainer):
    return OmegaConf.create(
        {
            "seed": 1,
            "trainer": {"lr": 0.1, "threads": 1, **trainer},
            "model": {"path": "${paths.cache_dir}/model"},
            "paths": {"root": root, "results_dir": f"{root}/results", "cache_dir": f"{root}/.cache"},
            "tracking": {"uri": f"sqlite:///{root}/mlflow.db", "record": True},
        }
    )


def test_git_state_outside_a_checkout(tmp_path):
    assert provenance.git_state(tmp_path) == ("unknown", None)
    assert provenance.git_state(tmp_path / "missing") == ("unknown", None)


def test_portable_config_hides_machine_paths():
    portable = provenance.portable_config(_cfg())
    assert portable["model"]["path"] == "<cache_dir>/model"
    assert portable["tracking"]["uri"] == "sqlite:///<root>/mlflow.db"
    assert portable["paths"] == {"root": "<root>", "results_dir": "<results_dir>", "cache_dir": "<cache_dir>"}
    # Only whole path components are replaced.
    other = provenance.portable_config(_cfg(root="/m/r", note="/m/rx/y"))
    assert other["trainer"]["note"] == "/m/rx/y"


def test_config_hash_ignores_where_and_seed_but_not_what():
    h = provenance.config_hash(provenance.portable_config(_cfg()))
    assert len(h) == 64
    elsewhere = _cfg(root="/other/machine")
    elsewhere.seed = 7
    elsewhere.trainer.threads = 8
    elsewhere.tracking.record = False
    assert provenance.config_hash(provenance.portable_config(elsewhere)) == h
    assert provenance.config_hash(provenance.portable_config(_cfg(lr=0.2))) != h


def test_versions_are_read_without_importing():
    v = provenance.versions()
    assert set(v) == {"python", "torch", "transformers", "hydra", "mlflow", "repro"}
    assert v["hydra"].startswith("1.3")


def test_code_fingerprint_covers_the_code_that_computes_runs_only(tmp_path):
    """code_sha256: the Python of the package (minus the modules that only read records or plan
    sweeps) and of experiments/; not docs, configs, tables code, the report or the sweep planner."""
    pkg, root = tmp_path / "repro", tmp_path / "checkout"
    for rel, text in {
        "trainers/grpo.py": "LR = 1\n",
        "tables/build.py": "X = 1\n",
        "report/site.py": "Y = 1\n",
        "mlflow_import.py": "Z = 1\n",
        "launch.py": "W = 1\n",
        "conf/config.yaml": "a: 1\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    (root / "experiments/demo").mkdir(parents=True)
    (root / "experiments/demo/README.md").write_text("demo\n")
    first = provenance.code_sha256(root, package=pkg)
    assert first == provenance.code_sha256(root, package=pkg)
    for rel in ("tables/build.py", "report/site.py", "mlflow_import.py", "launch.py", "conf/config.yaml"):
        (pkg / rel).write_text("changed\n")
    (root / "experiments/demo/README.md").write_text("more docs\n")
    assert provenance.code_sha256(root, package=pkg) == first
    (pkg / "trainers/grpo.py").write_text("LR = 2\n")
    second = provenance.code_sha256(root, package=pkg)
    assert second != first
    (root / "experiments/demo/world.py").write_text("N = 3\n")
    assert provenance.code_sha256(root, package=pkg) not in (first, second)
    # Moving code between files is a change even when the bytes are the same.
    (root / "experiments/demo/world.py").rename(root / "experiments/demo/other.py")
    assert provenance.code_sha256(root, package=pkg) not in (first, second)

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

"""Run records: canonical vs ad-hoc paths, the schema, compact diffable JSON, atomic writes."""

from __future__ import annotations

import json

import pytest

from repro import records


def test_canonical_overrides_are_experiment_seed_scale_and_locations():
    assert records.is_canonical([])
    assert records.is_canonical(["experiment=p/a", "seed=3", "scale=micro", "++trainer.threads=1"])
    assert records.is_canonical(["paths.root=/x", "tracking.record=false"])
    assert records.is_canonical(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert not records.is_canonical(["experiment=p/a", "trainer.lr=0.1"])
    assert not records.is_canonical(["+trainer.extra=1"])
    assert not records.is_canonical(["scale.name=other"])
    assert not records.is_canonical(None)  # composed outside a Hydra job: unknown
    assert records.extra_overrides(["seed=1", "trainer.lr=0.1", "~objective.kw"]) == [
        "trainer.lr=0.1",
        "~objective.kw",
    ]


def test_record_paths():
    kw = dict(paper="p", scale="micro", arm="a", seed=2, config_hash="0123456789abcdef")

    def path(canonical, failed, **changes):
        return str(records.record_path("R", canonical=canonical, failed=failed, **{**kw, **changes}))

    assert path(True, False) == "R/p/micro/a/seed2.json"
    assert path(True, True) == "R/p/micro/a/seed2.failed.json"
    assert path(False, False) == "R/p/micro/a/adhoc/seed2-01234567.json"
    assert path(False, True) == "R/p/micro/a/adhoc/seed2-01234567.failed.json"
    assert path(True, False, paper=None, arm=None) == "R/adhoc/micro/adhoc/adhoc/seed2-01234567.json"


def _record(status="FINISHED", **changes):
    kw = dict(
        paper="p",
        arm="a",
        seed=1,
        scale="micro",
        status=status,
        failure_reason=None if status == "FINISHED" else "NonFiniteError: nan",
        run_id="r1",
        overrides=["experiment=p/a", "seed=1"],
        config={"trainer": {"lr": 0.1}, "seed": 1},
        config_hash="f" * 64,
        final={"eval/acc": 0.5, "steps": 3},
        curves={"train/loss": [[0, 1.234567891], [1, float("nan")]], "train/x": [[0, 3]]},
        provenance={"git_sha": "unknown"},
    )
    kw.update(changes)
    return records.make_record(**kw)


def test_record_schema_and_compact_json():
    rec = _record()
    assert tuple(rec) == records.KEYS
    assert rec["overrides"] == []  # only non-canonical overrides are kept
    text = records.dumps(rec)
    lines = text.splitlines()
    # One top-level key per line, one curve per line: diffs stay readable.
    assert lines[0] == "{" and lines[-1] == "}"
    assert sum(line.startswith('  "') for line in lines) == len(records.KEYS)
    assert '    "train/loss": [[0,1.23457],[1,NaN]],' in lines
    back = json.loads(text)
    assert back["curves"]["train/loss"][0] == [0, 1.23457]
    assert back["final"] == {"eval/acc": 0.5, "steps": 3}
    assert [k for k in back] == list(records.KEYS)


def test_failed_record_never_touches_the_successful_one(tmp_path):
    ok_path = records.record_path(
        tmp_path, paper="p", scale="micro", arm="a", seed=1, canonical=True, config_hash="x" * 8, failed=False
    )
    records.write_record(_record(), ok_path)
    before = ok_path.read_bytes()
    failed_path = ok_path.with_name("seed1.failed.json")
    records.write_record(_record("FAILED"), failed_path)
    assert ok_path.read_bytes() == before
    assert records.read_record(failed_path)["status"] == "FAILED"
    # A later success sets the stale failure record aside (kept, not counted); no temp files left.
    records.write_record(_record(), ok_path)
    assert not failed_path.exists()
    assert sorted(p.name for p in ok_path.parent.iterdir()) == ["replaced", "seed1.json"]
    (kept,) = (ok_path.parent / "replaced").iterdir()
    assert kept.name == "seed1.failed-r1.json" and records.read_record(kept)["status"] == "FAILED"
    assert ok_path.stat().st_mode & 0o777 == 0o644  # readable by whoever commits or serves results


def test_make_record_rejects_unknown_status():
    with pytest.raises(AssertionError):
        _record(status="RUNNING")

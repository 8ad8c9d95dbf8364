"""A chained run (`stages: {init: ...}`) measures forgetting and drift against the chain's origin:
the reference a checkpoint is saved with, used only when it was made under the same settings."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from repro.eval.micro import REFERENCE_FILE, HeldOut


def held(path=None, drift_n=64, seed=1) -> HeldOut:
    cfg = OmegaConf.create(
        {
            "seed": seed,
            "model": {"kind": "hf", "path": None if path is None else str(path)},
            "trainer": {"drift_n": drift_n, "drift_every": 4, "max_new_tokens": 24},
        }
    )
    return HeldOut(cfg, None, None, None, evals={}, mc={}, drift_prompts=[], base_states=[])


def test_reference_round_trip_and_settings_guard(tmp_path):
    origin = held()
    origin.base_retention, origin.base_states = {"facts": 1.0, "truths": 0.75}, ["q : a", "q : b"]
    (tmp_path / REFERENCE_FILE).write_text(json.dumps(origin.reference()))

    ref = held(tmp_path).origin_reference()
    assert ref["retention"] == {"facts": 1.0, "truths": 0.75} and ref["states"] == ["q : a", "q : b"]
    assert held(tmp_path, drift_n=32).origin_reference() is None  # other drift prompts: not comparable
    assert held(tmp_path, seed=2).origin_reference() is None  # other sampled base states
    assert held(tmp_path / "nowhere").origin_reference() is None  # a plain model: measure it
    assert held().origin_reference() is None

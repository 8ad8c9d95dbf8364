"""The shipped micro base models (repro/bases/micro/base<k>/): their checksums, that the default
config loads them (not a locally pretrained model), that runs spread seeds over them, and that
`repro pretrain` rebuilds a base bit-identically and says whether it matches."""

from __future__ import annotations

import json

import pytest
from hydra_helpers import compose
from omegaconf import OmegaConf

from repro import cli, config
from repro.config.schema import N_BASES
from repro.errors import ConfigError
from repro.io import sha256_file
from repro.models import weights_provenance
from repro.models.micro import BASES_DIR, MANIFEST, WEIGHTS, base_checkpoint, pretrain_key


@pytest.mark.parametrize("k", range(N_BASES))
def test_shipped_base_matches_its_manifest(k):
    folder = BASES_DIR / f"base{k}"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["base"] == k and manifest["spec"]["seed"] == k
    assert sha256_file(folder / WEIGHTS) == manifest["sha256"]
    assert manifest["made"]["threads"] == 1
    # The default micro config of a seed that maps to base k is exactly the spec base k was made
    # with, so it loads the shipped weights: a change to the world or the pretraining settings that
    # would silently make every machine pretrain its own base fails here instead.
    cfg = compose("experiment=clipping_bottleneck/dapo", f"seed={k + 1}")
    assert cfg.model.base == k
    assert pretrain_key(cfg.task, cfg.model) == manifest["pretrain_key"]
    path, source = base_checkpoint(cfg.task, cfg.model, cfg.paths.cache_dir)
    assert (path, source) == (folder, "shipped")
    assert weights_provenance(cfg) == {
        "sha256": manifest["sha256"],
        "of": WEIGHTS,
        "source": "shipped",
        "base": k,
    }


def test_the_shipped_bases_differ():
    shas = {json.loads((BASES_DIR / f"base{k}" / MANIFEST).read_text())["sha256"] for k in range(N_BASES)}
    assert len(shas) == N_BASES


@pytest.mark.parametrize("seed,base", [(1, 0), (2, 1), (3, 2), (4, 0), (30, 2), (0, 2)])
def test_seeds_spread_over_the_bases(seed, base):
    assert config.base_of_seed(seed) == base
    assert compose("experiment=clipping_bottleneck/dapo", f"seed={seed}").model.base == base


def test_an_explicit_base_wins_and_a_bad_one_fails_naming_the_key():
    assert compose("experiment=clipping_bottleneck/dapo", "seed=1", "model.base=2").model.base == 2
    with pytest.raises(ConfigError, match=r"model\.base: .*(command-line override 'model.base=3')"):
        compose("experiment=clipping_bottleneck/dapo", "model.base=3")


def test_rebuild_at_tiny_scale_is_bit_identical_and_compared_with_the_shipped_base(capsys):
    """`repro pretrain --base 0 scale=tiny` twice: the same weights both times (1 thread); it is
    not the shipped base's spec, which the command says (exit status 1: no match)."""
    shas = []
    for _ in range(2):
        assert cli.main(["pretrain", "--base", "0", "scale=tiny"]) == 1
        out = capsys.readouterr().out
        assert "not the one the shipped base was made with" in out
        shas.append(out.split("weights sha256 ")[1].split()[0])
    assert shas[0] == shas[1]
    cfg = compose("scale=tiny", "model.base=0")
    rebuilt = OmegaConf.select(cfg, "paths.cache_dir") + "/micro_models/rebuilt/base0"
    assert sha256_file(f"{rebuilt}/{WEIGHTS}") == shas[0]

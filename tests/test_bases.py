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
from repro.models.micro import BASES_DIR, MANIFEST, WEIGHTS, base_checkpoint, pretrain_key, shipped_bases


@pytest.mark.parametrize("k", range(N_BASES))
def test_shipped_base_matches_its_manifest(k):
    folder = BASES_DIR / f"base{k}"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["base"] == k and manifest["spec"]["seed"] == k
    assert sha256_file(folder / WEIGHTS) == manifest["sha256"]
    assert manifest["made"]["threads"] == 1
    # The default micro config (no experiment: the landed world, which ftis and two_rewards_rlif
    # still build on; the clipping and States packages use world v2 and its own shipped bases) of a
    # seed that maps to base k is exactly the spec base k was made with, so it loads the shipped
    # weights: a change to the world or the pretraining settings that would silently make every
    # machine pretrain its own base fails here instead.
    cfg = compose(f"seed={k + 1}")
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


@pytest.mark.parametrize("k", range(N_BASES))
@pytest.mark.parametrize(
    "world,overrides",
    [
        # clipping_bottleneck's micro scale file: world v3 and its pretraining recipe
        ("arith_v3", ("experiment=clipping_bottleneck/dapo",)),
        # states_not_tokens's micro scale file: world v3c and the same recipe
        # (tests/tasks/test_states_micro_scale.py)
        ("arith_v3c", ("experiment=states_not_tokens/stress_sft",)),
        # world v2 (the previous States rerun's world, still composable), composed directly
        ("arith_v2", ("task=arith_v2",)),
    ],
)
def test_the_worlds_load_their_shipped_bases(k, world, overrides):
    """Seed k + 1 loads the shipped <world>_base<k> by its spec, without pretraining."""
    folder = BASES_DIR / f"{world}_base{k}"
    manifest = json.loads((folder / MANIFEST).read_text())
    cfg = compose(*overrides, f"seed={k + 1}")
    assert pretrain_key(cfg.task, cfg.model) == manifest["pretrain_key"]
    assert base_checkpoint(cfg.task, cfg.model, cfg.paths.cache_dir) == (folder, "shipped")


def test_world_v3s_bases_need_its_pretraining_recipe():
    """`task=arith_v3` alone keeps the default 800-step recipe: a spec no shipped base has (the task
    file says which model keys to add); with them it finds arith_v3_base0."""
    alone = compose("task=arith_v3", "seed=1")
    full = compose(
        "task=arith_v3",
        "seed=1",
        "model.pretrain.steps=1600",
        "model.pretrain.mixture={arith: 0.51, drill: 0.29, facts: 0.10, truths: 0.10}",
    )
    shipped = json.loads((BASES_DIR / "arith_v3_base0" / MANIFEST).read_text())["pretrain_key"]
    assert pretrain_key(alone.task, alone.model) != shipped
    assert pretrain_key(full.task, full.model) == shipped


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


@pytest.mark.parametrize("folder", sorted(shipped_bases().values()), ids=lambda f: f.name)
def test_every_shipped_folder_matches_its_manifest(folder):
    """Main bases and other shipped bases (F-TIS's m3 peer) alike: the weights are the ones the
    manifest's checksum names, made on 1 thread, and the folder is found by its spec's key."""
    manifest = json.loads((folder / MANIFEST).read_text())
    assert sha256_file(folder / WEIGHTS) == manifest["sha256"]
    assert manifest["made"]["threads"] == 1
    assert shipped_bases()[manifest["pretrain_key"]] == folder


def test_the_ftis_m3_peer_loads_its_shipped_base_and_pins_its_checksum():
    """The larger F-TIS peer is shipped like the main bases (`m3_base1/`): its config's spec is the
    manifest's, so no machine pretrains its own, and the arm pins the shipped checksum."""
    cfg = compose("experiment=ftis/alone", "seed=2")
    (m3,) = [p for p in cfg.trainer.peers if p.name == "m3"]
    path, source = base_checkpoint(cfg.task, m3.model, cfg.paths.cache_dir)
    assert (path, source) == (BASES_DIR / "m3_base1", "shipped")
    assert m3.base_sha256 == json.loads((path / MANIFEST).read_text())["sha256"]


def test_a_spec_shipped_twice_is_refused_naming_both_folders(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text(json.dumps({"pretrain_key": "k1"}))
    for name in ("a", "b"):
        (tmp_path / name / WEIGHTS).write_bytes(b"w")
    with pytest.raises(ConfigError, match=r"b/base\.json: the same base spec \(k1\) is shipped in .*/a"):
        shipped_bases(tmp_path)


def test_a_shipped_manifest_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "m3").mkdir()
    (tmp_path / "m3" / MANIFEST).write_text(json.dumps({"pretrain_key": "k1"}))
    with pytest.raises(ConfigError, match=r"m3: a shipped base's manifest without its model\.safetensors"):
        shipped_bases(tmp_path)


def test_pretrain_refuses_a_bad_ship_name_before_building_anything(capsys):
    assert cli.main(["pretrain", "--base", "0", "--ship", "--name", "base7", "scale=tiny"]) == 2
    assert "--name: a folder name of letters, digits and _ not starting with 'base', got 'base7'" in (
        capsys.readouterr().err
    )
    assert not (BASES_DIR / "base7").exists()


def test_a_rebuild_in_progress_is_not_a_shipped_base(tmp_path):
    """`repro pretrain --ship` writes `<name>.tmp/` first: lookups (and its own comparison) skip it."""
    (tmp_path / "v2_base0.tmp").mkdir()
    (tmp_path / "v2_base0.tmp" / MANIFEST).write_text(json.dumps({"pretrain_key": "k1"}))
    (tmp_path / "v2_base0.tmp" / WEIGHTS).write_bytes(b"w")
    assert shipped_bases(tmp_path) == {}

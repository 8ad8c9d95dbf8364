"""Collaborative GRPO (repro/trainers/collab.py) on the tiny ftis arms: the mechanism (own samples
on-policy, other peers' off-policy; alone sees only its own), the two execution modes agreeing bit
for bit (local vs one gloo process per peer, spawned or under torchrun), a killed peer and a peer
sending a malformed message dropped by name while the others go on, the horizontal split and
stale checkpoints."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hydra_helpers import compose, train

from repro.models.micro import build_model
from repro.tasks import build_task
from repro.trainers import collab
from repro.trainers.collab_wire import LocalExchange, decode_bundle

TINY = ["scale=tiny", "trainer.steps=2", "trainer.eval_every=2"]


def steps_of(curves, key):
    return [s for s, _ in curves.get(key, [])]


def comparable(curves):
    """Everything but wall-clock times."""
    return {k: v for k, v in curves.items() if "/time/" not in k}


def test_micro_peers_are_heterogeneous_and_share_one_tokenizer():
    cfg = compose("experiment=ftis/f_tis")
    m1, m3, lora = cfg.trainer.peers
    assert (m1.name, m3.name, lora.name) == ("m1", "m3", "m1lora")
    assert m1.model == cfg.model and m1.lora is None
    # m1 starts from the shipped base of seed 1 (base 0); m3 from its own pretraining (seed 1,
    # another mixture), the same for every seed.
    assert m3.model.pretrain.mixture != m1.model.pretrain.mixture
    assert (m1.model.base, m3.model.base) == (0, 1)
    assert compose("experiment=ftis/f_tis", "seed=2").trainer.peers[1].model.base == 1
    assert lora.lora is not None and lora.model == cfg.model
    count = lambda arch: sum(p.numel() for p in build_model(arch, 130, 0).parameters())  # noqa: E731
    assert 0.8e6 < count(m1.model.arch) < 1.0e6 and 2.7e6 < count(m3.model.arch) < 3.1e6


def test_alone_trains_on_its_own_samples_and_they_are_on_policy():
    _, curves = train(compose("experiment=ftis/alone", *TINY))
    for peer in ("m1", "m3", "m1lora"):
        assert all(v == 0 for _, v in curves[f"peer/{peer}/train/other_frac"])
        assert f"peer/{peer}/train/kl_other" not in curves
        # sampler and learner are the same weights: the rollout engine's log-probs differ from the
        # training forward's only by float error.
        assert all(v < 1e-3 for _, v in curves[f"peer/{peer}/train/kl_own"])
    assert steps_of(curves, "train/loss") == [1, 2]
    assert steps_of(curves, "eval/id/greedy_acc") == [0, 2]


def test_pooled_samples_of_other_peers_are_off_policy_and_the_filter_sees_them():
    _, curves = train(compose("experiment=ftis/f_tis", *TINY, "trainer.filter.kw.threshold=0.01"))
    for peer in ("m1", "m3", "m1lora"):
        other = [v for _, v in curves[f"peer/{peer}/train/other_frac"]]
        assert all(v == pytest.approx(2 / 3) for v in other)  # 3 peers, the same share each
        kl_other = curves[f"peer/{peer}/train/kl_other"][0][1]
        kl_own = curves[f"peer/{peer}/train/kl_own"][0][1]
        assert kl_other > 100 * kl_own + 1e-4
    # g tiny: every other peer's completion with A <= 0 is filtered, own ones are kept.
    assert all(v > 0 for _, v in curves["train/filtered_frac_other"])
    assert all(v == 0 for _, v in curves["train/filtered_frac_own"])
    assert curves["collab/bytes_per_token"][0][1] > 6  # id + log-prob + mask bit, plus prompts


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["spawn", "torchrun"])
def test_one_process_per_peer_gives_the_same_numbers(launcher):
    overrides = ["experiment=ftis/f_tis", *TINY]
    final_a, a = train(compose(*overrides))
    final_b, b = train(compose(*overrides, "trainer.exchange=dist", f"trainer.launcher={launcher}"))
    assert comparable(a) == comparable(b)
    final_a.pop("train/seconds"), final_b.pop("train/seconds")
    # Every peer's final line arrived (base checksum and run totals), also when it came last.
    assert all(len(final_b[f"peer/{p}/base_sha256"]) == 64 for p in ("m1", "m3", "m1lora"))
    assert json.dumps(final_a, sort_keys=True) == json.dumps(final_b, sort_keys=True)


@pytest.mark.slow
def test_a_killed_peer_is_reported_by_name_and_the_others_go_on(monkeypatch):
    monkeypatch.setenv("REPRO_COLLAB_KILL", "m3@2")  # the m3 process SIGKILLs itself at step 2
    cfg = compose("experiment=ftis/f_tis", *TINY, "trainer.steps=3", "trainer.exchange=dist")
    final, curves = train(cfg)
    assert final["collab/dropped"] == 1.0
    assert final["collab/dropped_peers"].startswith("m3: ") and "-9" in final["collab/dropped_peers"]
    assert steps_of(curves, "peer/m3/train/loss") == [1]
    for peer in ("m1", "m1lora"):
        assert steps_of(curves, f"peer/{peer}/train/loss") == [1, 2, 3]
        assert steps_of(curves, f"peer/{peer}/eval/id/greedy_acc") == [0, 2, 3]
    assert [v for _, v in curves["collab/peers_live"]] == [3.0, 2.0, 2.0]
    # After the loss, the survivors pool each other's groups only: half of each batch is other.
    assert curves["peer/m1/train/other_frac"][-1][1] == pytest.approx(1 / 2)


class Corrupting(LocalExchange):
    """Flips one byte of `victim`'s bundle at `step` (a bad wire, a buggy peer)."""

    def __init__(self, victim: str, step: int) -> None:
        super().__init__()
        self.victim, self.step = victim, step

    def share(self, step, outgoing):
        out = super().share(step, outgoing)
        if step == self.step:
            blob = bytearray(out[self.victim])
            blob[len(blob) // 2] ^= 0xFF
            out[self.victim] = bytes(blob)
        return out


def test_a_malformed_message_drops_its_sender_by_name_and_the_others_go_on():
    cfg = compose("experiment=ftis/f_tis", *TINY, "trainer.steps=3")
    streams = collab.seed_run(cfg)
    peers = collab.build_all(cfg, streams)
    task = build_task(cfg.task, peers[0].tok)
    seen: dict[int, dict] = {}
    dropped = collab.run_loop(
        cfg, streams, peers, task, Corrupting("m3", 2), lambda s, per, sh: seen.__setitem__(s, per)
    )
    assert dropped == {"m3": "malformed message at step 2: checksum mismatch"}
    assert set(seen[1]) == {"m1", "m3", "m1lora"}
    assert set(seen[2]) == set(seen[3]) == {"m1", "m1lora"}
    assert float(seen[3]["m1"]["train/other_frac"]) == pytest.approx(1 / 2)


class Recording(LocalExchange):
    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, dict[str, bytes]] = {}

    def share(self, step, outgoing):
        self.sent[step] = dict(outgoing)
        return super().share(step, outgoing)


def _sent(cfg):
    streams = collab.seed_run(cfg)
    peers = collab.build_all(cfg, streams)
    task = build_task(cfg.task, peers[0].tok)
    ex = Recording()
    collab.run_loop(cfg, streams, peers, task, ex, lambda *a: None)
    return ex.sent


def _messages(cfg):
    return {s: {n: decode_bundle(b) for n, b in sent.items()} for s, sent in _sent(cfg).items()}


def test_arms_with_the_same_seed_draw_the_same_prompts_and_first_samples():
    """Named random streams: Alone and F-TIS (seed 1) send the same bytes at step 1 (same weights,
    same prompts, same sampling noise) and the same prompts at step 2 (weights differ by then);
    another seed draws other prompts."""
    a = _sent(compose("experiment=ftis/alone", *TINY))
    b = _sent(compose("experiment=ftis/f_tis", *TINY))
    c = _sent(compose("experiment=ftis/f_tis", *TINY, "seed=4"))  # base (4 - 1) mod 3 = 0, as seed 1
    assert a[1] == b[1] and a[1] != c[1]

    def prompts(sent, step):
        return {n: [p.tolist() for m in decode_bundle(b) for p in m.prompts] for n, b in sent[step].items()}

    assert prompts(a, 2) == prompts(b, 2) != prompts(c, 2)


def test_horizontal_groups_are_split_across_every_peer():
    cfg = compose("experiment=ftis/h_f_tis", *TINY, "trainer.steps=1", "trainer.group_size=4")
    msgs = _messages(cfg)[1]
    sizes: dict[int, list[int]] = {}
    for (msg,) in msgs.values():
        for g, gid in enumerate(msg.group_ids):
            sizes.setdefault(int(gid), []).append(int((msg.seq_group == g).sum()))
    # 4 completions per group over 3 peers: 2 + 1 + 1, every peer sampling part of every group.
    assert len(sizes) == cfg.trainer.prompts_per_step * 3
    assert all(s == [2, 1, 1] for s in sizes.values())


def test_stale_generators_sample_with_weights_k_updates_old():
    cfg = compose("experiment=ftis/stale_f_tis", *TINY, "trainer.steps=3", "trainer.stale_lag=1")
    msgs = _messages(cfg)
    for step, by_peer in msgs.items():
        for name, bundle in by_peer.items():
            fresh, stale = bundle
            assert (fresh.generator, stale.generator) == (name, f"{name}~1")
            assert (fresh.policy_version, stale.policy_version) == (step - 1, max(0, step - 2))
            assert not set(fresh.group_ids) & set(stale.group_ids)


def test_every_peer_logs_its_own_metrics_and_their_pool():
    """Evaluations: the mean over peers. Shares (train/* ratios): Σ num / Σ den over the peers,
    so between the peers' own values; and over the whole run in the final metrics (run/*)."""
    final, curves = train(compose("experiment=ftis/tis", *TINY))
    last = lambda key: final.get(key, curves.get(key, [[0, math.nan]])[-1][1])  # noqa: E731
    peers = ("m1", "m3", "m1lora")
    for key in ("eval/id/greedy_acc", "eval/ood/greedy_acc"):
        assert last(key) == pytest.approx(float(np.mean([last(f"peer/{p}/{key}") for p in peers])))
    for key in ("train/entropy", "train/trunc_frac_other", "train/kl_other", "train/is/trunc_frac"):
        per_peer = [last(f"peer/{p}/{key}") for p in peers]
        assert min(per_peer) - 1e-6 <= last(key) <= max(per_peer) + 1e-6, key
        run = [final[f"peer/{p}/run/{key.removeprefix('train/')}"] for p in peers]
        assert min(run) - 1e-6 <= final[f"run/{key.removeprefix('train/')}"] <= max(run) + 1e-6, key
    assert len(final["peer/m3/base_sha256"]) == 64


def test_a_bad_peer_model_fails_before_anything_is_loaded():
    from omegaconf import open_dict

    from repro.errors import ConfigError

    cfg = compose("experiment=ftis/alone", *TINY)
    with open_dict(cfg):
        cfg.trainer.peers[1].model.arch.hiddn = 3
    with pytest.raises(ConfigError, match=r"^trainer\.peers\[1\]\.model\.arch\.hiddn: unknown key"):
        collab.check_peers(cfg)


def test_peers_must_share_a_tokenizer(tmp_path):
    from repro.errors import ConfigError
    from repro.models.micro import build_tokenizer

    other = tmp_path / "other"
    tok = build_tokenizer(["x", "y"])
    build_model(compose("experiment=ftis/alone", *TINY).model.arch, len(tok), 0).save_pretrained(other)
    tok.save_pretrained(other)
    cfg = compose("experiment=ftis/alone", *TINY)
    cfg.trainer.peers[2].model = {"kind": "hf", "path": str(other)}
    with pytest.raises(ConfigError, match="peer 'm1lora' has another tokenizer"):
        collab.check_peers(cfg)

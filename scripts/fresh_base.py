"""Pretrain a micro base afresh with a pretraining seed no shipped base uses (issue 10, step 0: are the
RL preconditions a property of the world, or of the three shipped bases?).

The base is the clipping package's (world v2, the micro Llama and its pretraining recipe; only the
seed differs from the shipped `arith_v2_base{0,1,2}`), built on 1 thread as `repro pretrain` builds
the shipped ones. Runs then start from it as any Hugging Face folder does:

    python scripts/fresh_base.py --seed 3 --out /tmp/fresh/base3          # ~7 min on 1 thread
    repro run -m experiment=clipping_bottleneck/grpo,clipping_bottleneck/dapo seed=1,2 \
        model=hf model.path=/tmp/fresh/base3
    python scripts/world_check.py <records> --out benchmarks/world_v2/fresh_bases/preconditions.md

(`model=hf model.path=repro/bases/micro/arith_v2_base0` reproduces the canonical `grpo` seed-1 record
of the package exactly, so the route changes nothing but the weights.) The weights are not committed:
the records carry their sha256, and the seed rebuilds them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import open_dict

from repro.config import compose_once
from repro.models.micro import rebuild_base, shipped_bases


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True, help="pretraining seed (0-2 are the shipped bases)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the base (replaced)")
    ap.add_argument("--experiment", default="clipping_bottleneck/grpo", help="whose task and model to use")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (tests: model.pretrain.steps=2)")
    ns = ap.parse_args(argv)
    cfg = compose_once(f"experiment={ns.experiment}", *ns.overrides)
    with open_dict(cfg):
        cfg.model.base = ns.seed  # past the schema's 0-2 on purpose: a base nobody ships
    r = rebuild_base(cfg.task, cfg.model, ns.out)
    shipped = {p.name for p in shipped_bases().values()}
    print(f"base seed {ns.seed} -> {r['out']} in {r['seconds']:.0f} s; weights sha256 {r['sha256']}")
    if r["same_spec"]:
        print(f"  the same spec as a shipped base (identical: {r['identical']}); shipped: {sorted(shipped)}")
    return r


if __name__ == "__main__":
    main()

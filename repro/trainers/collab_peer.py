"""One collaborating peer's process (repro.trainers.collab, `trainer.exchange: dist`).

    python -m repro.trainers.collab_peer --config <resolved config.yaml> --out <dir>

with torchrun's environment: RANK (which entry of trainer.peers this process is), WORLD_SIZE,
MASTER_ADDR and MASTER_PORT (the TCPStore the gloo group is formed on). The collab trainer starts
these itself; by hand, across machines, start one per peer with those variables (or `torchrun
--nnodes N --nproc-per-node 1 ... -m repro.trainers.collab_peer ...`). Each writes its metric lines
to <out>/<peer>.jsonl.
"""

from __future__ import annotations

import argparse

from repro.trainers.collab import worker_main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m repro.trainers.collab_peer", description=__doc__)
    parser.add_argument("--config", required=True, help="the run's resolved config (YAML)")
    parser.add_argument("--out", required=True, help="folder for <peer>.jsonl metric lines")
    ns = parser.parse_args()
    worker_main(ns.config, ns.out)

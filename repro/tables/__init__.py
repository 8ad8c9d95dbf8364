"""Claim-by-claim comparison tables generated from run records.

`claimed.yaml` (claims.py) says what a paper claims and how to measure it; the runner's records
under `results/<paper>/<scale>/<arm>/seed<seed>.json` say what we got; `write_tables` (build.py)
judges each claim with paired-by-seed statistics (stats.py) and writes `comparison.md` plus
figures (figures.py) under `paper_tables/<slug>/`.
"""

from repro.tables.build import TablesReport, load_records, write_all, write_tables
from repro.tables.claims import VERDICTS, ClaimedPaper, evaluate, load_claimed
from repro.tables.stats import Estimate, paired_effect, summarize

__all__ = [
    "VERDICTS",
    "ClaimedPaper",
    "Estimate",
    "TablesReport",
    "evaluate",
    "load_claimed",
    "load_records",
    "paired_effect",
    "summarize",
    "write_all",
    "write_tables",
]

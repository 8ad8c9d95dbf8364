"""scripts/world_check.py: the committed per-base precondition table of the candidate world is what
the committed records give (a table is generated from runs, never typed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "benchmarks" / "world_v2"


def _script():
    spec = importlib.util.spec_from_file_location("world_check", REPO / "scripts" / "world_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_precondition_table_is_generated_from_the_committed_records():
    wc = _script()
    rows = wc.rows_of(FOLDER / "records")
    assert len(rows) == 6 and {r["arm"] for r in rows} == {"grpo", "dapo"}
    assert {r["base"] for r in rows} == {0, 1, 2}  # every shipped base of the candidate world
    text = wc.render(rows, "benchmarks/world_v2/records")
    assert (FOLDER / "preconditions.md").read_text() == text + "\n"


def test_interval_is_a_t_interval_over_seeds():
    wc = _script()
    assert wc.interval([0.1]) == "+0.100 (n=1)"
    # mean 0.2, sd 0.1, n 3: half-width t(0.975, 2) * 0.1 / sqrt(3) = 0.248
    assert wc.interval([0.1, 0.2, 0.3]) == "+0.200 ± 0.100 (n=3), 95% CI [-0.048, +0.448]"

"""Experiment READMEs' arm tables are generated from the YAML files and cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro import config
from repro.tables.arms import BEGIN, END, arm_table, arm_values, sync_readme

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("slug", config.packages(ROOT))
def test_readme_arm_table_matches_the_yaml_files(slug):
    text = (ROOT / "experiments" / slug / "README.md").read_text()
    assert BEGIN in text and END in text, f"experiments/{slug}/README.md has no generated arm table"
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert block == arm_table(ROOT, slug), f"run `repro tables` to regenerate experiments/{slug}/README.md"


def test_arm_values_read_leaves_and_their_sources(tmp_path):
    arm = tmp_path / "a.yaml"
    arm.write_text(
        "# @package _global_\ndefaults:\n  - /experiment/p/base\n  - _self_\n"
        "trainer:\n  lr: 2.0e-4          # Table 3\n  lora:              # ours: paper silent\n    r: 16\n"
        "reward:\n  - {name: exact_answer, kw: {}}\n"
    )
    assert arm_values(arm) == [
        ("trainer.lr", "2.0e-4", "Table 3"),
        ("trainer.lora.r", "16", "ours: paper silent"),
        ("reward", "{name: exact_answer, kw: {}}", ""),
    ]


def test_sync_readme_rewrites_only_on_change(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold\n{END}\nrest\n")
    assert sync_readme(readme, "| new |") is True
    assert readme.read_text() == f"# x\n\n{BEGIN}\n| new |\n{END}\nrest\n"
    mtime = readme.stat().st_mtime_ns
    assert sync_readme(readme, "| new |") is False and readme.stat().st_mtime_ns == mtime

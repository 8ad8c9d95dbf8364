"""Preconditions of a candidate micro world on every base it ran on (issue 10, step 0).

Reads run records of the clipping package's `grpo` and `dapo` arms made with a candidate world
(`repro reproduce clipping_bottleneck --arms grpo,dapo --seeds 1,2,3 task=<world> ...`) and writes a
Markdown table: per arm and base, held-out greedy accuracy at step 0 and at the end, its change,
the mean completion length at the first and last step, and the base's retention accuracies and
gold-choice margins; per arm, the mean change with its sd and 95% t interval over the seeds.

    python scripts/world_check.py benchmarks/world_v2/records --out benchmarks/world_v2/preconditions.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from repro.records import read_record
from repro.tables.stats import summarize


def first_last(curve: list) -> tuple[float, float]:
    return (curve[0][1], curve[-1][1]) if curve else (float("nan"), float("nan"))


def rows_of(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.rglob("*.json")):
        rec = read_record(path)
        if rec.get("status") != "FINISHED":
            continue
        c = rec["curves"]
        a0, a1 = first_last(c.get("eval/id/greedy_acc", []))
        l0, l1 = first_last(c.get("rollout/len_mean", []))
        prov = rec["provenance"]
        rows.append(
            {
                "file": path.name,
                "arm": rec["arm"],
                "seed": rec["seed"],
                "base": _base_label(rec),
                "sha": (prov.get("base_sha256") or "")[:12],
                "task": rec["config"]["task"],
                "budget": rec["config"]["trainer"]["max_new_tokens"],
                "acc": (a0, a1),
                "len": (l0, l1),
                "retention": {
                    k.split("/")[-1]: first_last(c[k])[0] for k in c if k.startswith("eval/retention/")
                },
                "code": (prov.get("code_sha256") or "")[:10],
                "cut0": first_last(c.get("eval/id/truncated_frac", []))[0],
            }
        )
    return rows


def _base_label(rec: dict):
    """The shipped base's index, or `<folder>` of a base loaded as a local folder (`model=hf
    model.path=...`, e.g. a base pretrained afresh by scripts/fresh_base.py)."""
    prov = rec["provenance"]
    base = prov.get("base")
    if isinstance(base, dict) and base.get("base") is not None:
        return base["base"]
    if not isinstance(base, dict) and base is not None:
        return base
    return Path(str(rec["config"]["model"].get("path", "?"))).name


# The pass rule of a screened world (benchmarks/world_v3/RULE.md), fixed before its runs.
RULE = {"max_start_acc": 0.80, "retention": (0.40, 0.95), "max_cut": 0.01}


def interval(deltas: list[float]) -> str:
    est = summarize(dict(enumerate(deltas)))
    if est.ci is None:
        return f"{est.mean:+.3f} (n=1)"
    return f"{est.mean:+.3f} ± {est.sd:.3f} (n={est.n}), 95% CI [{est.ci[0]:+.3f}, {est.ci[1]:+.3f}]"


def judge(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """(condition, holds, evidence) for each condition of the pass rule, over every base and run."""
    bases = sorted({str(r["base"]) for r in rows})
    first = {b: next(r for r in rows if str(r["base"]) == b) for b in bases}  # step 0 is the base's own
    out = []
    worst = max(first.values(), key=lambda r: r["acc"][0])
    out.append(
        (
            f"1. off the ceiling: every base starts at held-out greedy accuracy <= {RULE['max_start_acc']}",
            all(r["acc"][0] <= RULE["max_start_acc"] for r in first.values()),
            f"highest: {worst['base']} at {worst['acc'][0]:.3f}",
        )
    )
    for arm in sorted({r["arm"] for r in rows}):
        mine = [r for r in rows if r["arm"] == arm]
        deltas = [r["acc"][1] - r["acc"][0] for r in mine]
        losers = sorted(f"{r['base']}/seed {r['seed']} ({d:+.3f})" for r, d in zip(mine, deltas) if d <= 0)
        ci = summarize(dict(enumerate(deltas))).ci
        low = float("nan") if ci is None else ci[0]
        out.append(
            (
                f"2. RL helps on every base ({arm}): every run gains and the 95% CI of the mean excludes 0",
                not losers and low > 0,
                f"{len(mine) - len(losers)} of {len(mine)} runs gain; CI lower end {low:+.3f}"
                + (f"; no gain: {', '.join(losers)}" if losers else ""),
            )
        )
    lo, hi = RULE["retention"]
    off = [
        f"{b} {k.removesuffix('_acc')} {v:.3f}"
        for b, r in first.items()
        for k, v in sorted(r["retention"].items())
        if k.endswith("_acc") and not lo <= v < hi
    ]
    out.append(
        (
            f"3. retention measurable: every base's retention accuracy in [{lo:.2f}, {hi:.2f})",
            not off,
            "all inside" if not off else "outside: " + ", ".join(off),
        )
    )
    cond = f"4. no truncation at the base: held-out truncated share <= {RULE['max_cut']:.0%} on every base"
    if any(math.isnan(r["cut0"]) for r in first.values()):  # records older than the logged share
        out.append((cond, None, "not recorded"))
    else:
        cut = max(first.values(), key=lambda r: r["cut0"])
        out.append(
            (
                cond,
                all(r["cut0"] <= RULE["max_cut"] for r in first.values()),
                f"highest: {cut['base']} at {cut['cut0']:.1%}",
            )
        )
    return out


def render_rule(rows: list[dict], rule: str) -> str:
    verdicts = judge(rows)
    holds = [ok for _, ok, _ in verdicts]
    outcome = (
        "FAILS" if False in holds else "PASSES" if all(holds) else "UNDECIDED (a condition was not recorded)"
    )
    lines = [
        f"## Pass rule ({rule}): {outcome}",
        "",
        "| condition | holds | evidence |",
        "|---|---|---|",
    ]
    shown = {True: "yes", False: "**no**", None: "not recorded"}
    lines += [f"| {c} | {shown[ok]} | {e} |" for c, ok, e in verdicts]
    return "\n".join(lines + [""])


def render_by_base(rows: list[dict], shipped: int = 0) -> str:
    """One line per base: its start, each arm's end accuracy per seed, its retention. Bases are
    in name order; the first `shipped` of them are marked as shipped, the rest as fresh."""
    bases = sorted({str(r["base"]) for r in rows})
    arms = sorted({r["arm"] for r in rows})

    def runs(base: str, arm: str) -> list[dict]:
        return sorted(
            (r for r in rows if str(r["base"]) == base and r["arm"] == arm), key=lambda r: r["seed"]
        )

    seeds = {a: ", ".join(str(r["seed"]) for r in runs(bases[0], a)) for a in arms}
    lines = [
        "| base | start (held-out greedy) | "
        + " | ".join(f"{a} end (seeds {seeds[a]})" for a in arms)
        + " | retention (facts, truths) |",
        "|---|---|" + "---|" * len(arms) + "---|",
    ]
    for i, b in enumerate(bases):
        first = runs(b, arms[0])[0]
        ends = [", ".join(f"{r['acc'][1]:.3f}" for r in runs(b, a)) for a in arms]
        ret = first["retention"]
        lines.append(
            f"| {b} ({'shipped' if i < shipped else 'fresh'}) | {first['acc'][0]:.3f} | "
            + " | ".join(ends)
            + f" | {ret.get('facts_acc', float('nan')):.3f}, {ret.get('truths_acc', float('nan')):.3f} |"
        )
    return "\n".join(lines)


BLOCK = ("<!-- preconditions:begin", "<!-- preconditions:end -->")


def write_readme_block(readme: Path, table: str, source: str) -> None:
    """Replace the block between BLOCK's markers in `readme` with `table` (generated, with its source)."""
    text = readme.read_text()
    head, tail = text.index(BLOCK[0]), text.index(BLOCK[1])
    block = f"{BLOCK[0]} (generated by scripts/world_check.py from {source}; do not edit) -->\n{table}\n"
    readme.write_text(text[:head] + block + text[tail:])


def render(rows: list[dict], source: str) -> str:
    tasks = {json.dumps(r["task"], sort_keys=True) for r in rows}
    lines = [
        "# Candidate world: preconditions per shipped base"
        if all(isinstance(r["base"], int) for r in rows)
        else "# Candidate world: preconditions per base (named: pretrained afresh, not shipped)",
        "",
        f"Generated by `scripts/world_check.py` from the {len(rows)} records in `{source}`; do not edit.",
        f"Code fingerprints: {', '.join(sorted({r['code'] for r in rows}))}; generation budget(s): "
        f"{', '.join(str(b) for b in sorted({r['budget'] for r in rows}))} tokens.",
        "",
        "World (`task`): " + "; ".join(f"`{t}`" for t in sorted(tasks)),
        "",
    ]
    for arm in sorted({r["arm"] for r in rows}):
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        deltas = [r["acc"][1] - r["acc"][0] for r in mine]
        lines += [
            f"## {arm}: held-out greedy accuracy change {interval(deltas)}",
            "",
            "| seed | base (sha256) | accuracy step 0 → end | change | completion length first → last step "
            "| base retention (accuracy, gold margin) |",
            "|---|---|---|---|---|---|",
        ]
        for r in mine:
            ret = r["retention"]
            tasks_ret = sorted({k.rsplit("_", 1)[0] for k in ret})
            shown = "; ".join(
                f"{t} {ret.get(f'{t}_acc', float('nan')):.3f} ({ret.get(f'{t}_margin', float('nan')):+.3f})"
                for t in tasks_ret
            )
            lines.append(
                f"| {r['seed']} | {r['base']} ({r['sha']}…) | {r['acc'][0]:.3f} → {r['acc'][1]:.3f} | "
                f"{r['acc'][1] - r['acc'][0]:+.3f} | {r['len'][0]:.1f} → {r['len'][1]:.1f} | {shown} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("records", type=Path, help="folder of run records (searched recursively)")
    ap.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    ap.add_argument("--rule", help="append the verdict of the screening rule at this path (world_check.RULE)")
    ap.add_argument("--readme", type=Path, help="also write the per-base table into this README's block")
    ap.add_argument(
        "--shipped", type=int, default=3, help="how many of the bases (in name order) are shipped"
    )
    ns = ap.parse_args()
    rows = rows_of(ns.records)
    if not rows:
        raise SystemExit(f"{ns.records}: no finished run records")
    text = render(rows, ns.records.as_posix())
    if ns.rule:
        text += "\n" + render_rule(rows, ns.rule)
    if ns.readme:
        write_readme_block(ns.readme, render_by_base(rows, ns.shipped), ns.records.as_posix())
        print(f"wrote the per-base table into {ns.readme}")
    if ns.out:
        ns.out.write_text(text + "\n")
        print(f"wrote {ns.out} ({len(rows)} records)")
    else:
        print(text)


if __name__ == "__main__":
    main()

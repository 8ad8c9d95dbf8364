"""Run records: one small JSON file per run, the committed result the tables are built from.

    <results_dir>/<paper>/<scale>/<arm>/seed<seed>.json                   canonical runs
    <results_dir>/<paper>/<scale>/<arm>/adhoc/seed<seed>-<hash8>.json     runs with other overrides
    ... .failed.json                                                      the same, for failed runs

A canonical record may be *reused* by another arm that runs the same computation (equal
`provenance.reuse_key`, e.g. an arm of one package that only extends an arm of another): the copy
carries the new paper and arm and says where it came from in `provenance.reused_from`.

A run is canonical when its only overrides are the experiment, seed, scale and where things are
written (hydra.*, paths.*, tracking.*, trainer.threads): exactly what `repro reproduce` runs.
A record's `overrides` lists only the other overrides (empty for a canonical run), which is what
the tables check; the full list of a job's overrides is in its MLflow tag `overrides`.
Writes are atomic (repro.io: temp file + fsync + os.replace), so a reader never sees half a record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repro.io import atomic_write_text
from repro.provenance import config_hash, reuse_key

SCHEMA = 1
KEYS = (
    "schema",
    "paper",
    "arm",
    "seed",
    "scale",
    "status",
    "failure_reason",
    "run_id",
    "overrides",
    "config",
    "config_hash",
    "final",
    "curves",
    "provenance",
)
CANONICAL_KEYS = frozenset({"experiment", "seed", "scale", "trainer.threads"})
CANONICAL_PREFIXES = ("hydra.", "hydra/", "paths.", "tracking.")


def override_key(override: str) -> str:
    """`++trainer.lr=1e-4` -> `trainer.lr`; `~tracking.record` -> `tracking.record`."""
    return override.split("=", 1)[0].lstrip("+~").strip()


UNKNOWN_OVERRIDES = "<unknown: config composed outside a Hydra job>"


def extra_overrides(overrides: Iterable[str] | None) -> list[str]:
    """The overrides beyond the experiment, seed, scale and output locations (the ones that make a
    run ad hoc). Unknown overrides (None) are reported as one marker entry."""
    if overrides is None:
        return [UNKNOWN_OVERRIDES]
    return [
        o
        for o in overrides
        if override_key(o) not in CANONICAL_KEYS and not override_key(o).startswith(CANONICAL_PREFIXES)
    ]


def is_canonical(overrides: Iterable[str] | None) -> bool:
    """True if the overrides change only the experiment, seed, scale or output locations.
    None (overrides unknown, e.g. a config composed outside Hydra's runner) is not canonical."""
    return not extra_overrides(overrides)


def record_path(
    results_dir: str | os.PathLike[str],
    *,
    paper: str | None,
    scale: str | None,
    arm: str | None,
    seed: int,
    canonical: bool,
    config_hash: str,
    failed: bool,
) -> Path:
    """Where the record of this run goes (see the module docstring). Runs without a paper or arm
    are always ad hoc, under `adhoc/`."""
    canonical = canonical and bool(paper) and bool(arm)
    base = Path(results_dir) / (paper or "adhoc") / (scale or "noscale") / (arm or "adhoc")
    suffix = ".failed.json" if failed else ".json"
    if canonical:
        return base / f"seed{seed}{suffix}"
    return base / "adhoc" / f"seed{seed}-{config_hash[:8]}{suffix}"


def _round6(value: float) -> float | int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    if not math.isfinite(value):
        return value
    return float(f"{value:.6g}")


def compact_curves(curves: dict[str, list[list[float]]]) -> dict[str, list[list[float | int]]]:
    """Curves with steps as ints and values rounded to 6 significant digits."""
    return {name: [[int(step), _round6(v)] for step, v in points] for name, points in curves.items()}


def dumps(record: dict[str, Any]) -> str:
    """Compact but diffable JSON: one top-level key per line, one curve per line.
    Non-finite floats are written as NaN/Infinity (Python's json reads them back)."""
    lines = []
    for key, value in record.items():
        if key == "curves" and value:
            inner = [f"    {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in value.items()]
            text = "{\n" + ",\n".join(inner) + "\n  }"
        else:
            text = json.dumps(value, separators=(",", ":"), sort_keys=key in ("config", "provenance"))
        lines.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def make_record(
    *,
    paper: str | None,
    arm: str | None,
    seed: int,
    scale: str | None,
    status: str,
    failure_reason: str | None,
    run_id: str | None,
    overrides: list[str] | None,
    config: dict[str, Any],
    config_hash: str,
    final: dict[str, Any],
    curves: dict[str, list[list[float]]],
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """A record dict with exactly the schema's keys, in order. `overrides` are the job's Hydra
    overrides; the record keeps only those beyond the canonical ones (see `extra_overrides`)."""
    assert status in ("FINISHED", "FAILED"), status
    record = {
        "schema": SCHEMA,
        "paper": paper,
        "arm": arm,
        "seed": seed,
        "scale": scale,
        "status": status,
        "failure_reason": failure_reason,
        "run_id": run_id,
        "overrides": extra_overrides(overrides),
        "config": config,
        "config_hash": config_hash,
        "final": {k: _jsonable(v) for k, v in final.items()},
        "curves": compact_curves(curves),
        "provenance": provenance,
    }
    assert tuple(record) == KEYS
    return record


def _jsonable(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    try:
        return float(value)  # numpy / torch scalars
    except (TypeError, ValueError):
        return str(value)


def write_record(record: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a record atomically, mode 0644. A successful record replaces a stale `.failed.json` of
    the same run; a failed one never touches the successful record next to it."""
    path = atomic_write_text(path, dumps(record))
    if record["status"] == "FINISHED" and path.name.endswith(".json"):
        stale = path.with_name(path.name[: -len(".json")] + ".failed.json")
        stale.unlink(missing_ok=True)
    return path


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one record."""
    with open(path) as f:
        return json.load(f)


def find_reusable(
    results_dir: str | os.PathLike[str], scale: str, seed: int, key: str, *, exclude: tuple[str, str]
) -> Path | None:
    """The first (in path order) finished canonical record at `scale` and `seed` whose reuse key
    is `key`, other than the (paper, arm) `exclude`'s own and other than reused copies; None if none."""
    for path in sorted(Path(results_dir).glob(f"*/{scale}/*/seed{seed}.json")):
        if (path.parent.parent.parent.name, path.parent.name) == exclude:
            continue
        try:
            rec = read_record(path)
        except (OSError, ValueError):
            continue
        if (
            rec.get("status") == "FINISHED"
            and not rec.get("overrides")
            and not (rec.get("provenance") or {}).get("reused_from")
            and isinstance(rec.get("config"), dict)
            and reuse_key(rec["config"]) == key
        ):
            return path
    return None


def reused_copy(source: dict[str, Any], source_path: str, *, paper: str, arm: str) -> dict[str, Any]:
    """The record of `paper`/`arm` for a run reused from `source` (read from `source_path`): the
    same numbers, run id and provenance, the new names, and `provenance.reused_from`."""
    cfg = {**source["config"], "paper": paper, "arm": arm}
    prov = {
        **source["provenance"],
        "reused_from": {
            "record": source_path,
            "run_id": source.get("run_id"),
            "config_hash": source.get("config_hash"),
        },
    }
    record = {**source, "paper": paper, "arm": arm, "config": cfg, "config_hash": config_hash(cfg)}
    record["provenance"] = prov
    assert tuple(record) == KEYS
    return record

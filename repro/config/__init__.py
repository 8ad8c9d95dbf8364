"""The config layer: where things are, Hydra composition, typed validation, suites.

Imports only errors/registry below it; pipeline, runner, launch and cli build on it.
"""

from repro.config.compose import (
    CONFIG_NAME,
    EVAL_CONFIG_NAME,
    arm_packages,
    base_of_seed,
    compose,
    compose_eval,
    compose_once,
    compose_raw,
    finalize,
    hydra_app,
    import_paper_modules,
    package_dependencies,
)
from repro.config.env import (
    CONF_DIR,
    SUITE_FILE,
    check_slug,
    find_root,
    package_arms,
    package_dir,
    packages,
    prepare_environment,
    split_experiment,
    with_searchpath,
)
from repro.config.suite import Paper, Suite, load_papers, load_suite

__all__ = [
    "CONFIG_NAME",
    "CONF_DIR",
    "EVAL_CONFIG_NAME",
    "SUITE_FILE",
    "Paper",
    "Suite",
    "arm_packages",
    "base_of_seed",
    "check_slug",
    "compose",
    "compose_eval",
    "compose_once",
    "compose_raw",
    "finalize",
    "find_root",
    "hydra_app",
    "import_paper_modules",
    "load_papers",
    "load_suite",
    "package_arms",
    "package_dependencies",
    "package_dir",
    "packages",
    "prepare_environment",
    "split_experiment",
    "with_searchpath",
]

"""The runner tests' throwaway root (`demo` package, `_test_quadratic` trainer) for the scale-out
tests, which run in `nox -s scale_out` (Ray, the full MLflow package)."""

from runner.conftest import _offline, mlflow_template, repro_root  # noqa: F401  (fixtures)

"""Errors the runner treats specially."""


class ConfigError(ValueError):
    """Bad user input (config key, value, file). Raised before any expensive work; names the key."""


class NonFiniteError(RuntimeError):
    """A NaN/inf loss, gradient or metric: the run is recorded as FAILED with this message."""

"""Errors the runner treats specially."""


class ConfigError(ValueError):
    """Bad user input (config key, value, file). Raised before any expensive work; names the key."""


class NonFiniteError(RuntimeError):
    """A NaN/inf loss, gradient or metric: the run is recorded as FAILED with this message."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGINT, SIGTERM). A KeyboardInterrupt, so everything that cleans
    up after Ctrl-C (joblib, Hydra, context managers) does so for SIGTERM too."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum

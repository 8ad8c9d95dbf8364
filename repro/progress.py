"""Progress for a person watching, on a terminal or in a log file (nohup, SLURM, CI).

    report = ProgressReport("dapo-s1")          # a rich bar on a TTY, else a plain line every 30 s
    report(step, total, reward=0.41)            #   and always at the last step

    sweep = SweepProgress.start(total=8)        # in the process that launches the jobs
    SweepProgress.current().job_done(name, "FINISHED", 42.0)   # in each job, any process:
        sweep: 3/8 runs done (1 failed), ETA 4.2 min; last: experiment=x/a seed=1 FINISHED in 42 s

    quiet_third_party()                         # no transformers / hub / tqdm bars in our output

A sweep's jobs may run in other processes (the joblib launcher): they find the sweep's state folder
through the environment variable REPRO_SWEEP_STATE, which the launching process sets before its
workers start. The folder holds one line per finished job, and a STOP file once the sweep is
asked to stop (a signal): jobs that have not started yet skip themselves.
A leaf module: it imports nothing from repro.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENV_STATE = "REPRO_SWEEP_STATE"


def quiet_third_party() -> None:
    """Silence the progress bars of transformers and huggingface_hub ("Loading weights", "Writing
    model shards", downloads) in this process and the processes it starts. A user's own setting
    of HF_HUB_DISABLE_PROGRESS_BARS wins."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] != "1":
        return
    if "transformers" in sys.modules:  # imported before the variable was set: tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def duration(seconds: float) -> str:
    """'42 s', '4.2 min', '1.3 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressReport:
    """Training progress for a person watching: a rich progress bar when the stream is a terminal,
    else (log files, sweeps) one plain line at most every `every_s` seconds and at the last step:

        dapo-s1: step 12/30 reward 0.41 acc 0.37 (ETA 40 s)

    The ETA extrapolates the time per step since the first report. With `quiet_s`, nothing is
    shown until the work has taken that long (short evaluations stay silent, long ones report)."""

    def __init__(self, label: str, every_s: float = 30.0, stream: Any = None, quiet_s: float = 0.0) -> None:
        self.label = label
        self.every_s = every_s
        self.stream = stream
        self.quiet_s = quiet_s
        self._created = time.monotonic() if quiet_s else 0.0
        self._first: tuple[float, int] | None = None  # (time, step) of the first report
        self._last_line: float | None = None
        self._bar: Any = None  # rich.progress.Progress while a bar is shown
        self._bar_task: Any = None

    def __call__(self, step: int, total: int, **fields: float) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = (now, step)
        t_first, s_first = self._first
        text = f"step {step}/{total}" + "".join(f" {k} {v:.2f}" for k, v in fields.items())
        stream = self.stream or sys.stdout
        if now - self._created < self.quiet_s and self._bar is None and self._last_line is None:
            return
        if _isatty(stream):
            self._show_bar(step, total, text)
        elif step >= total or self._last_line is None or now - self._last_line >= self.every_s:
            if step > s_first:
                eta = (now - t_first) / (step - s_first) * (total - step)
                text += f" (ETA {eta:.0f} s)" if eta < 120 else f" (ETA {duration(eta)})"
            print(f"{self.label}: {text}", file=stream, flush=True)
            self._last_line = now

    def _show_bar(self, step: int, total: int, text: str) -> None:
        from rich.progress import Progress

        if self._bar is None:
            self._bar = Progress(transient=True)
            self._bar.start()
            self._bar_task = self._bar.add_task(self.label, total=total)
        self._bar.update(self._bar_task, completed=step, total=total, description=f"{self.label} {text}")
        if step >= total:
            self.close()

    def close(self) -> None:
        """Take the bar off the terminal (if one is shown)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


class SweepProgress:
    """'k/N runs done, ETA' across the processes of one sweep (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.total: int = int(meta["total"])
        self.started: float = float(meta["started"])
        self.label: str = str(meta.get("label") or "sweep")
        self.parent_pid: int = int(meta.get("pid") or 0)  # the process that launched the sweep

    @classmethod
    def start(cls, total: int, label: str = "sweep", parent: Path | None = None) -> SweepProgress:
        """A new sweep of `total` jobs; its jobs (in this process or started after this call) find
        it through the environment."""
        folder = Path(tempfile.mkdtemp(prefix="repro-sweep-", dir=parent))
        meta = {"total": int(total), "started": time.time(), "label": label, "pid": os.getpid()}
        (folder / "meta.json").write_text(json.dumps(meta))
        os.environ[ENV_STATE] = str(folder)
        return cls(folder)

    @classmethod
    def current(cls) -> SweepProgress | None:
        """The sweep this process's jobs belong to, or None (a single run)."""
        folder = os.environ.get(ENV_STATE)
        if not folder or not (Path(folder) / "meta.json").exists():
            return None
        return cls(Path(folder))

    def done(self) -> list[dict[str, Any]]:
        """The finished jobs so far, in the order they finished."""
        path = self.folder / "done.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def job_done(self, name: str, status: str, seconds: float, stream: Any = None) -> str:
        """Record one finished job and print the sweep's state as one line; returns the line."""
        entry = json.dumps({"name": name, "status": status, "seconds": round(float(seconds), 1)})
        # One O_APPEND write per job: lines from parallel workers never interleave.
        fd = os.open(self.folder / "done.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (entry + "\n").encode())
        finally:
            os.close(fd)
        finished = self.done()
        k = len(finished)
        failed = sum(1 for d in finished if d["status"] not in ("FINISHED", "SKIPPED"))
        elapsed = time.time() - self.started
        eta = f", ETA {duration(elapsed / k * (self.total - k))}" if 0 < k < self.total else ""
        failed_text = f" ({failed} not finished)" if failed else ""
        count = f"{k}/{self.total}" if self.total else str(k)
        line = (
            f"{self.label}: {count} runs done{failed_text}{eta}; "
            f"last: {name} {status} (job {duration(seconds)})"
        )
        print(line, file=stream or sys.stdout, flush=True)
        return line

    def request_stop(self, signal_name: str) -> None:
        """Ask the jobs that have not started to skip themselves (a signal stopped the sweep)."""
        (self.folder / "STOP").write_text(signal_name)

    def stop_requested(self) -> str | None:
        """The signal name that stopped the sweep, or None."""
        path = self.folder / "STOP"
        return path.read_text().strip() or "signal" if path.exists() else None

    def close(self) -> None:
        """Forget the sweep: remove its folder and the environment variable."""
        if os.environ.get(ENV_STATE) == str(self.folder):
            del os.environ[ENV_STATE]
        shutil.rmtree(self.folder, ignore_errors=True)

"""repro.progress: a sweep's "k/N runs done, ETA" across processes, its stop flag, quiet HF bars."""

from __future__ import annotations

import io
import os

from repro import progress
from repro.progress import SweepProgress


def test_sweep_progress_counts_jobs_from_any_process_and_estimates_the_rest(monkeypatch):
    clock = iter([1000.0, 1060.0, 1090.0, 1200.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    sweep = SweepProgress.start(total=3, label="demo")
    try:
        assert os.environ[progress.ENV_STATE] == str(sweep.folder)
        here = SweepProgress.current()  # what a job (in this or a worker process) finds
        assert here is not None and here.total == 3 and here.parent_pid == os.getpid()
        out = io.StringIO()
        lines = [
            here.job_done("experiment=x/a seed=1", "FINISHED", 58.0, stream=out),
            here.job_done("experiment=x/a seed=2", "FAILED", 80.0, stream=out),
            here.job_done("experiment=x/b seed=1", "FINISHED", 150.0, stream=out),
        ]
        assert lines == [
            "demo: 1/3 runs done, ETA 2.0 min; last: experiment=x/a seed=1 FINISHED (job 58 s)",
            "demo: 2/3 runs done (1 not finished), ETA 45 s; last: experiment=x/a seed=2 FAILED (job 80 s)",
            "demo: 3/3 runs done (1 not finished); last: experiment=x/b seed=1 FINISHED (job 2.5 min)",
        ]
        assert out.getvalue().splitlines() == lines
        assert [d["status"] for d in sweep.done()] == ["FINISHED", "FAILED", "FINISHED"]

        assert sweep.stop_requested() is None
        sweep.request_stop("SIGINT")
        assert here.stop_requested() == "SIGINT"
    finally:
        sweep.close()
    assert progress.ENV_STATE not in os.environ and not sweep.folder.exists()
    assert SweepProgress.current() is None


def test_third_party_progress_bars_are_silenced_unless_the_user_asks(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    progress.quiet_third_party()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    progress.quiet_third_party()
    assert hf_logging.is_progress_bar_enabled()


def test_quiet_progress_says_nothing_about_quick_work_and_reports_slow_work(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 3.0, 103.0, 140.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    quick, slow = io.StringIO(), io.StringIO()
    report = progress.ProgressReport("evaluation at step 0", every_s=30.0, stream=quick, quiet_s=30.0)
    report(1, 2)
    report(2, 2)
    assert quick.getvalue() == ""  # done within 30 s: silent
    report = progress.ProgressReport("evaluation at step 0", every_s=30.0, stream=slow, quiet_s=30.0)
    report(1, 3)  # 100 s after it started: past quiet_s, first line
    report(2, 3)  # 37 s later
    assert slow.getvalue().splitlines() == [
        "evaluation at step 0: step 1/3",
        "evaluation at step 0: step 2/3 (ETA 37 s)",
    ]

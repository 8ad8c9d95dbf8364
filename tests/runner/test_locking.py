"""The file lock: exclusive across processes, and a timeout that names the lock file."""

import multiprocessing as mp
import time

import pytest

from repro.errors import ConfigError
from repro.locking import file_lock


def _hold(path, seconds, started):
    with file_lock(path):
        started.set()
        time.sleep(seconds)


def test_second_holder_times_out_with_the_lock_file_named(tmp_path):
    path = tmp_path / "deep" / "x.lock"
    started = mp.get_context("spawn").Event()
    p = mp.get_context("spawn").Process(target=_hold, args=(path, 3.0, started))
    p.start()
    try:
        assert started.wait(30)
        with pytest.raises(ConfigError, match=str(path)):
            with file_lock(path, timeout=0.2):
                pass
    finally:
        p.join()
    with file_lock(path, timeout=1):  # free again once the holder is gone
        pass

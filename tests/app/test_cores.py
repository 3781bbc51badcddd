"""A search process's share of the CPU cores: the machine's cores among the live search
processes and the trials each runs at once, unless --threads fixes it."""

import os
import subprocess
import sys

from biotune_optuna.app.cores import CoreShare, cores


def test_share_counts_live_processes_and_forgets_dead_ones(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / str(other.pid)).touch()
        (tmp_path / "999999999").touch()  # a process that no longer exists
        with CoreShare(n_jobs=1, folder=tmp_path) as share:
            assert share.processes() == 2
            assert share.share() == max(1, cores() // 2)
            assert not (tmp_path / "999999999").exists()
        assert not (tmp_path / str(os.getpid())).exists()
    finally:
        other.kill()
        other.wait()


def test_threads_option_wins(tmp_path):
    with CoreShare(n_jobs=4, threads=3, folder=tmp_path) as share:
        assert share.share() == 3

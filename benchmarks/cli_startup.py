"""How long the command line takes to answer when it needs no training, against Optuna's own
command line, in one run: median of several starts of each.

    .venv/bin/python -m benchmarks.cli_startup             # rewrites its RESULTS.md section
    .venv/bin/python -m benchmarks.cli_startup --no-write
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import results

BIN = Path(sys.executable).parent


def seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="starts of each command")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{folder}/s.db"
        subprocess.run([BIN / "optuna", "create-study", "--study-name", "s", "--storage",
                        storage], check=True, capture_output=True)
        commands = {
            "optuna --help": [BIN / "optuna", "--help"],
            "biotune-optuna --help": [BIN / "biotune-optuna", "--help"],
            "biotune-optuna search --help": [BIN / "biotune-optuna", "search", "--help"],
            "optuna studies": [BIN / "optuna", "studies", "--storage", storage],
            "biotune-optuna studies": [BIN / "biotune-optuna", "studies", "--storage",
                                       storage],
        }
        times = {name: seconds(command, args.runs) for name, command in commands.items()}
    anchor = times["optuna --help"]
    rows = [[name, f"{t:.2f}", f"{t / anchor:.2f}"] for name, t in times.items()]
    body = (f"Command: `.venv/bin/python -m benchmarks.cli_startup --runs {args.runs}` "
            f"({results.machine()}).\n\nMedian wall time of {args.runs} starts, and the ratio "
            "to `optuna --help` measured in the same run (none of these loads torch; listing "
            "studies opens Optuna's RDB storage, whose SQLAlchemy and Alembic imports take "
            "most of the time, as `optuna studies` shows):\n\n"
            + results.table(["command", "seconds", "/ optuna --help"], rows) + "\n")
    results.publish("cli_startup", "Command-line start-up", body, write=not args.no_write)


if __name__ == "__main__":
    main()

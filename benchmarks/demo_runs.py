"""How long the offline demo takes and what it prints, for the README to point at.

    .venv/bin/python -m benchmarks.demo_runs           # both demos, rewrites RESULTS.md
    .venv/bin/python -m benchmarks.demo_runs --quick   # the quick demo only

Each demo runs as a user runs it (``biotune-optuna demo``), in an empty folder (a new study),
with the emoji set already in the data cache.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from benchmarks import results


def run(quick: bool) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "biotune_optuna.cli", "demo", "-q",
                               *(["--quick"] if quick else [])], cwd=folder, check=True,
                              capture_output=True, text=True)
        return time.perf_counter() - start, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the quick demo only")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "biotune_optuna.finetuning.emoji"], check=True,
                   stdout=subprocess.DEVNULL)  # the data cache a second run of the demo finds
    sections = []
    for quick in ([True] if args.quick else [True, False]):
        seconds, printed = run(quick)
        label = "biotune-optuna demo --quick" if quick else "biotune-optuna demo"
        sections.append(f"### `{label}`: {seconds:.0f} s\n\n```\n{printed}\n```")
        print(sections[-1], flush=True)
    command = ".venv/bin/python -m benchmarks.demo_runs" + (" --quick" if args.quick else "")
    body = (f"Command: `{command}` ({results.machine()}).\n\nWall time of each demo in an "
            "empty folder with the emoji set in the data cache (a first run on a new machine "
            "also fetches it with npm, a few seconds more), and what it printed:\n\n"
            + "\n\n".join(sections) + "\n")
    results.publish("demo", "The demo", body, write=not args.no_write)


if __name__ == "__main__":
    main()

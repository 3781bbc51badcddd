"""Shared helpers: markdown tables and sections of benchmarks/RESULTS.md, one per script, and
the mean ± standard error figures written in them."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).with_name("RESULTS.md")
PREAMBLE = """# Benchmark results

Every section is written by the script its command names; rerun the command to reproduce it.
Figures are measured on the machine named in each section, in one run per section, so ratios
within a section compare like with like.
"""


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def mean_se(values) -> str:
    """Mean ± standard error of the values given (None for a missing one)."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if len(values) < 2:
        return f"{values.mean():.4f}" if len(values) else "-"
    return f"{values.mean():.4f} ± {values.std(ddof=1) / np.sqrt(len(values)):.4f}"


def paired(a, b) -> str:
    """Mean ± standard error of the paired differences a - b (seeds where both exist)."""
    diffs = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None])
    if len(diffs) < 2:
        return "-"
    return f"{diffs.mean():+.4f} ± {diffs.std(ddof=1) / np.sqrt(len(diffs)):.4f}"


def machine() -> str:
    import torch

    return (f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the section ``key`` of RESULTS.md, leaving the others alone."""
    text = RESULTS.read_text() if RESULTS.exists() else PREAMBLE
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    section = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    text = (pattern.sub(lambda _: section, text) if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n")
    RESULTS.write_text(text)


def publish(key: str, title: str, body: str, write: bool = True) -> None:
    """Print a section and (unless told not to) write it into RESULTS.md."""
    print(body)
    if write:
        write_section(key, title, body)

"""Shared helpers: markdown tables and sections of benchmarks/RESULTS.md, one per script."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

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

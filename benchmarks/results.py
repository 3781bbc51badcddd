"""Shared helpers: markdown tables and sections of benchmarks/RESULTS.md, one per script, and
the mean ± standard error figures written in them."""

from __future__ import annotations

import argparse
import hashlib
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
within a section compare like with like. A hand-written reading follows its section between
`reading` markers: a rerun keeps it, and flags it stale when the section's numbers changed
(re-read it, then `python -m benchmarks.results --reread <section>`). The index below is
rebuilt with every section (costs: about 20 hours for all, on 2 cores, the Makefile's
`benchmark` target; per section they are not recorded yet).
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


def _generated(key: str) -> re.Pattern:
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    return re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)


def _reading(key: str) -> re.Pattern:
    """A hand-written reading of section ``key``: outside the generated text, which a rerun
    replaces, and marked with the digest of the section it read."""
    return re.compile(rf"<!-- {re.escape(key)}:reading (\w+) -->\n(.*?)"
                      rf"<!-- {re.escape(key)}:reading-end -->", re.DOTALL)


def digest(section: str) -> str:
    return hashlib.sha1(section.encode()).hexdigest()[:12]


STALE = ("**Stale:** the section above was regenerated after this reading was written; "
         "re-read it, then `python -m benchmarks.results --reread {key}`.\n\n")


INDEX = re.compile(r"<!-- index:start -->.*?<!-- index:end -->\n*", re.DOTALL)
SECTION = re.compile(r"<!-- ([\w.-]+):start -->\n## (.+?)\n(.*?)<!-- \1:end -->", re.DOTALL)


def with_index(text: str) -> str:
    """RESULTS.md with its index (each section, linked, and the command that writes it)
    rebuilt after the preamble."""
    rows = []
    for _, title, body in SECTION.findall(text):
        command = re.search(r"^Command: `(.+?)`", body, re.M)
        anchor = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        rows.append((f"[{title}](#{anchor})", f"`{command.group(1)}`" if command else "-"))
    index = ("<!-- index:start -->\n" + table(("section", "command"), rows)
             + "\n<!-- index:end -->\n\n")
    text = INDEX.sub("", text)
    first = text.find("<!-- ")
    return text[:first] + index + text[first:] if first >= 0 else text


def write_section(key: str, title: str, body: str) -> None:
    """Replace (or append) the generated text of section ``key`` in RESULTS.md, leaving the
    others and every hand-written reading alone; a reading of this section whose numbers
    changed is flagged stale."""
    text = RESULTS.read_text() if RESULTS.exists() else PREAMBLE
    section = f"<!-- {key}:start -->\n## {title}\n\n{body.strip()}\n<!-- {key}:end -->"
    pattern = _generated(key)
    text = (pattern.sub(lambda _: section, text) if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n")
    stale = STALE.format(key=key)

    def flag(reading: re.Match) -> str:
        if reading.group(1) == digest(section) or reading.group(2).startswith(stale):
            return reading.group(0)
        return reading.group(0).replace("-->\n", "-->\n" + stale, 1)
    RESULTS.write_text(with_index(_reading(key).sub(flag, text)))


def reread(key: str) -> None:
    """Mark the reading of section ``key`` as written for the section as it is now."""
    text = RESULTS.read_text()
    section = _generated(key).search(text)
    if section is None or not _reading(key).search(text):
        raise SystemExit(f"RESULTS.md has no section {key!r} with a reading")

    def signed(reading: re.Match) -> str:
        return (f"<!-- {key}:reading {digest(section.group(0))} -->\n"
                + reading.group(2).replace(STALE.format(key=key), "", 1)
                + f"<!-- {key}:reading-end -->")
    RESULTS.write_text(_reading(key).sub(signed, text))


def publish(key: str, title: str, body: str, write: bool = True) -> None:
    """Print a section and (unless told not to) write it into RESULTS.md."""
    print(body)
    if write:
        write_section(key, title, body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Sign a hand-written reading of RESULTS.md, "
                                     "or rebuild its index")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--reread", metavar="KEY",
                        help="the section whose reading was re-read against its numbers")
    action.add_argument("--index", action="store_true", help="rebuild the index at the head")
    args = parser.parse_args()
    if args.index:
        RESULTS.write_text(with_index(RESULTS.read_text()))
    else:
        reread(args.reread)

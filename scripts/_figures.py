"""Which numbers in the README come from somewhere: the figure check behind tests/test_readme.py.

Every number with a decimal point in the README's prose and tables (code blocks and inline code
are commands and settings, not figures) must be one of:

* a value in a result file (``results/*.json``, written by the benchmark scripts with the
  command, commit, machine and date that made it), at the precision the README prints it, or as
  a percentage, a ratio or a speed-up at that precision;
* a setting in a config file (``conf/**/*.yaml``);
* a published figure, cited in ``results/literature.json`` with its source.

So a figure edited by hand, or left behind by a change that reran its benchmark, fails the
suite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?![\w.]*\d)")


def prose(markdown: str) -> str:
    """The README without fenced code blocks and inline code spans."""
    without_blocks = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`]*`", "", without_blocks)


def numbers_in(text: str) -> list[str]:
    return NUMBER.findall(text)


def _values(node) -> Iterator[float]:
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        yield float(node)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _values(value)


def known_figures(repo: Path = REPO) -> set[str]:
    """Every way a recorded value may be printed: 0 to 4 decimals, as a percentage, and as
    minutes for seconds."""
    values: list[float] = []
    for path in sorted((repo / "results").glob("*.json")):
        values += list(_values(json.loads(path.read_text())))
    for path in sorted((repo / "conf").rglob("*.yaml")):
        values += list(_values(yaml.safe_load(path.read_text()) or {}))
    found: set[str] = set()
    for value in values:
        for scaled in (value, 100 * value, value / 60):
            for digits in range(5):
                found.add(f"{scaled:.{digits}f}")
    return found


def unknown_figures(readme: str, repo: Path = REPO) -> list[str]:
    """The README's decimal numbers that no result, config or citation holds."""
    known = known_figures(repo)
    return [n for n in numbers_in(prose(readme)) if n not in known]

"""The mutation score of a ``python -m mutmut run``, per module, to ``results/mutation.json``.

mutmut (configured in pyproject.toml's ``[tool.mutmut]``) keeps each mutated module's verdicts
in ``mutants/<module path>.meta``: per mutant, the exit code of the tests run against it. This
reads them with mutmut's own table of exit codes and counts, per module, the mutants the tests
killed, those that survived, those that timed out (an endless loop the tests caught by its time:
a kill, as mutmut counts it) and those no test reached. The killed share is
(killed + timeout) / (every mutant checked).

    python -m mutmut run && python scripts/mutation_score.py
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from _results import save_result  # scripts/, beside this file
from mutmut.stats import status_by_exit_code

REPO = Path(__file__).resolve().parent.parent


def module_counts(meta: Path) -> Counter:
    """Status -> number of mutants, from one ``.meta`` file."""
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    return Counter(status_by_exit_code[code] for code in exit_codes.values())


def killed_share(counts: Counter, timeouts_kill: bool = True) -> float | None:
    """Killed among the mutants checked; ``timeouts_kill``: a timed-out mutant counts as
    killed (mutmut's convention). A timeout is also what a slow test under a tight limit
    gives, so the strict share (False) is the lower bound."""
    checked = sum(n for status, n in counts.items() if status != "not checked")
    killed = counts["killed"] + (counts["timeout"] if timeouts_kill else 0)
    return killed / checked if checked else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=REPO / "mutants")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    metas = sorted(args.mutants.rglob("*.py.meta"))
    if not metas:
        raise SystemExit(f"{args.mutants}: no mutmut results (run python -m mutmut run first)")
    modules = {}
    print("| module | mutants | checked | killed | timeout | survived | no tests | killed share "
          "(timeouts as kills) | killed share (strict) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for meta in metas:
        name = meta.relative_to(args.mutants).as_posix().removesuffix(".meta")
        counts = module_counts(meta)
        share, strict = killed_share(counts), killed_share(counts, timeouts_kill=False)
        checked = sum(counts.values()) - counts["not checked"]
        modules[name] = {**dict(counts), "mutants": sum(counts.values()), "checked": checked,
                         "killed_share": share, "strict_killed_share": strict}  # fmt: skip
        shown = [f"{v:.3f}" if v is not None else "-" for v in (share, strict)]
        print(f"| {name} | {sum(counts.values())} | {checked} | {counts['killed']} | "
              f"{counts['timeout']} | {counts['survived']} | {counts['no tests']} | "
              f"{shown[0]} | {shown[1]} |")  # fmt: skip
    print(f"figures: {save_result('mutation', {'modules': modules}, args.json)}")


if __name__ == "__main__":
    main()

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


def killed_share(counts: Counter) -> float | None:
    checked = sum(n for status, n in counts.items() if status != "not checked")
    return (counts["killed"] + counts["timeout"]) / checked if checked else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=REPO / "mutants")
    parser.add_argument("--json", type=Path, default=None, help="(default: results/)")
    args = parser.parse_args()
    metas = sorted(args.mutants.rglob("*.py.meta"))
    if not metas:
        raise SystemExit(f"{args.mutants}: no mutmut results (run python -m mutmut run first)")
    modules = {}
    print("| module | mutants | killed | timeout | survived | no tests | killed share |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for meta in metas:
        name = meta.relative_to(args.mutants).as_posix().removesuffix(".meta")
        counts = module_counts(meta)
        share = killed_share(counts)
        modules[name] = {**dict(counts), "mutants": sum(counts.values()), "killed_share": share}
        shown = f"{share:.3f}" if share is not None else "-"
        print(f"| {name} | {sum(counts.values())} | {counts['killed']} | {counts['timeout']} | "
              f"{counts['survived']} | {counts['no tests']} | {shown} |")  # fmt: skip
    print(f"figures: {save_result('mutation', {'modules': modules}, args.json)}")


if __name__ == "__main__":
    main()

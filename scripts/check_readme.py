"""Check the README's figures: each has a source, and the demo's match a fresh run of it.

    python scripts/check_readme.py figures
        every decimal number in the README's prose and tables is held by a result file, a
        config or a citation (see scripts/_figures.py); exits 1 naming the others
    python scripts/check_readme.py demo outputs/generate_masks/<run>/summary.json
        the figures of "What the demo prints" (classifier mAP, mIoU with the default rule, the
        best fixed threshold's mIoU) equal the run's within --tolerance (default 0.02: training
        on a CPU is seeded but not bit-reproducible across machines and thread counts);
        exits 1 naming any that drifted

``.ci/run`` runs both after the demo; ``tests/test_readme.py`` runs them on the README and on
edited copies of it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from _figures import REPO, unknown_figures

#: the demo block's rows that are figures, and the summary.json key each one is
DEMO_ROWS = {
    r"classifier mAP \(val\)\s+([0-9.]+)": "classifier_val_map",
    r"mIoU with the \w+ rule\s+([0-9.]+)": "miou",
    r"mIoU at best fixed threshold [0-9.]+\s+([0-9.]+)": "best_threshold_miou",
}


def demo_block(readme: str) -> str:
    section = readme.split("## What the demo prints", 1)[1]
    return re.search(r"```\n(.*?)```", section, re.S).group(1)


def row_labels(table: str) -> list[str]:
    """The left column of a printed summary table (its rows are indented by two spaces and
    separated from their values by at least two)."""
    return [line.strip().split("  ")[0] for line in table.splitlines() if line.startswith("  ")]


def demo_drift(readme: str, summary: dict, tolerance: float) -> list[str]:
    """The demo block's rows that the run with ``summary`` does not print (or prints and the
    block lacks), and its figures that differ from ``summary`` by more than ``tolerance``."""
    from wsss.engine.run_result import COUNT_ROWS, summary_rows, summary_table

    block = demo_block(readme)
    drifted = []
    if "images" in summary:  # a real run's summary: its rows too
        # except the counts of trouble, printed only when not zero: whether a borderline demo
        # image ends with an empty mask differs between machines as the figures do
        counts = {label for label, _ in COUNT_ROWS.values()}
        printed, shown = (
            [row for row in row_labels(table) if row not in counts]
            for table in (summary_table(summary_rows(summary)), block)
        )
        if printed != shown:
            drifted.append(f"rows: the README shows {shown}, the demo prints {printed}")
    for pattern, key in DEMO_ROWS.items():
        found = re.search(pattern, block)
        if found is None:
            drifted.append(f"the README's demo block has no row matching {pattern!r}")
            continue
        printed, measured = float(found.group(1)), float(summary[key])
        if abs(printed - measured) > tolerance:
            drifted.append(f"{key}: the README says {printed}, the demo gave {measured:.4f}")
    return drifted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["figures", "demo"])
    parser.add_argument("summary", nargs="?", type=Path, help="the demo's summary.json")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--tolerance", type=float, default=0.02)
    args = parser.parse_args()
    readme = args.readme.read_text()
    if args.what == "figures":
        problems = [f"{n}: no result file, config or citation holds it"
                    for n in unknown_figures(readme)]  # fmt: skip
    else:
        if args.summary is None:
            raise SystemExit("demo: give the demo's summary.json")
        problems = demo_drift(readme, json.loads(args.summary.read_text()), args.tolerance)
    for line in problems:
        print(line)
    print(f"{args.what}: {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

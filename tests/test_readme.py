"""The README cannot drift: every decimal figure in it comes from a result file under
``results/`` (written by the benchmark that measured it), a config or a citation, and the demo's
figures match what the demo prints (``.ci/run`` checks a fresh run's ``summary.json``). Each
check is also run on an edited copy, to show it fails when a figure is changed by hand."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from _figures import known_figures, numbers_in, prose, unknown_figures  # noqa: E402
from check_readme import DEMO_ROWS, demo_block, demo_drift  # noqa: E402

README = (REPO / "README.md").read_text()


def test_every_figure_in_the_readme_comes_from_a_result_file_a_config_or_a_citation():
    assert unknown_figures(README) == []


def test_a_figure_edited_by_hand_is_caught():
    figures = numbers_in(prose(README))
    assert len(figures) > 50, "the README's figures are read (code is not)"
    known, before = known_figures(), set(unknown_figures(README))
    tried = 0
    for figure in sorted(set(figures), key=figures.index):
        edited_figure = figure[:-1] + str((int(figure[-1]) + 1) % 10)
        edited = README.replace(f" {figure} ", f" {edited_figure} ", 1)
        if edited == README or edited_figure in known | before:
            continue  # not a standalone word, or the edit lands on another recorded value
        assert set(unknown_figures(edited)) - before == {edited_figure}, figure
        tried += 1
    assert tried > 20


def _printed_summary() -> dict:
    """The summary.json of a demo run that printed the README's block."""
    block = demo_block(README)
    figures = {key: float(re.search(pattern, block).group(1)) for pattern, key in DEMO_ROWS.items()}
    images, annotations = re.search(r"images labelled\s+(\d+) \((\d+) COCO", block).groups()
    summary = {
        "images": int(images),
        "coco_annotations": int(annotations),
        "checkpoint": re.search(r"classifier\s+(\S+) \(trained in this run\)", block).group(1),
        "trained_in_this_run": True,
        "mask_rule": re.search(r"mIoU with the (\w+) rule", block).group(1),
        "bg_threshold": 0.15,
        "best_threshold": float(re.search(r"best fixed threshold ([0-9.]+)", block).group(1)),
        "uncertain_pixel_fraction": 0.0,
        "seconds": 300.0,
        "outputs": "outputs/generate_masks/<time>",
        "review_page": "outputs/generate_masks/<time>/report.html",
        **figures,
    }
    empty = re.search(r"labelled images with an empty mask\s+(\d+)", block)
    if empty:  # printed only when there are some
        summary["empty_masks"] = int(empty.group(1))
    return summary


def test_the_demo_check_passes_the_printed_figures_and_catches_a_drift():
    summary = _printed_summary()
    assert demo_drift(README, summary, tolerance=0.02) == []
    drifted = dict(summary, miou=summary["miou"] + 0.03)
    assert [line.split(":")[0] for line in demo_drift(README, drifted, 0.02)] == ["miou"]
    # a row the run prints and the README lacks (or the reverse)
    one_more = dict(summary, labels_predicted_for=3)
    assert [line.split(":")[0] for line in demo_drift(README, one_more, 0.02)] == ["rows"]
    # but not a count of trouble, printed only when not zero: a borderline demo image ends with
    # an empty mask on one machine and not on another (CI's run of 2026-12-08 printed no row)
    for counts in ({"empty_masks": 0}, {"empty_masks": 2, "crf_failures": 1}):
        assert demo_drift(README, {**summary, **counts}, 0.02) == []
    edited = README.replace(f"{summary['classifier_val_map']:.4f}",
                            f"{summary['classifier_val_map'] - 0.05:.4f}", 1)  # fmt: skip
    problems = demo_drift(edited, summary, 0.02)
    assert len(problems) == 1 and problems[0].startswith("classifier_val_map")


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "results").glob("*.json")))
def test_every_result_file_says_how_it_was_made(name):
    """Named by its benchmark, or a kept variant of it (``bench_voc_levers``: bench_voc.py's
    levers, written with ``--json``)."""
    record = json.loads((REPO / "results" / f"{name}.json").read_text())
    benchmark = record["benchmark"]
    assert name == benchmark or name.startswith(f"{benchmark}_")
    assert record["command"] and "figures" in record
    if not record["command"].startswith("none"):  # citations have no command
        assert record["commit"] and record["machine"]["cores"] >= 1 and record["date"]


def test_the_quality_weights_are_the_fit_s_saved_output():
    from wsss.masks.quality import IMAGE_WEIGHTS, WEIGHTS

    fitted = json.loads((REPO / "results/fit_quality.json").read_text())["figures"]
    assert pytest.approx(tuple(round(w, 4) for w in fitted["weights"]), abs=1e-9) == WEIGHTS
    image = tuple(round(w, 4) for w in fitted["image_weights"])
    assert pytest.approx(image, abs=1e-9) == IMAGE_WEIGHTS


@pytest.mark.parametrize("strict", ["1", ""])
def test_a_skip_not_on_the_allow_list_fails_a_strict_run(tmp_path, strict):
    """.ci/run sets WSSS_STRICT_SKIPS=1: a test that skips there (a dependency that did not
    install) fails the run instead of passing unnoticed."""
    import os
    import subprocess

    (tmp_path / "conftest.py").write_text(  # the project's hooks, loaded under another name
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location("
        f"'wsss_conftest', {str(REPO / 'tests/conftest.py')!r})\n"
        "project = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(project)\n"
        "pytest_runtest_logreport = project.pytest_runtest_logreport\n"
        "pytest_sessionfinish = project.pytest_sessionfinish\n"
    )
    (tmp_path / "test_one.py").write_text(
        "import pytest\n\ndef test_runs():\n    pass\n\n"
        "def test_skips():\n    pytest.skip('an optional dependency is missing')\n"
    )
    env = dict(os.environ, WSSS_STRICT_SKIPS=strict)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    if strict:
        assert proc.returncode == 1 and "test_one.py::test_skips" in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 0 and "1 passed, 1 skipped" in proc.stdout, proc.stdout

"""The full demo and its explain report, as a user runs them (about 10 minutes on 2 cores).

Checks what the synthetic dataset was built for: the plain CAM baseline lands between 0.40 and
0.70 mIoU on the eval split at the default threshold, and the class built with a characteristic
background (boats on water) is the one the explain report flags.
"""

import json

import pytest
from commands import run


@pytest.mark.slow
def test_demo_cam_baseline_lands_in_the_calibrated_band(tmp_path):
    out = tmp_path / "run"
    run(
        "wsss.generate_masks",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
        cache=tmp_path / "cache",
        timeout=1800,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_in_this_run"] and summary["images"] == 200
    assert 0.40 <= summary["miou"] <= 0.70
    assert summary["classifier_val_map"] > 0.8
    # Otsu's per-image rule needs no ground truth; the best single threshold, chosen on ground
    # truth, is the papers' protocol. Per-image Otsu may beat every fixed threshold (the demo
    # once measured 0.6080 against 0.6072), but it must not be far from the oracle's choice.
    assert 0.05 <= summary["best_threshold"] <= 0.95
    assert abs(summary["best_threshold_miou"] - summary["miou"]) < 0.05


@pytest.mark.slow
def test_explain_flags_the_class_built_with_a_characteristic_background(tmp_path):
    """Boats nearly always sit on water in the synthetic data. The demo classifier learns that
    shortcut (its boat probability largely survives removing the boat), and the report must say
    so, naming boat and no other class."""
    out = tmp_path / "explain"
    run(
        "wsss.explain", f"hydra.run.dir={out}", cwd=tmp_path, cache=tmp_path / "cache", timeout=1800
    )
    summary = json.loads((out / "explain.json").read_text())
    assert summary["likely_shortcuts"] == ["boat"]
    reliance = {k: v["context_reliance"] for k, v in summary["per_class"].items()}
    assert max(reliance, key=reliance.get) == "boat"
    assert "boat" in (out / "report.html").read_text().split("Likely shortcuts")[1]

"""``report.html`` of ``explain``: what a classifier looks at, as one self-contained page (the
flagged classes' worst examples embedded, the per-image figures linked)."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image


def _png_data_uri(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


#: (per-class statistic, column title) of the table, in order
COLUMNS = [
    ("images", "images"),
    ("energy_inside", "energy in object"),
    ("energy_near", "energy near object"),
    ("pointing_game", "pointing game"),
    ("map_iou", "map IoU"),
    ("p_with_object", "p"),
    ("p_without_object", "p with the object removed"),
    ("p_absent", "p on images without it"),
    ("context_reliance", "context reliance"),
    ("average_drop", "average drop %"),
    ("increase_in_confidence", "increase in confidence %"),
    ("deletion_auc", "deletion AUC"),
    ("insertion_auc", "insertion AUC"),
]


def render_explain_report(summary: dict, worst: dict, figures: list[tuple[str, str]]) -> str:
    """A self-contained HTML page: summary table, flagged classes with their worst examples
    (embedded), and a gallery of per-image figures (linked, relative to the report)."""
    esc = html.escape
    present = [(k, t) for k, t in COLUMNS if any(k in s for s in summary["per_class"].values())]

    def cells(stats: dict) -> str:
        return "".join(f"<td>{'' if stats.get(k) is None else stats[k]}</td>" for k, _ in present)

    rows = []
    for name, stats in summary["per_class"].items():
        mark = ' class="flag"' if name in summary["likely_shortcuts"] else ""
        rows.append(f"<tr{mark}><th>{esc(name)}</th>{cells(stats)}</tr>")
    rows.append(f"<tr class='overall'><th>all</th>{cells(summary['overall'])}</tr>")
    header = "".join(f"<th>{esc(t)}</th>" for _, t in present)
    verdict = _verdict(summary, worst)
    gallery = "".join(
        f"<figure><img src='{esc(path)}'><figcaption>{esc(image_id)}</figcaption></figure>"
        for image_id, path in figures
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>wsss explain report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.flag {{ background: #fdd; }} tr.overall {{ font-weight: bold; }}
.row, .gallery {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; }} figcaption {{ font-size: small; }}
</style></head><body>
<h1>What the classifier looks at</h1>
<p>Method: {esc(summary["method"])}; {summary["images"]} images.</p>
<h2>Per class</h2>
<table><tr><th>class</th>{header}</tr>{"".join(rows)}</table>
<p>Energy: share of the map inside (or near) the objects. Pointing game: the map's peak is on
the object. p with the object removed: the class probability once the object is filled in from
its surroundings; context reliance: the share of the class's evidence (above its level on images
without it) that survives the removal. A class recognised by its context keeps much of it.
Average drop and increase in confidence: the class probability when only the map's
region of the image is kept. Deletion (lower is better) and insertion (higher is better): the
probability as the most salient pixels are removed or added.</p>
<h2>Likely shortcuts</h2>
{verdict}
<h2>Images</h2>
<div class="gallery">{gallery}</div>
</body></html>
"""


def _verdict(summary: dict, worst: dict) -> str:
    """The "Likely shortcuts" section: the rule, and each flagged class with its worst examples."""
    esc = html.escape
    flagged_html = []
    for name in summary["likely_shortcuts"]:
        pictures = "".join(
            f"<figure><img src='{_png_data_uri(p)}'><figcaption>{esc(i)}: "
            f"{e:.2f} near the object</figcaption></figure>"
            for e, i, p in worst.get(name, [])
        )
        why = "; ".join(summary["shortcut_reasons"][name])
        flagged_html.append(
            f"<h3>{esc(name)}</h3><p>The classifier probably relies on the surroundings of "
            f"this class's objects: {esc(why)}. Its worst-localised examples:</p>"
            f"<div class='row'>{pictures}</div>"
        )
    if summary["shortcut_rule"] == "needs ground-truth masks":
        return "<p>No ground-truth masks: localisation and shortcut checks were skipped.</p>"
    if not flagged_html:
        return (
            "<p>No class was flagged: every class keeps most of its map energy near its "
            f"objects ({esc(summary['shortcut_rule'])}).</p>"
        )
    return f"<p>Flagged when {esc(summary['shortcut_rule'])}.</p>" + "".join(flagged_html)

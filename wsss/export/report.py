"""``report.html``: the review page of a run folder, readable offline.

A summary table and the threshold plot at the top, then a gallery of the images with their masks,
sorted worst-first by the quality estimate (:mod:`wsss.masks.quality`), filterable by class and
paged (thumbnails load lazily), so a run of 10,000 images stays usable. Each image shows its
labels, the classifier's probability and the estimate of each class. Masks can be marked as
rejected (a whole image, or one class of it); the page keeps the marks in the browser and saves
them as ``rejected.json``, which ``wsss.export``, ``wsss.train_segmentation`` and the COCO export
accept (:func:`read_rejections`). No server: the data is a script beside the page
(``report_data.js``), which browsers load from ``file://``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wsss.errors import DataError
from wsss.io import write_text

REJECTIONS_FORMAT = "wsss-rejections"


def write_report(
    root: Path,
    items: Sequence[dict],
    rows: Sequence[tuple[str, str]],
    plot: str | None = None,
) -> Path:
    """Write ``report.html`` and ``report_data.js`` under ``root``. ``items``: one dict per image
    (``id``, ``file``, ``thumb``, ``labels`` [names], ``classes`` {name: {"estimate", "p"}},
    ``quality``); ``rows``: the summary table; ``plot``: the threshold plot, relative to
    ``root``."""
    data = {"run": root.name, "items": list(items)}
    write_text(root / "report_data.js", "window.WSSS_REPORT = " + json.dumps(data) + ";\n")
    summary = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    figure = f'<img class="plot" src="{html.escape(plot)}" alt="threshold sweep">' if plot else ""
    page = PAGE.replace("{{SUMMARY}}", summary).replace("{{PLOT}}", figure)
    write_text(root / "report.html", page.replace("{{RUN}}", html.escape(root.name)))
    return root / "report.html"


@dataclass
class Rejections:
    """Masks a reviewer rejected: whole images, and (image, class) annotations; ``run``: the
    name of the run folder whose review page saved them (None: not said)."""

    images: set[str] = field(default_factory=set)
    annotations: set[tuple[str, str]] = field(default_factory=set)
    run: str | None = None

    def rejects(self, image_id: str, class_name: str | None = None) -> bool:
        """Whether the image, or (with ``class_name``) that class's mask of it, is rejected."""
        return image_id in self.images or (image_id, class_name) in self.annotations


def read_rejections(path: str | Path) -> Rejections:
    """A ``rejected.json`` saved by the review page."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: rejections file not found") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a rejections file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != REJECTIONS_FORMAT:
        raise DataError(f"{path}: not a rejections file saved by a wsss report page")
    images, annotations = data.get("images", []), data.get("annotations", [])
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise DataError(f"{path}: 'images' and 'annotations' must be lists")
    try:
        run = data.get("run")
        return Rejections(
            set(map(str, images)),
            {(str(a["image"]), str(a["class"])) for a in annotations},
            None if run is None else str(run),
        )
    except (TypeError, KeyError) as exc:
        raise DataError(f"{path}: malformed rejections ({exc})") from exc


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>wsss review: {{RUN}}</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.summary { border-collapse: collapse; margin-bottom: 1em; }
table.summary th, table.summary td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
.plot { max-width: 420px; display: block; margin: 0.5em 0 1em; }
.bar { position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ddd;
       display: flex; gap: 1em; align-items: center; flex-wrap: wrap; z-index: 1; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; margin-top: 1em; }
.card { width: 260px; border: 1px solid #ccc; border-radius: 4px; padding: 4px; font-size: 12px; }
.card.rejected { opacity: 0.45; border-color: #c00; }
.card img { width: 256px; height: auto; display: block; min-height: 40px; background: #eee; }
.card .q { font-weight: bold; }
.low { color: #b00; } .mid { color: #a60; } .high { color: #070; }
.card label { display: block; }
</style></head><body>
<h1>Pseudo-masks of {{RUN}}</h1>
<table class="summary">{{SUMMARY}}</table>
{{PLOT}}
<p>Images are sorted by the estimated quality of their masks, worst first (an estimate of the
masks' IoU made without ground truth). Mark the masks to leave out and save the list: pass it to
<code>python -m wsss.export predictions=&lt;run&gt; rejected=rejected.json</code> or
<code>python -m wsss.train_segmentation ... rejected=rejected.json</code>.</p>
<div class="bar">
  <label>class <select id="class"><option value="">all</option></select></label>
  <label>sort <select id="sort"><option value="worst">worst first</option>
    <option value="best">best first</option><option value="name">by name</option></select></label>
  <span id="pager"><button id="prev">&lt;</button> page <span id="page"></span>
    <button id="next">&gt;</button></span>
  <span id="count"></span>
  <button id="save">save rejected.json</button> <span id="marked"></span>
</div>
<div class="gallery" id="gallery"></div>
<script src="report_data.js"></script>
<script>
const data = window.WSSS_REPORT, PAGE = 60, key = "wsss-rejections:" + data.run;
const saved = JSON.parse(localStorage.getItem(key) || '{"images": [], "annotations": []}');
const rejected = {images: new Set(saved.images), annotations: new Set(saved.annotations)};
let page = 0;
const esc = s => String(s).replace(/[&<>"']/g, c => "&#" + c.charCodeAt(0) + ";");
// a relative file path as a URL ('#' and '?' in a file name would start a fragment or a query)
const url = path => path.split("/").map(encodeURIComponent).join("/");
const tone = q => q < 0.35 ? "low" : q < 0.6 ? "mid" : "high";
const names = [...new Set(data.items.flatMap(i => i.labels))].sort();
for (const n of names) document.getElementById("class").add(new Option(n, n));
function keep() {
  localStorage.setItem(key, JSON.stringify({images: [...rejected.images],
                                            annotations: [...rejected.annotations]}));
  document.getElementById("marked").textContent =
    `${rejected.images.size} images, ${rejected.annotations.size} masks marked`;
}
function shown() {
  const cls = document.getElementById("class").value, sort = document.getElementById("sort").value;
  const items = data.items.filter(i => !cls || i.labels.includes(cls));
  if (sort === "name") items.sort((a, b) => a.id < b.id ? -1 : 1);
  else items.sort((a, b) => sort === "worst" ? a.quality - b.quality : b.quality - a.quality);
  return items;
}
function render() {
  const items = shown(), pages = Math.max(1, Math.ceil(items.length / PAGE));
  page = Math.min(page, pages - 1);
  document.getElementById("page").textContent = `${page + 1} / ${pages}`;
  document.getElementById("count").textContent = `${items.length} images`;
  const gallery = document.getElementById("gallery");
  gallery.innerHTML = items.slice(page * PAGE, (page + 1) * PAGE).map(item => {
    const rows = Object.entries(item.classes).map(([name, c]) => {
      const on = rejected.annotations.has(item.id + "\\t" + name) ? "checked" : "";
      return `<label><input type="checkbox" class="reject-class" data-class="${esc(name)}" ${on}>
        ${esc(name)}: p ${c.p.toFixed(2)}, quality <span class="${tone(c.estimate)}">
        ${c.estimate.toFixed(2)}</span></label>`;
    }).join("");
    const out = rejected.images.has(item.id);
    return `<div class="card${out ? " rejected" : ""}" data-id="${esc(item.id)}">
      <img loading="lazy" src="${esc(url(item.thumb))}" alt="${esc(item.id)}">
      <div>${esc(item.file)}</div>
      <div class="q ${tone(item.quality)}">quality ${item.quality.toFixed(2)}</div>
      ${rows}
      <label><input type="checkbox" class="reject-image" ${out ? "checked" : ""}>
        reject the whole image</label></div>`;
  }).join("");
}
document.getElementById("gallery").addEventListener("change", event => {
  const box = event.target, card = box.closest(".card");
  if (box.classList.contains("reject-image")) {
    box.checked ? rejected.images.add(card.dataset.id) : rejected.images.delete(card.dataset.id);
    card.classList.toggle("rejected", box.checked);
  } else if (box.classList.contains("reject-class")) {
    const id = card.dataset.id + "\\t" + box.dataset.class;
    box.checked ? rejected.annotations.add(id) : rejected.annotations.delete(id);
  }
  keep();
});
for (const id of ["class", "sort"])
  document.getElementById(id).addEventListener("change", () => { page = 0; render(); });
document.getElementById("prev").onclick = () => { page = Math.max(0, page - 1); render(); };
document.getElementById("next").onclick = () => { page += 1; render(); };
document.getElementById("save").onclick = () => {
  const body = {format: "wsss-rejections", run: data.run, images: [...rejected.images].sort(),
    annotations: [...rejected.annotations].sort().map(k => {
      const [image, cls] = k.split("\\t"); return {image: image, class: cls}; })};
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([JSON.stringify(body, null, 2)],
                                           {type: "application/json"}));
  link.download = "rejected.json";
  document.body.appendChild(link); link.click(); link.remove();
};
keep(); render();
</script></body></html>
"""

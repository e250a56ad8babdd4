"""The experiment's joint Pareto front as one self-contained HTML page (`front.html`).

Written by hand, not with a plotting library: the page is a few hundred lines of SVG and script
with no external file (no network at run time, and nothing for MLflow's sandboxed HTML view to
fetch), a few kilobytes per refresh where Plotly or Bokeh inline a megabyte or more of
JavaScript into every copy.

Hover a point: the trial's job, search, parameters and scores. Click it: its run's page in the
MLflow UI. MLflow shows HTML artifacts in a sandboxed frame that may not navigate, so there a
click shows the run's link instead; the page opened on its own (the copy `exceedance-pick` writes
next to `picked.yaml`) follows it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass

import numpy as np

WIDTH, HEIGHT, PAD = 640, 380, 48


@dataclass
class Group:
    """Comparable trials (one data set, quality metric and limit) and their rows."""

    title: str
    quality_name: str
    rows: list[dict]  # every trial: "label", "run_id", "pareto", "quality", "exceedance_rate", details


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if not np.isfinite(lo) or hi - lo < 1e-12:
        lo, hi = (lo - 0.5, lo + 0.5) if np.isfinite(lo) else (0.0, 1.0)
    margin = 0.05 * (hi - lo)
    return low + (values - lo + margin) / (hi - lo + 2 * margin) * (high - low)


def _svg(group: Group, index: int) -> str:
    rows = [r for r in group.rows if np.isfinite(r["quality"]) and np.isfinite(r["exceedance_rate"])]
    if not rows:
        return "<p>No finished trial with scores.</p>"
    rates, qualities = np.array([r["exceedance_rate"] for r in rows]), np.array([r["quality"] for r in rows])
    x, y = _scale(rates, PAD, WIDTH - 12), _scale(qualities, HEIGHT - PAD, 12)
    front = sorted((i for i, r in enumerate(rows) if r["pareto"]), key=lambda i: x[i])
    parts = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{html.escape(group.title)}">',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 8}" y2="{HEIGHT - PAD}" class="axis"/>',
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{HEIGHT - PAD}" class="axis"/>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" class="label">exceedance rate (validation, on the limit)</text>',
        f'<text x="14" y="{HEIGHT / 2}" class="label" transform="rotate(-90 14 {HEIGHT / 2})">'
        f"{html.escape(group.quality_name)}</text>",
    ]
    if front:
        path = " ".join(f"{x[i]:.1f},{y[i]:.1f}" for i in front)
        parts.append(f'<polyline points="{path}" class="front"/>')
    for i, row in enumerate(rows):
        cls = "point on-front" if row["pareto"] else "point"
        parts.append(
            f'<circle cx="{x[i]:.1f}" cy="{y[i]:.1f}" r="{6 if row["pareto"] else 4}" class="{cls}" '
            f'data-group="{index}" data-run="{html.escape(row["run_id"])}"/>'
        )
        if row["pareto"]:
            parts.append(f'<text x="{x[i] + 7:.1f}" y="{y[i] - 6:.1f}" class="id">{html.escape(row["label"])}</text>')
    for at in (rates.argmin(), rates.argmax()):  # the axes' ranges, at the points that set them
        parts.append(f'<text x="{x[at]:.1f}" y="{HEIGHT - PAD + 14}" class="tick">{rates[at]:.3g}</text>')
    for at in (qualities.argmin(), qualities.argmax()):
        parts.append(f'<text x="{PAD - 4}" y="{y[at]:.1f}" class="tick" text-anchor="end">{qualities[at]:.3g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(group: Group, columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["trial", *columns])
    body = []
    for row in (r for r in group.rows if r["pareto"]):
        cells = "".join(f"<td>{html.escape(cell(row.get(c, '')))}</td>" for c in columns)
        body.append(
            f'<tr><td><a class="run" data-run="{html.escape(row["run_id"])}" href="#">'
            f"{html.escape(row['label'])}</a></td>{cells}</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cell(value) -> str:
    """A number in 4 significant digits (params arrive from MLflow as strings); anything else as is."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def render(title: str, groups: list[Group], columns: list[str], experiment_id: str, ui_url: str) -> str:
    """The page: per group, the scatter of every trial (front joined and labelled) and the front
    as a table. `ui_url` is where the MLflow UI is expected when the page is opened on its own."""
    runs = {row["run_id"]: {k: cell(v) for k, v in row.items()} for g in groups for row in g.rows}
    data = json.dumps({"runs": runs, "experiment": experiment_id, "ui": ui_url.rstrip("/")}).replace("</", "<\\/")
    sections = "\n".join(
        f"<section><h2>{html.escape(g.title)}</h2>{_svg(g, i)}{_table(g, columns)}</section>"
        for i, g in enumerate(groups)
    )
    return PAGE.format(title=html.escape(title), sections=sections, data=data)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px sans-serif; margin: 12px; color: #222; }}
h1 {{ font-size: 16px; }} h2 {{ font-size: 14px; margin: 14px 0 4px; }}
.axis {{ stroke: #888; }} .label {{ font-size: 11px; text-anchor: middle; fill: #444; }}
.tick {{ font-size: 10px; fill: #666; }} .id {{ font-size: 10px; fill: #333; }}
.front {{ fill: none; stroke: #222; stroke-width: 1; }}
.point {{ fill: #4c78a8; fill-opacity: 0.6; cursor: pointer; }}
.on-front {{ fill: #f58518; fill-opacity: 0.9; stroke: #222; }}
.point.selected {{ stroke: #d62728; stroke-width: 3; }}
table {{ border-collapse: collapse; margin-top: 6px; }} td, th {{ border: 1px solid #ddd; padding: 2px 6px; }}
#tip {{ position: fixed; display: none; background: #fff; border: 1px solid #999; padding: 6px;
  font-size: 12px; pointer-events: none; box-shadow: 2px 2px 4px #0002; white-space: pre; }}
#chosen {{ margin: 8px 0; padding: 6px; background: #f4f4f4; min-height: 1.2em; }}
</style></head><body>
<h1>{title}</h1>
<p>Hover a point for its trial; click it to open its run.</p>
<div id="chosen"></div>
{sections}
<div id="tip"></div>
<script>
const DATA = {data};
const tip = document.getElementById("tip"), chosen = document.getElementById("chosen");
function uiBase() {{
  // In MLflow's artifact view the page is a blob: URL of the UI's own origin.
  const here = location.href.startsWith("blob:") ? location.href.slice(5) : location.href;
  return here.startsWith("http") ? new URL(here).origin : DATA.ui;
}}
function runUrl(run) {{
  return uiBase() + "/#/experiments/" + DATA.experiment + "/runs/" + run + "?workflowType=machine_learning";
}}
function describe(run) {{
  const r = DATA.runs[run];
  return Object.entries(r).filter(([k]) => k !== "pareto").map(([k, v]) => k + ": " + v).join("\\n");
}}
function open(run) {{
  const url = runUrl(run);
  document.querySelectorAll(".selected").forEach(e => e.classList.remove("selected"));
  document.querySelectorAll('[data-run="' + run + '"]').forEach(e => e.classList.add("selected"));
  chosen.innerHTML = "";
  const link = document.createElement("a");
  link.href = url; link.target = "_top"; link.textContent = DATA.runs[run].label + ": " + url;
  chosen.append("Run ", link);
  if (window.top === window) {{ location.href = url; }}
  else {{ chosen.append(" (MLflow's artifact view keeps links from opening: copy it)"); }}
}}
document.querySelectorAll("[data-run]").forEach(e => {{
  e.addEventListener("click", ev => {{ ev.preventDefault(); open(e.dataset.run); }});
  if (e.tagName !== "circle") return;
  e.addEventListener("mousemove", ev => {{
    tip.textContent = describe(e.dataset.run); tip.style.display = "block";
    tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  }});
  e.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}});
</script></body></html>
"""

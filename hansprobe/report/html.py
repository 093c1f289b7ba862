"""report.html: one self-contained file that works offline. plotly.js is embedded once in the head;
each figure is a `plotly.io.to_html` fragment without the library. Checkpoints sit side by side,
one column each; the verdicts come first, then every analysis's figures with a caption saying
what to look for, then configuration, training curve and provenance."""
from __future__ import annotations

import html
import json

from hansprobe.error_rates import rate_text

TRAINING_CAPTION = {"training_curve": "Training loss and held-out accuracy logged while training (metrics.jsonl)."}


def sections() -> list[tuple[str, str]]:
    """(analysis key in the report, heading): every registered analysis, then the training curve."""
    from hansprobe.measurements import registered

    return [(spec.name, spec.title) for spec in registered()] + [("training", "Training curve")]


def captions() -> dict[str, str]:
    """Figure name -> what to look for, from every registered analysis."""
    from hansprobe.measurements import registered

    out = dict(TRAINING_CAPTION)
    for spec in registered():
        out.update(spec.captions)
    return out


MIN_CELL = 480  # px: no plot is drawn narrower than this (or the whole width of a narrower screen)
# Measures the drawn page, for the rendering test and for anyone debugging a layout: the narrowest
# plot, overlaps inside any figure between its plot areas, legend and colorbars, and whether the
# page is wider than the window (it should scroll only inside the tables).
LAYOUT_SCRIPT = """<script>
(function(){
function box(e){var r=e.getBoundingClientRect();return {l:r.left,t:r.top,r:r.right,b:r.bottom};}
function hit(a,b){return Math.max(0,Math.min(a.r,b.r)-Math.max(a.l,b.l))*Math.max(0,Math.min(a.b,b.b)-Math.max(a.t,b.t))>4;}
var divs=document.querySelectorAll('.plotly-graph-div'),minw=1e9,over=[];
for(var i=0;i<divs.length;i++){var d=divs[i];minw=Math.min(minw,d.getBoundingClientRect().width);
 var parts=[];d.querySelectorAll('.nsewdrag').forEach(function(e){parts.push(['plot',box(e)]);});
 d.querySelectorAll('.legend').forEach(function(e){parts.push(['legend',box(e)]);});
 d.querySelectorAll('.colorbar').forEach(function(e){parts.push(['colorbar',box(e)]);});
 d.querySelectorAll('.gtitle').forEach(function(e){parts.push(['title',box(e)]);});
 for(var a=0;a<parts.length;a++)for(var b=a+1;b<parts.length;b++){
  if(parts[a][0]==='plot'&&parts[b][0]==='plot')continue;
  if(hit(parts[a][1],parts[b][1]))over.push(d.id+':'+parts[a][0]+'/'+parts[b][0]);}
 var cell=d.closest('.cell');if(cell){var c=box(cell),f=box(d);if(f.r>c.r+1)over.push(d.id+':wider than its cell');}}
var h=document.documentElement;h.setAttribute('data-min-plot-width',String(Math.round(divs.length?minw:0)));
var vmax=0;document.querySelectorAll('table.verdicts td').forEach(function(td){vmax=Math.max(vmax,td.innerText.trim().length);});
h.setAttribute('data-verdict-cell-chars',String(vmax));
h.setAttribute('data-overlaps',String(over.length));h.setAttribute('data-overlap-list',over.slice(0,10).join(' '));
h.setAttribute('data-viewport-width',String(window.innerWidth));h.setAttribute('data-page-overflow',String(Math.max(0,document.documentElement.scrollWidth-window.innerWidth)));
})();
</script>"""
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em;color:#222;max-width:none}
h1{font-size:1.5em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}h3{margin-top:1.2em}
table{border-collapse:collapse;margin:0.6em 0}td,th{border:1px solid #ccc;padding:0.4em 0.6em;vertical-align:top;text-align:left}
th{background:#f4f4f4}.ans{font-weight:bold;padding:0.1em 0.5em;border-radius:0.3em;display:inline-block}
.yes{background:#dbeafe;color:#1e3a8a}.no{background:#e5e7eb;color:#374151}.inconclusive{background:#fdf6b2;color:#723b13}
.na{background:#eee;color:#555}.evidence{font-size:0.88em;margin:0.3em 0 0;font-weight:normal}.caption{color:#444;font-size:0.92em;max-width:70em}
.pending{background:#fdf6b2;padding:0.5em;border-radius:0.3em}.row{display:grid;gap:0.8em;grid-template-columns:repeat(auto-fill,minmax(min(100%,480px),1fr))}
@media (max-width:600px){body{margin:0.4em}h1{font-size:1.2em}}
table.verdicts td,table.verdicts th{min-width:14em}.figtitle{font-size:0.9em;font-weight:600;padding:0.3em 0.4em 0}.scroll{overflow-x:auto;max-width:100%}.cell{min-width:0;border:1px solid #eee}.skip{color:#777;font-style:italic;padding:1em}
.short{display:block;font-size:0.9em;margin-top:0.25em}details{font-size:0.85em;margin-top:0.3em}summary{cursor:pointer;color:#1e3a8a}
.colhead{font-weight:bold;text-align:center}tr.lead th,tr.lead td{border-top:3px solid #1e3a8a;border-bottom:3px solid #1e3a8a}code{background:#f4f4f4;padding:0 0.2em}
"""
# Lets a headless browser (and a reader) see that every figure drew and that no script failed.
STATUS_SCRIPT = """<script>
window.hansprobeErrors=[];
window.addEventListener('error',function(e){window.hansprobeErrors.push(String(e.message));
document.documentElement.setAttribute('data-errors',String(window.hansprobeErrors.length));});
</script>"""
DONE_SCRIPT = """<script>
var hpDivs=document.querySelectorAll('.plotly-graph-div'),hpDrawn=0;
for(var i=0;i<hpDivs.length;i++){if(hpDivs[i].querySelector('.main-svg'))hpDrawn++;}
document.documentElement.setAttribute('data-figures',String(hpDivs.length));
document.documentElement.setAttribute('data-figures-drawn',String(hpDrawn));
document.documentElement.setAttribute('data-errors',String(window.hansprobeErrors.length));
</script>"""
ANSWER_CLASS = {"yes": "yes", "no": "no", "inconclusive": "inconclusive", "not applicable": "na", "not learned": "na",
                "before the answer": "yes", "at the answer position": "yes"}


def _e(x) -> str:
    return html.escape(str(x))


def _figure_html(fig, div_id: str) -> str:
    """One figure laid out for a cell of at least MIN_CELL px: the title as HTML above the plot (it
    wraps instead of being cut), the legend below the plot area, each colorbar beside its own subplot,
    the height by the number of stacked subplots. Laid out on the figure's JSON (a copy: the
    analysis's figure stays as it was), which the analysis validated when it built the figure;
    copying and re-validating the figure object took most of the page's drawing time."""
    import plotly.io as pio

    if not hasattr(fig, "to_plotly_json"):  # a figure given as a dict: validated here, once
        import plotly.graph_objects as go

        fig = go.Figure(fig)
    d = fig.to_plotly_json()  # {"data": [...], "layout": {...}}, deep-copied by plotly
    data, layout = d["data"], d["layout"]
    title = (layout.pop("title", None) or {}).get("text") or ""
    layout["title"] = {}  # drawn above the plot instead
    rows = len([k for k in layout if k.startswith("yaxis")]) or 1
    legend = any(t.get("showlegend") is not False and t.get("name") for t in data)
    bottom = 60 + (70 if legend else 0)
    layout.update(height=330 * rows + bottom, autosize=True,
                  margin={**layout.get("margin", {}), "l": 55, "r": 20, "t": 40, "b": bottom},
                  legend={**layout.get("legend", {}), "orientation": "h", "x": 0, "xanchor": "left",
                          "y": -58 / (330 * rows - 40), "yanchor": "top"},
                  font={**layout.get("font", {}), "size": 11})
    for trace in data:  # a colorbar beside its own subplot, as long as that subplot is high
        if trace.get("type") in ("heatmap", "contour") and trace.get("showscale") is not False:
            (_, x1) = layout.get("xaxis" + (trace.get("xaxis") or "x")[1:], {}).get("domain") or (0, 1)
            (y0, y1) = layout.get("yaxis" + (trace.get("yaxis") or "y")[1:], {}).get("domain") or (0, 1)
            trace["colorbar"] = {**trace.get("colorbar", {}), "x": min(1.0, x1) + 0.01, "xanchor": "left",
                                 "y": (y0 + y1) / 2, "yanchor": "middle", "len": y1 - y0, "thickness": 12}
            layout["margin"]["r"] = 80
    body = pio.to_html(d, full_html=False, include_plotlyjs=False, div_id=div_id, validate=False,
                       config={"displaylogo": False, "responsive": True})
    return (f"<div class='figtitle'>{_e(title)}</div>" if title else "") + body


def _verdict_table(doc: dict) -> str:
    cks = doc["checkpoints"]
    out = ["<table class='verdicts'><tr><th>question</th>" + "".join(f"<th>{_e(c['name'])}</th>" for c in cks) + "</tr>"]
    for key, text in doc["questions"].items():
        cells = []
        for c in cks:
            v = c["verdicts"][key]
            summary = v.get("summary") or ""
            r = v.get("error_rate")
            rate = (f"<details><summary>error {100 * r['rate']:.1f}%</summary><p class='evidence'>"
                    f"{_e(rate_text(r, v['answer']))}</p></details>" if r else "")  # the rate in view, its source a click away
            cells.append(f"<td><span class='ans {ANSWER_CLASS.get(v['answer'], 'na')}'>{_e(v['answer'])}</span>"
                         f"<span class='short'>{_e(summary)}</span>{rate}"
                         f"<details><summary>evidence</summary><p class='evidence'>{_e(v['evidence'])}</p></details></td>")
        rule = doc.get("rules", {}).get(key, "")
        lead = " class='lead'" if key == "clever_hans_failure" else ""
        out.append(f"<tr{lead}><th>{_e(text)}<details><summary>rule</summary><p class='evidence'>{_e(rule)}</p></details>"
                   f"</th>{''.join(cells)}</tr>")
    if any(c.get("notes") for c in cks):
        cells = "".join("<td>" + "".join(f"<p class='evidence'>{_e(n)}</p>" for n in c.get("notes", [])) + "</td>"
                        for c in cks)
        out.append(f"<tr><th>Reading the answers together</th>{cells}</tr>")
    return "\n".join(out + ["</table>"])


def _config_table(doc: dict) -> str:
    cks = doc["checkpoints"]

    def row(label, fn):
        return f"<tr><th>{_e(label)}</th>" + "".join(f"<td><code>{_e(fn(c))}</code></td>" for c in cks) + "</tr>"

    rows = [
        row("path", lambda c: c["path"]),
        row("task", lambda c: json.dumps(c["config"].get("task"), sort_keys=True)),
        row("objective", lambda c: c["config"].get("objective")),
        row("model", lambda c: json.dumps(c["config"].get("model"), sort_keys=True)),
        row("training", lambda c: json.dumps(c["config"].get("train"), sort_keys=True)),
        row("steps / training seed", lambda c: f"{c['provenance']['steps']} / {c['provenance']['training_seed']}"),
        row("measured on", lambda c: f"{c['provenance']['n_graphs']} graphs ({c['provenance']['mechanism_graphs']} for heads, probes, dynamics) "
            + (f"from {c['provenance']['graphs']['data']}" if "data" in c["provenance"]["graphs"]
               else f"(seed {c['provenance']['graphs']['seed']})") + f"; {c['provenance']['patch_pairs']} patching pairs; "
            f"device {c['provenance']['device']}"),
        row("trained with", lambda c: json.dumps(c["provenance"]["trained_with"], sort_keys=True)),
        row("measured with", lambda c: json.dumps(c["provenance"]["measured_with"], sort_keys=True)),
    ]
    return "<table><tr><th></th>" + "".join(f"<th>{_e(c['name'])}</th>" for c in cks) + "</tr>" + "\n".join(rows) + "</table>"


def render_html(doc: dict, checkpoints: list, json_sha256: str | None = None, drawn: dict | None = None) -> str:
    """The report page from the report dict and the CheckpointReports (which hold the figures).
    `json_sha256` stamps the page with the hash of the report.json bytes it was drawn from, so a
    reader can tell a page and a JSON of different runs apart (`report.read_report`). `drawn`: the
    figures' HTML by (column, analysis, name), kept by a caller that redraws the page as
    checkpoints finish, so that each figure is drawn once."""
    drawn = {} if drawn is None else drawn
    from plotly.offline import get_plotlyjs

    cks = doc["checkpoints"]
    names = ", ".join(c["name"] for c in cks)
    s = doc["settings"]
    where = f"graphs from {s['data']}" if s["data"] else f"fresh graphs (seed {s['seed']}, which training never uses)"
    stamp = f'<meta name="hansprobe-report-json-sha256" content="{json_sha256}">' if json_sha256 else ""
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>" + stamp,
             f"<title>hansprobe report: {_e(names)}</title>", f"<style>{STYLE}</style>", STATUS_SCRIPT,
             f"<script type='text/javascript'>{get_plotlyjs()}</script>", "</head><body>",
             f"<h1>hansprobe shortcut-detection report</h1><p>{_e(names)} — measured by hansprobe {_e(doc['hansprobe'])} on up to "
             f"{s['n_graphs']} {_e(where)} (behaviour, entropy; heads, probes and dynamics on the first "
             f"{s['mechanism_graphs']}), {s['patch_pairs']} goal-swap pairs for patching. 95% CIs throughout. "
             "Verdict rules: docs/concepts.md; this file's data: report.json beside it.</p>",
             *([f"<p class='pending'><b>Partial report:</b> {len(doc['pending'])} checkpoint(s) still being measured "
                f"({_e(', '.join(doc['pending']))}); this page is rewritten as each one finishes.</p>"]
               if doc.get("pending") else []),
             "<h2>Verdicts</h2>", f"<div class='scroll'>{_verdict_table(doc)}</div>"]
    caps = captions()
    for key, heading in sections():
        names_here = []
        for ck in checkpoints:
            for n in ck.figures.get(key, {}):
                if n not in names_here:
                    names_here.append(n)
        skipped = [c["analyses"].get(key, {}).get("skipped") for c in cks]
        if not names_here and not any(skipped):
            continue
        parts.append(f"<h2>{_e(heading)}</h2>")
        if not names_here:
            names_here = [None]
        for n in names_here:
            if n is not None:
                parts.append(f"<p class='caption'><b>{_e(n.replace('_', ' '))}.</b> {_e(caps.get(n, ''))}</p>")
            cells = []
            for i, (ck, c) in enumerate(zip(checkpoints, cks)):
                fig = ck.figures.get(key, {}).get(n) if n else None
                if fig is not None:
                    if (i, key, n) not in drawn:  # a figure's HTML depends only on the figure and its column
                        drawn[i, key, n] = _figure_html(fig, f"fig-{i}-{key}-{n}")
                    cells.append(f"<div class='cell'><div class='colhead'>{_e(c['name'])}</div>"
                                 f"{drawn[i, key, n]}</div>")
                else:
                    why = c["analyses"].get(key, {}).get("skipped") or "not drawn for this checkpoint (see its verdict)"
                    cells.append(f"<div class='cell'><div class='colhead'>{_e(c['name'])}</div><p class='skip'>{_e(why)}</p></div>")
            parts.append(f"<div class='row'>{''.join(cells)}</div>")
    parts += ["<h2>Configuration and provenance</h2>", f"<div class='scroll'>{_config_table(doc)}</div>", DONE_SCRIPT,
              LAYOUT_SCRIPT, "</body></html>"]
    return "\n".join(parts) + "\n"

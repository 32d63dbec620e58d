"""The audit report: ``report.html`` (self-contained: inline CSS and SVG plots drawn by
matplotlib with text as paths, so it opens offline), ``audit.json`` and one CSV per table.

Files written to the output directory::

    report.html  audit.json  summary.csv  verstat.csv  attest.csv  reason.csv  spc.csv
    certificate.csv  x5u_host.csv  hour.csv  top_failing.csv
"""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

import orjson

from stirshaken.analysis.audit import TABLES, AuditStats

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#1d232b;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #d5dbe3;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #d5dbe3;padding:3px 8px;text-align:left}
th{background:#eef2f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
.kpi{display:flex;gap:1em;flex-wrap:wrap}.kpi div{background:#f4f7fa;border:1px solid #d5dbe3;border-radius:6px;padding:.6em 1em}
.kpi b{display:block;font-size:1.5em}.plots{display:flex;flex-wrap:wrap;gap:1em}.plots svg{max-width:100%;height:auto}
"""


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def plots(stats: AuditStats) -> list[tuple[str, str]]:
    """(title, inline SVG) of the report's charts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "path"  # no font needed to open the file
    matplotlib.rcParams["svg.hashsalt"] = "stirshaken"  # stable ids: reports can be diffed
    out: list[tuple[str, str]] = []
    colors = {"passed": "#2e8b57", "failed": "#c0392b", "no_validation": "#e67e22", "unsigned": "#95a5a6"}

    hours = stats.table("hour")
    if hours or stats.unsigned_by_hour:
        hs = [f"{h:02d}" for h in range(24)]
        by = {r["hour"]: r for r in hours}
        fig, ax = plt.subplots(figsize=(8, 3))
        bottom = [0] * 24
        for key in ("passed", "failed", "no_validation", "unsigned"):
            vals = [(stats.unsigned_by_hour.get(h, 0) if key == "unsigned" else by.get(h, {}).get(key, 0)) for h in hs]
            ax.bar(hs, vals, bottom=bottom, color=colors[key], label=key.replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xlabel("hour of day (UTC)")
        ax.set_ylabel("INVITEs")
        ax.legend(fontsize=8, ncol=4)
        out.append(("INVITEs by hour of day", _svg(fig)))

    signed, unsigned = stats.signed, stats.unsigned
    if signed or unsigned:
        v = {r["verstat"]: r["calls"] for r in stats.table("verstat")}
        labels = ["passed", "failed", "no validation", "unsigned"]
        vals = [v.get("TN-Validation-Passed", 0), v.get("TN-Validation-Failed", 0), v.get("No-TN-Validation", 0), unsigned]
        fig, ax = plt.subplots(figsize=(4.5, 3))
        ax.barh(labels[::-1], vals[::-1], color=[colors["unsigned"], colors["no_validation"], colors["failed"], colors["passed"]])
        ax.set_xlabel("INVITEs")
        out.append(("Verification outcome", _svg(fig)))

    for name, title in (("reason", "Reasons"), ("attest", "Attestation"), ("x5u_host", "x5u hosts")):
        rows = stats.table(name)[:12]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1))
        labels = [str(r[name])[:48] for r in rows][::-1]
        ax.barh(labels, [r["passed"] for r in rows][::-1], color=colors["passed"], label="passed")
        ax.barh(labels, [r["failed"] + r["no_validation"] for r in rows][::-1], left=[r["passed"] for r in rows][::-1],
                color=colors["failed"], label="failed / no validation")
        ax.set_xlabel("INVITEs")
        ax.legend(fontsize=8)
        out.append((title, _svg(fig)))
    return out


def _table_html(rows: list[dict[str, Any]], limit: int = 50) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    parts = ["<table><tr>" + "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in cols) + "</tr>"]
    for r in rows[:limit]:
        cells = []
        for c in cols:
            v = r[c]
            if c == "share" or c.endswith("_share"):
                cells.append(f'<td class="n">{100 * v:.1f}%</td>')
            elif isinstance(v, (int, float)):
                cells.append(f'<td class="n">{v}</td>')
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if len(rows) > limit:
        parts.append(f"<p>{len(rows) - limit} more rows in the CSV file.</p>")
    return "".join(parts)


def render_html(stats: AuditStats) -> str:
    """The report page: key figures, plots, then every table."""
    s = stats.summary()
    kpis = [("INVITEs", s["signed"] + s["unsigned"]), ("signed", s["signed"]), ("unsigned share", f"{100 * s['unsigned_share']:.1f}%"),
            ("passed (of signed)", f"{100 * s['passed_share_of_signed']:.1f}%"), ("period", f"{s['first_call']} – {s['last_call']}")]
    body = [f"<h1>STIR/SHAKEN audit</h1><p>{html.escape(', '.join(s['inputs']))}</p>",
            '<div class="kpi">' + "".join(f"<div><b>{html.escape(str(v))}</b>{html.escape(k)}</div>" for k, v in kpis) + "</div>",
            '<h2>Charts</h2><div class="plots">' + "".join(f"<figure>{svg}<figcaption>{html.escape(t)}</figcaption></figure>"
                                                          for t, svg in plots(stats)) + "</div>",
            "<h2>Top failing originators</h2>", _table_html(stats.top_failing())]
    for name, title in TABLES.items():
        body.append(f"<h2>{html.escape(title)}</h2>" + _table_html(stats.table(name)))
    body.append("<h2>Counts</h2>" + _table_html([{"figure": k, "value": v} for k, v in s.items() if k != "inputs"]))
    if stats.errors:
        body.append("<h2>Unreadable input</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in stats.errors) + "</ul>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>STIR/SHAKEN audit</title>"
            f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n")


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        if not rows:
            return
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_report(stats: AuditStats, out_dir: Path) -> list[Path]:
    """Write report.html, audit.json and the CSV tables into ``out_dir`` (created); returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = stats.to_json()
    files = [out_dir / "audit.json", out_dir / "report.html"]
    files[0].write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    files[1].write_text(render_html(stats), encoding="utf-8")
    _csv(out_dir / "summary.csv", [{"figure": k, "value": v} for k, v in doc["summary"].items() if k != "inputs"])
    files.append(out_dir / "summary.csv")
    for name in list(TABLES) + ["top_failing"]:
        p = out_dir / f"{name}.csv"
        _csv(p, doc[name])
        files.append(p)
    return files


__all__ = ["plots", "render_html", "write_report"]

"""The evaluation report as one self-contained HTML file: tables and matplotlib plots as inline SVG.

No CDN, no script, no external font or stylesheet: it opens from disk, in a browser without
JavaScript, and passes a strict CSP (``default-src 'none'; style-src 'unsafe-inline'`` is not
even needed: the only styles are SVG presentation attributes and one ``<style>`` element, which a
file opened from disk is allowed). Only figures go in: counts, ratios, latencies, costs; the
caller never passes note text or patient names (patient keys are the corpus's opaque ids).

``render(report)`` takes the dict that ``python -m app eval --json`` prints, extended with
optional sections; unknown keys are shown as a table of their scalar values.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;max-width:70rem;color:#1b1b1b}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #bbb;padding:.25rem .6rem;text-align:left}
th{background:#eef}td.num{text-align:right;font-variant-numeric:tabular-nums}.fail{color:#a00;font-weight:bold}
.pass{color:#060;font-weight:bold}figure{margin:1rem 0}figcaption{font-size:.9rem;color:#444}
"""


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG


def bar_chart(title: str, groups: Mapping[str, Mapping[str, float]], *, ylim: tuple[float, float] | None = (0, 1),
              ylabel: str = "") -> str:
    """Grouped bars: one group per key of ``groups``, one bar per metric. Returns inline SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    metrics = sorted({m for g in groups.values() for m in g})
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) * max(1, len(metrics)) / 1.5), 3.2))
    width = 0.8 / max(1, len(metrics))
    for i, metric in enumerate(metrics):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [float(groups[n].get(metric, 0.0) or 0.0) for n in names], width=width, label=metric)
    ax.set_xticks([j + width * (len(metrics) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(metrics) > 1:
        ax.legend(fontsize=8)
    return _svg(fig)


def histogram(title: str, values: Sequence[float], *, xlabel: str = "", bins: int = 20) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    ax.hist([float(v) for v in values], bins=bins)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _svg(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p>None.</p>"
    cols = list(columns or sorted({k for r in rows for k in r}))
    head = "".join(f"<th scope='col'>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(
        f"<td class='num'>{_fmt(r.get(c, ''))}</td>" if isinstance(r.get(c), int | float) and not isinstance(
            r.get(c), bool) else f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _scalars(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"figure": k, "value": v} for k, v in d.items() if isinstance(v, int | float | str | bool)]


def render(report: Mapping[str, Any], *, title: str = "Evaluation report") -> str:
    """HTML for an eval result. Recognised sections (all optional):
    ``gates`` [{name, value, threshold, passed}], ``summary`` {figure: value}, ``per_organ``
    {organ: {precision, recall, ...}}, ``per_trap`` {category: {passed, total, rate}},
    ``per_patient`` [{patient, ...}], ``latency_ms`` [..], ``compare`` {...}."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    meta = {k: report[k] for k in ("task", "backend", "model", "data", "engine", "generated") if k in report}
    if meta:
        parts.append(table([meta], list(meta)))
    gates = report.get("gates") or []
    if gates:
        ok = all(g.get("passed") for g in gates)
        parts.append(f"<h2>Gates: <span class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</span></h2>")
        parts.append(table([{**g, "passed": "pass" if g.get("passed") else "FAIL"} for g in gates],
                           ["name", "value", "threshold", "passed"]))
    if isinstance(report.get("summary"), Mapping):
        parts.append("<h2>Figures</h2>" + table(_scalars(report["summary"]), ["figure", "value"]))
        headline = {k: v for k, v in report["summary"].items()
                    if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1}
        if headline:
            parts.append(f"<figure>{bar_chart('Headline figures', {k: {'value': v} for k, v in headline.items()})}"
                         "<figcaption>Ratios of the whole corpus.</figcaption></figure>")
    if isinstance(report.get("per_organ"), Mapping) and report["per_organ"]:
        organs = report["per_organ"]
        parts.append("<h2>Per organ</h2>")
        parts.append(f"<figure>{bar_chart('Precision and recall per organ', organs)}"
                     "<figcaption>Per organ system, events matched by patient and organ.</figcaption></figure>")
        parts.append(table([{"organ": k, **v} for k, v in organs.items()]))
    if isinstance(report.get("per_trap"), Mapping) and report["per_trap"]:
        traps = report["per_trap"]
        rates = {k: {"rate": float(v.get("rate", 0.0))} for k, v in traps.items() if isinstance(v, Mapping)}
        parts.append("<h2>Per trap category</h2>")
        parts.append(f"<figure>{bar_chart('Share of traps handled as expected', rates)}</figure>")
        parts.append(table([{"category": k, **v} for k, v in traps.items() if isinstance(v, Mapping)]))
    lat = report.get("latency_ms")
    if isinstance(lat, Sequence) and lat:
        parts.append("<h2>Latency</h2>")
        parts.append(f"<figure>{histogram('Latency per patient', lat, xlabel='ms')}</figure>")
    if isinstance(report.get("per_patient"), Sequence) and report["per_patient"]:
        parts.append("<h2>Per patient</h2>" + table(list(report["per_patient"])))
    if isinstance(report.get("compare"), Mapping):
        parts.append("<h2>Comparison</h2>" + table(_scalars(report["compare"]), ["figure", "value"]))
    known = {"gates", "summary", "per_organ", "per_trap", "latency_ms", "per_patient", "compare",
             "task", "backend", "model", "data", "engine", "generated"}
    for key, value in report.items():
        if key not in known and isinstance(value, Mapping) and _scalars(value):
            parts.append(f"<h2>{html.escape(key)}</h2>" + table(_scalars(value), ["figure", "value"]))
    parts.append("</body></html>")
    return "".join(parts)

"""The batch report: ``report.csv`` (one row per patient), ``report.json``, ``report.html``.

Patients appear only as opaque keys (HMACs of batch id and patient id, the key the checkpoints
use): no names, no FHIR ids, no dates, no note text. Counts per organ and CTCAE grade, per draft
state and per outcome; the HTML is rendered by Jinja2 with autoescaping.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from jinja2 import Environment, select_autoescape

_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Batch {{ info.batch_id }}</title>
<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #bbb;padding:.25rem .6rem;text-align:right}th:first-child,td:first-child{text-align:left}
</style></head><body><h1>irAE screen: batch {{ info.batch_id }}</h1>
<p>Cohort {{ info.cohort }} · engine {{ info.engine }} · backend {{ info.backend }} · source {{ info.source }}
· {{ totals.patients }} patients screened, {{ totals.with_findings }} with findings,
{{ totals.drafts_written }} drafts written.</p>
<h2>Events per organ and CTCAE grade</h2>
<table><tr><th>organ</th>{% for g in grades %}<th>grade {{ g }}</th>{% endfor %}<th>total</th></tr>
{% for organ, row in organ_grade.items() %}<tr><td>{{ organ }}</td>{% for g in grades %}<td>{{ row.get(g, 0) }}</td>
{% endfor %}<td>{{ row.values()|sum }}</td></tr>{% endfor %}</table>
<h2>Draft states</h2><table>{% for k, v in draft_states.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>
{% endfor %}</table>
<h2>Patients</h2><table><tr><th>patient key</th><th>status</th><th>events</th><th>draft</th></tr>
{% for r in rows %}<tr><td>{{ r.patient_key }}</td><td>{{ r.status }}</td><td>{{ r.events_text }}</td>
<td>{{ r.draft_state }}</td></tr>{% endfor %}</table>
<p>Problems this run: {{ info.problems or "none" }}</p></body></html>"""


def _grade(value: object) -> str:
    return str(value) if isinstance(value, int) else "unknown"


def summarise(rows: list[dict]) -> dict:
    organ_grade: dict[str, Counter[str]] = {}
    states: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for r in rows:
        statuses[str(r.get("status", "unknown"))] += 1
        states[str(r.get("draft_state", "pending"))] += 1
        for ev in r.get("events") or []:
            organ_grade.setdefault(str(ev.get("organ")), Counter())[_grade(ev.get("grade"))] += 1
    return {
        "patients": len(rows),
        "with_findings": sum(1 for r in rows if r.get("irae_detected")),
        "drafts_written": states.get("written", 0),
        "screens_total": sum(int(r.get("screens", 0)) for r in rows),
        "writes_total": sum(int(r.get("writes", 0)) for r in rows),
        "statuses": dict(sorted(statuses.items())),
        "draft_states": dict(sorted(states.items())),
        "organ_grade": {o: dict(sorted(c.items())) for o, c in sorted(organ_grade.items())},
        "notes": sum(int(r.get("notes", 0)) for r in rows),
        "cost_usd": round(sum(float(r.get("cost_usd", 0.0)) for r in rows), 6),
    }


def write_reports(out_dir: Path, batch_id: str, rows: list[dict], info: dict) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    totals = summarise(rows)
    for r in rows:
        r["events_text"] = "; ".join(f"{e.get('organ')}:{e.get('term')}:G{_grade(e.get('grade'))}"
                                     for e in r.get("events") or [])
    with (out_dir / "report.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_key", "status", "irae_detected", "events", "notes", "draft_state", "screens",
                         "writes", "cost_usd"])
        for r in rows:
            writer.writerow([r["patient_key"], r.get("status"), bool(r.get("irae_detected")), r["events_text"],
                             r.get("notes", 0), r.get("draft_state", "pending"), r.get("screens", 0),
                             r.get("writes", 0), r.get("cost_usd", 0.0)])
    public_rows = [{k: r.get(k) for k in ("patient_key", "status", "irae_detected", "events", "notes",
                                           "draft_state", "screens", "writes", "cost_usd")} for r in rows]
    body = {"batch": info, "totals": totals, "patients": public_rows}
    (out_dir / "report.json").write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
    grades = sorted({g for c in totals["organ_grade"].values() for g in c}, key=lambda g: (g == "unknown", g))
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(_HTML).render(info=info, totals=totals, rows=rows, grades=grades,
                                         organ_grade=totals["organ_grade"], draft_states=totals["draft_states"])
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    return {"batch": info, "totals": totals, "out": str(out_dir)}

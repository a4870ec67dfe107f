"""Lay each patient's notes out over the year 2025-11-01 .. 2026-10-31.

Returns plain note records (date, LOINC type, text, author, facets, labels ...) plus the
conditions, medications and gold facts that follow from the same construction.
"""

from __future__ import annotations

import datetime as dt

from . import cohort, events, gennotes, notes
from .context import WINDOW_END, WINDOW_START
from .notes import _cap

D = dt.timedelta


def rec(date, loinc, text, author, setting="AMB", facets=(), **kw) -> dict:
    r = dict(date=date, loinc=loinc, text=text, author=author, setting=setting,
             facets=list(facets), evidence=False, labels=[], hostile=None, fmt=None,
             enc_key=None, event=None)
    r.update(kw)
    return r


def _clamp(d: dt.date) -> dt.date:
    return min(max(d, WINDOW_START), WINDOW_END)


def oncology(rng, p: dict, c: dict) -> dict:
    start = dt.date.fromisoformat(p["start"])
    out: list[dict] = []
    conds, meds, gold_events, distractors = [], [], [], []
    pre = min([0] + [d["day"] for d in p["distractors"]])
    pre_dates = [_clamp(start + D(days=pre + k)) for k in (-9, -7, -5)]
    out.append(rec(pre_dates[0], "11526-1", notes.pathology(rng, c, "{date}"), "lab",
                   facets=["pathology"]))
    out.append(rec(pre_dates[1], "34117-2", notes.onc_hp(rng, c, "{date}"), "onc"))
    out.append(rec(pre_dates[2], "18748-4", notes.imaging(rng, c, "{date}", "baseline"), "rad",
                   facets=["imaging"]))
    conds.append(dict(key="cancer", code=cohort.CANCERS[p["cancer"]][0],
                      display=cohort.CANCERS[p["cancer"]][1], onset=start - D(days=30)))
    drugs = cohort.REGIMENS[p["regimen"]]
    for drug in drugs:
        meds.append(dict(drug=drug, authored=start, status="active", reason="cancer"))

    pending = sorted([("event", e["day"], e) for e in p["events"]] +
                     [("distractor", d["day"], d) for d in p["distractors"]], key=lambda x: x[1])
    issues, positives_until, positives = [], None, ()
    hold_until, discontinued, copied = None, False, None
    interval_note, cycle, visit, last_img = None, 1, 0, start
    d = start
    # distractors that predate ICI start are emitted right away
    while pending and start + D(days=pending[0][1]) < start:
        kind, day, item = pending.pop(0)
        when = start + D(days=day)
        r = events.distractor_note(rng, c, item["kind"])
        out.append(rec(when, r["loinc"], r["text"], r["author"], r["setting"], r["facets"]))
        distractors.append(dict(kind=item["kind"], summary=r["summary"], date=when,
                                idx=len(out) - 1))
    while d <= WINDOW_END:
        while pending and start + D(days=pending[0][1]) <= d:
            kind, day, item = pending.pop(0)
            when = start + D(days=day)
            if kind == "distractor":
                r = events.distractor_note(rng, c, item["kind"])
                out.append(rec(when, r["loinc"], r["text"], r["author"], r["setting"],
                               r["facets"]))
                distractors.append(dict(kind=item["kind"], summary=r["summary"], date=when,
                                        idx=len(out) - 1))
                issues.append(_cap(r["summary"]))
                continue
            specs, eff = events.event_notes(rng, c, item["term"], item["grade"])
            ids = []
            for s in specs:
                enc = f"adm-{item['term']}" if s["setting"] == "IMP" else None
                ids.append(len(out))
                out.append(rec(when + D(days=s["day"]), s["loinc"], s["text"], s["author"],
                               s["setting"], s["facets"], evidence=s["evidence"], enc_key=enc,
                               event=item["term"], enc_span=(when, when + D(days=5))))
            gold_events.append(dict(term=item["term"], grade=item["grade"], onset=when,
                                    note_idx=[i for i in ids if out[i]["evidence"]]))
            issues.append(eff["issue"].replace("{onset}", when.isoformat()))
            positives, positives_until = eff["sx"], when + D(days=10)
            interval_note = f"Follow-up of immune-related {item['term']}: {eff['followup']}"
            conds.append(dict(key=f"irae-{item['term']}", term=item["term"], onset=when,
                              grade=item["grade"]))
            if eff["steroid"]:
                meds.append(dict(drug=eff["steroid"], authored=when, status="completed",
                                 reason=f"irae-{item['term']}"))
            if item["term"] in ("hypothyroidism", "hypophysitis"):
                meds.append(dict(drug="levothyroxine", authored=when + D(days=5),
                                 status="active", reason=f"irae-{item['term']}"))
            if eff["action"] == "held":
                hold_until = when + D(days=42)
            elif eff["action"] == "discontinued":
                discontinued = True
                for m in meds:
                    if m["drug"] in drugs or m["drug"] == "nivolumab":
                        m["status"] = "stopped"
        on_hold = discontinued or (hold_until is not None and d < hold_until)
        state = dict(issues=list(issues), interval=interval_note,
                     positives=positives if positives_until and d <= positives_until else ())
        if discontinued:
            state["tx_status"] = "permanently discontinued"
        interval_note = None
        if visit % 3 == 2 and copied:
            state.update(copied=copied[1], copied_date=copied[0].isoformat())
        text = notes.onc_progress(rng, c, "{date}", None if on_hold else cycle, state)
        facets = [f"irae:{i.split('immune-related ')[1].split(',')[0]}" for i in issues
                  if "immune-related " in i and i.startswith("Grade")]
        out.append(rec(d, "11506-3", text, "onc", facets=facets))
        copied = (d, "  " + "\n  ".join(issues or ["No active treatment-related issues."]))
        if not on_hold:
            if cycle % 3 == 1:
                out.append(rec(d, "34746-8", notes.nurse_note(rng, c, "{date}", cycle), "nurse"))
            cycle += 1
        if visit % 3 == 1:
            out.append(rec(d, "11502-2", notes.lab_report(rng, c, "{date}"), "lab",
                           facets=["labs"]))
        if (d - last_img).days >= 84:
            out.append(rec(d, "18748-4", notes.imaging(rng, c, "{date}", "restaging"), "rad",
                           facets=["imaging"]))
            last_img = d
        if p["regimen"] == "ipi_nivo" and cycle == 5 and not discontinued and not any(
                m["drug"] == "nivolumab" for m in meds):
            meds.append(dict(drug="nivolumab", authored=d + D(days=21), status="active",
                             reason="cancer"))
            for m in meds:
                if m["drug"] in drugs:
                    m["status"] = "completed"
        visit += 1
        step = 42 if discontinued else (28 if p["regimen"] == "nivolumab" or
                                        (p["regimen"] == "ipi_nivo" and cycle > 4) else 21)
        d += D(days=step)
    _onc_special(rng, p, c, start, out, gold_events)
    return dict(notes=out, conditions=conds, meds=meds, events=gold_events,
                distractors=distractors)


def _onc_special(rng, p, c, start, out, gold_events) -> None:
    first = gold_events[0]["onset"] if gold_events else start + D(days=60)
    if "psy" in p["labels"]:
        out.append(rec(first + D(days=21), "11488-4", notes.psych_note(rng, c, "{date}"),
                       "psych", labels=["PSY", "R"]))
    if "part2" in p["labels"]:
        for day in (30, 120):
            out.append(rec(start + D(days=day), "11506-3", notes.part2_note(rng, c, "{date}"),
                           "psych", labels=["42CFRPart2", "R"]))
    if "restricted" in p["labels"]:
        out.append(rec(start + D(days=45), "11488-4", notes.restricted_note(rng, c, "{date}"),
                       "onc", labels=["R"]))
    if p["id"] == "pat-onc-05":
        out.append(rec(start + D(days=150), "11506-3", gennotes.injection_note(rng, c, "{date}"),
                       "onc", hostile="prompt_injection", fmt="plain"))


GEN_MEDS = {
    "diabetes": ("metformin", "6809", "metformin 1000 mg orally twice daily"),
    "hypertension": ("lisinopril", "29046", "lisinopril 20 mg orally daily"),
    "heart_failure": ("furosemide", "4603", "furosemide 40 mg orally daily"),
    "afib": ("apixaban", "1364430", "apixaban 5 mg orally twice daily"),
    "copd": ("tiotropium", "69120", "tiotropium 18 mcg inhaled daily"),
    "alcohol_use": ("thiamine", "10454", "thiamine 100 mg orally daily"),
    "ckd": ("lisinopril", "29046", "lisinopril 10 mg orally daily"),
    "gout": ("allopurinol", "519", "allopurinol 300 mg orally daily"),
    "depression": ("sertraline", "36437", "sertraline 150 mg orally daily"),
    "hyperlipidemia": ("atorvastatin", "83367", "atorvastatin 40 mg orally daily"),
}


# Problems whose Condition carries the labels of the notes about them (the psychiatry notes
# are PSY + R, the substance-use notes 42CFRPart2 + R): a label on the note and none on the
# problem list would show the diagnosis to every role.
SENSITIVE_PROBLEMS = {"depression": ["PSY", "R"], "alcohol_use": ["42CFRPart2", "R"]}


def general(rng, p: dict, c: dict) -> dict:
    probs = [f"problem:{x}" for x in p["problems"]]
    first = WINDOW_START + D(days=rng.randint(2, 40))
    out = [rec(first, "34117-2", gennotes.gen_hp(rng, c, "{date}"), "gp", facets=probs)]
    d, k, copied = first + D(days=45), 0, None
    while d <= WINDOW_END:
        out.append(rec(d, "11506-3", gennotes.gen_progress(rng, c, "{date}", copied), "gp",
                       facets=probs))
        copied = "  " + "\n  ".join(gennotes.GEN_PROBLEMS[x][4].format(a1c="7.4")
                                    for x in p["problems"]) if k % 2 == 0 else None
        if k % 2 == 0:
            out.append(rec(d, "11502-2", gennotes.gen_lab(rng, c, "{date}"), "lab",
                           facets=["labs"]))
        k += 1
        d += D(days=rng.choice([42, 56, 63]))
    out.append(rec(first + D(days=100), "18748-4", gennotes.gen_imaging(rng, c, "{date}"),
                   "rad", facets=["imaging"]))
    if p["problems"][0] in ("heart_failure", "copd", "diabetes"):
        ed = first + D(days=150)
        out.append(rec(ed, "34111-5", gennotes.gen_ed(rng, c, "{date}"), "gp", "EMER",
                       facets=probs[:1]))
        if p["problems"][0] != "diabetes":
            out.append(rec(ed + D(days=3), "18842-5", gennotes.gen_discharge(rng, c, "{date}"),
                           "gp", "IMP", facets=probs[:1]))
    if "psy" in p["labels"]:
        for day in (60, 150, 240):
            out.append(rec(first + D(days=day), "11506-3", gennotes.gen_psych(rng, c, "{date}"),
                           "psych", labels=["PSY", "R"]))
    if "part2" in p["labels"]:
        for day in (75, 200):
            out.append(rec(first + D(days=day), "11506-3", notes.part2_note(rng, c, "{date}"),
                           "psych", labels=["42CFRPart2", "R"]))
    for h in p["hostile"]:
        when = first + D(days=120)
        if h == "invalid_utf8":
            out.append(rec(when, "11506-3", gennotes.invalid_utf8_bytes(c, "{date}"), "gp",
                           hostile=h, fmt="plain"))
        elif h == "html_script":
            out.append(rec(when, "11488-4", gennotes.html_script_note(c, "{date}"), "gp",
                           hostile=h, fmt="html-raw"))
        elif h == "long_note":
            out.append(rec(when, "18842-5", gennotes.long_note(rng, c, "{date}"), "gp", "IMP",
                           hostile=h, fmt="plain"))
    conds = [dict(key=f"problem-{x}", code=gennotes.GEN_PROBLEMS[x][0],
                  display=gennotes.GEN_PROBLEMS[x][1],
                  onset=dt.date(int(gennotes.GEN_PROBLEMS[x][2]), 3, 1),
                  labels=SENSITIVE_PROBLEMS.get(x, []))
             for x in p["problems"]]
    meds = [dict(drug=x, authored=first, status="active", reason=f"problem-{x}", gen=True)
            for x in p["problems"]]
    return dict(notes=out, conditions=conds, meds=meds, events=[], distractors=[])

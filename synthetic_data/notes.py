"""Note text for the oncology cohort: templates plus seeded random choices.

Every function takes a ``random.Random`` and a context dict ``c`` (name, drug, cancer, ...)
and returns plain text with section headers. Event and distractor texts live in
``events.py``; general medicine notes in ``gennotes.py``.
"""

from __future__ import annotations

ROS_SYSTEMS = [
    ("Constitutional", ["fevers", "chills", "night sweats", "weight loss"]),
    ("Eyes", ["blurred vision", "eye pain"]),
    ("Cardiovascular", ["chest pain", "palpitations", "leg swelling"]),
    ("Respiratory", ["cough", "shortness of breath", "wheezing"]),
    ("Gastrointestinal", ["diarrhea", "abdominal pain", "nausea", "blood in stool"]),
    ("Genitourinary", ["dysuria", "hematuria"]),
    ("Musculoskeletal", ["joint pain", "myalgias"]),
    ("Skin", ["rash", "pruritus"]),
    ("Neurologic", ["headache", "numbness", "weakness"]),
    ("Endocrine", ["heat or cold intolerance", "polyuria"]),
]
ROS_STYLES = ["Denies {neg}.", "Negative for {neg}.", "No {neg}."]


def _cap(s: str) -> str:
    """Upper-case the first character only (str.capitalize would lower 'CTCAE')."""
    return s[:1].upper() + s[1:]


def header(title: str, c: dict, date: str, author: str) -> str:
    return (f"{title}\nPatient: {c['full']}    MRN: {c['mrn']}    DOB: {c['birth']}\n"
            f"Date of service: {date}\nAuthor: {author}\n")


def ros(rng, positives=(), style=None) -> str:
    """Templated review of systems; anything not in ``positives`` is listed as negative."""
    style = style or rng.choice(ROS_STYLES)
    lines = ["Review of Systems:"]
    for system, items in ROS_SYSTEMS:
        pos = [i for i in items if i in positives]
        neg = [i for i in items if i not in positives]
        parts = []
        if pos:
            parts.append(f"Positive for {', '.join(pos)}.")
        if neg:
            parts.append(style.format(neg=", ".join(neg)))
        lines.append(f"  {system}: {' '.join(parts)}")
    lines.append("  All other systems reviewed and negative.")
    return "\n".join(lines)


def vitals(rng, fever=False, spo2=None) -> str:
    t = rng.choice([38.4, 38.6, 38.9]) if fever else rng.choice([36.5, 36.7, 36.8, 37.0])
    return (f"Vitals: T {t} C, HR {rng.randint(68, 96)}, BP {rng.randint(112, 146)}/"
            f"{rng.randint(64, 88)}, RR {rng.randint(14, 20)}, SpO2 {spo2 or rng.randint(95, 99)}% "
            f"on room air, weight {rng.randint(55, 98)} kg.")


def onc_history(c: dict) -> str:
    """Oncologic history paragraph; copied forward verbatim into every oncology note."""
    return (f"Oncologic history: {c['title']} {c['family']} is a {c['age']}-year-old {c['sex']} "
            f"with {c['cancer_desc']}. Diagnosed {c['dx_date']}. Started {c['regimen']} on "
            f"{c['start']} (cycle 1 day 1). ECOG performance status 1 at baseline."
            f"{c.get('history_extra', '')}")


def exam(rng, skin="No rash.", abd="Soft, non-tender, normal bowel sounds.",
         lungs="Clear to auscultation bilaterally.") -> str:
    return ("Physical Exam:\n  General: Alert, in no acute distress.\n"
            f"  HEENT: {rng.choice(['Anicteric sclerae.', 'Mucous membranes moist.'])}\n"
            f"  Lungs: {lungs}\n  Heart: Regular rate and rhythm, no murmurs.\n"
            f"  Abdomen: {abd}\n  Skin: {skin}\n  Neuro: Non-focal.")


def onc_hp(rng, c: dict, date: str) -> str:
    return "\n".join([
        header("HISTORY AND PHYSICAL - MEDICAL ONCOLOGY NEW PATIENT", c, date, c["onc"]),
        "Chief Complaint: Establish care for newly diagnosed metastatic disease.",
        f"HPI: {c['title']} {c['family']} is a {c['age']}-year-old {c['sex']} referred for "
        f"{c['cancer_desc']}. {rng.choice(c['presentations'])} Staging imaging and biopsy "
        f"confirmed the diagnosis. We discussed immune checkpoint inhibitor therapy with "
        f"{c['regimen']}, including the risk of immune-related adverse events such as colitis, "
        f"hepatitis, pneumonitis, endocrinopathies and rash.",
        f"Past Medical History: {c['pmh']}",
        f"Medications: {c['home_meds']}",
        "Allergies: No known drug allergies.",
        f"Social History: {rng.choice(c['social'])}",
        "Family History: Non-contributory.",
        ros(rng, ()),
        vitals(rng),
        exam(rng),
        f"Assessment: {_cap(c['cancer_desc'])}. Candidate for {c['regimen']}.",
        "Plan:\n  1. Start " + c["regimen"] + f" on {c['start']}.\n  2. Baseline TSH, free T4, "
        "cortisol, CMP and CBC prior to cycle 1.\n  3. Patient educated on irAE warning signs; "
        "given 24-hour oncology line.\n  4. Restaging CT every 12 weeks.",
    ])


def pathology(rng, c: dict, date: str) -> str:
    return "\n".join([
        header("SURGICAL PATHOLOGY REPORT", c, date, "Department of Pathology"),
        f"Specimen: {c['specimen']}",
        f"Clinical history: Suspected {c['cancer_short']}.",
        f"Gross description: {rng.choice(['Three', 'Four', 'Two'])} tan-pink core fragments, "
        f"{rng.choice(['0.8', '1.2', '1.5'])} cm in aggregate length, entirely submitted.",
        f"Microscopic description: {c['micro']}",
        f"Final Diagnosis: {c['path_dx']}",
        f"Ancillary studies: {c['markers']}",
    ])


def imaging(rng, c: dict, date: str, kind: str, impression: str | None = None) -> str:
    if kind == "baseline":
        title, imp = "CT CHEST, ABDOMEN AND PELVIS WITH CONTRAST - BASELINE", c["baseline_imp"]
    else:
        title = "CT CHEST, ABDOMEN AND PELVIS WITH CONTRAST - RESTAGING"
        imp = impression or rng.choice([
            "Partial response: target lesions decreased by 34% (RECIST 1.1).",
            "Stable disease by RECIST 1.1. No new lesions.",
            "Continued partial response. No new sites of disease.",
        ])
    lungs = rng.choice(["No pleural effusion.", "Lungs clear without new opacity."])
    return "\n".join([
        header(title, c, date, "Department of Radiology"),
        f"Indication: {c['cancer_short']} on {c['regimen']}; {kind} assessment.",
        "Technique: Helical CT with 100 mL IV contrast. Comparison: " +
        ("none." if kind == "baseline" else "prior CT."),
        f"Findings: {c['imaging_findings']} {lungs} Bowel without wall thickening. "
        "No colitis. Liver without new lesion." if kind != "baseline" else
        f"Findings: {c['imaging_findings']}",
        f"Impression: {imp}",
    ])


LABS_NORMAL = [
    ("WBC", "x10^9/L", (4.5, 9.8), "4.0-11.0"), ("Hemoglobin", "g/dL", (11.2, 13.9), "12.0-16.0"),
    ("Platelets", "x10^9/L", (160, 330), "150-400"), ("Sodium", "mmol/L", (136, 142), "135-145"),
    ("Potassium", "mmol/L", (3.7, 4.8), "3.5-5.1"), ("Creatinine", "mg/dL", (0.7, 1.1), "0.6-1.2"),
    ("AST", "U/L", (16, 34), "10-40"), ("ALT", "U/L", (12, 38), "7-56"),
    ("Total bilirubin", "mg/dL", (0.3, 1.0), "0.2-1.2"), ("TSH", "mIU/L", (0.9, 3.4), "0.4-4.0"),
]


def lab_report(rng, c: dict, date: str, overrides: dict | None = None, comment: str = "") -> str:
    overrides = overrides or {}
    lines = [header("LABORATORY REPORT", c, date, "Clinical Laboratory"),
             "Panel: CBC with differential, comprehensive metabolic panel, thyroid function",
             "Results:"]
    for name, unit, (lo, hi), ref in LABS_NORMAL:
        if name in overrides:
            value, flag = overrides[name]
        else:
            value = round(rng.uniform(lo, hi), 1 if hi < 20 else 0)
            value, flag = (int(value) if hi >= 20 else value), ""
        lines.append(f"  {name}: {value} {unit} (ref {ref}) {flag}".rstrip())
    for name, (value, flag) in sorted(overrides.items()):
        if name not in {n for n, *_ in LABS_NORMAL}:
            lines.append(f"  {name}: {value} {flag}".rstrip())
    lines.append(f"Comment: {comment or 'Results reviewed; no critical values.'}")
    return "\n".join(lines)


def onc_progress(rng, c: dict, date: str, cycle: int | None, state: dict) -> str:
    """Infusion/surveillance visit. ``state`` carries copy-forward text and active issues."""
    positives = state.get("positives", ())
    interval = state.get("interval") or rng.choice([
        "Tolerating treatment well. Energy fair, appetite good.",
        "Mild fatigue after infusions, otherwise feels well. Working part time.",
        "No new complaints since last visit. Walking 2 miles daily.",
        "Reports good quality of life. Mild intermittent arthralgias, not limiting.",
    ])
    tx = (f"Cycle {cycle} of {c['regimen']}" if cycle else f"Surveillance visit; {c['regimen']} "
          f"{state.get('tx_status', 'on hold')}")
    response = state.get("response", "responding to therapy")
    assess = [f"1. {_cap(c['cancer_short'])}: {response}."]
    assess += [f"{i + 2}. {a}" for i, a in enumerate(state.get("issues", []))]
    plan = state.get("plan") or [
        f"Proceed with {c['regimen']} today; labs within treatment parameters." if cycle else
        "Continue surveillance; labs today.",
        "Monitor for immune-related adverse events; TSH every 6 weeks.",
        f"Return in {rng.choice([3, 3, 4, 6])} weeks.",
    ]
    parts = [
        header("PROGRESS NOTE - MEDICAL ONCOLOGY", c, date, c["onc"]),
        f"Visit: {tx}.",
        onc_history(c),
        f"Interval History: {interval}",
    ]
    if state.get("copied"):
        parts.append(f"Prior Assessment (copied forward from {state['copied_date']}):\n"
                     f"{state['copied']}")
    parts += [
        ros(rng, positives),
        vitals(rng),
        exam(rng),
        "Assessment:\n  " + "\n  ".join(assess),
        "Plan:\n  - " + "\n  - ".join(plan),
    ]
    return "\n".join(parts)


def nurse_note(rng, c: dict, date: str, cycle: int) -> str:
    return "\n".join([
        header("NURSING NOTE - INFUSION CENTER", c, date, c["nurse"]),
        f"Cycle {cycle} {c['regimen']} administered via peripheral IV over 30 minutes without "
        "infusion reaction.",
        "Pre-infusion screening: " + rng.choice([
            "Denies diarrhea, cough, rash.", "No diarrhea, no cough, no new rash.",
            "Patient denies diarrhea, shortness of breath or skin changes."]),
        vitals(rng),
        "Education: Reviewed irAE symptoms (diarrhea, cough, rash, fatigue) and when to call.",
        "Disposition: Discharged home ambulatory in stable condition.",
    ])


def psych_note(rng, c: dict, date: str) -> str:
    return "\n".join([
        header("PSYCHIATRY CONSULTATION - PSYCHO-ONCOLOGY", c, date, c["psych"]),
        f"Reason for consult: Low mood and insomnia during {c['regimen']} treatment and "
        "steroid therapy.",
        f"HPI: {c['title']} {c['family']} describes depressed mood for 6 weeks, anhedonia, "
        "early morning awakening and passive death wishes without plan or intent. Prior episode "
        "of major depression in 2009 treated with sertraline. Steroid-related irritability noted.",
        "Mental Status Exam: Casually dressed, psychomotor slowing, mood 'flat', affect "
        "constricted, thought process linear, no psychotic features, insight good.",
        "Risk assessment: Low acute risk; protective factors include family and future "
        "orientation. Safety plan reviewed.",
        "Assessment: Major depressive disorder, recurrent, moderate (F33.1), with adjustment "
        "to cancer diagnosis.",
        "Plan:\n  - Start sertraline 50 mg daily.\n  - Weekly psychotherapy.\n"
        "  - Note is psychotherapy-sensitive: do not redisclose.",
    ])


def part2_note(rng, c: dict, date: str) -> str:
    return "\n".join([
        header("SUBSTANCE USE DISORDER TREATMENT PROGRAM - COUNSELING NOTE", c, date, c["psych"]),
        "Program: Federally assisted SUD treatment program (42 CFR Part 2 protected record).",
        f"Session: Individual counseling, {rng.choice([45, 50, 60])} minutes.",
        "Subjective: Reports 4 months of abstinence from alcohol; attending group twice weekly. "
        "Buprenorphine-naloxone 8/2 mg daily continued for opioid use disorder in remission.",
        "Assessment: Opioid use disorder, in early remission, on maintenance therapy. "
        "Alcohol use disorder, moderate, in early remission.",
        "Plan: Continue counseling weekly; urine drug screen next visit. This record may not be "
        "redisclosed without patient consent (42 CFR Part 2).",
    ])


def restricted_note(rng, c: dict, date: str) -> str:
    return "\n".join([
        header("GENETIC COUNSELING NOTE", c, date, c["onc"]),
        "Reason: Germline testing discussion; patient requested restricted access to this note.",
        "Findings: Germline panel identified a pathogenic BAP1 variant. Cascade testing for "
        "adult children discussed. Patient declines sharing with family at this time.",
        "Plan: Results released to patient; restricted confidentiality (R) per patient request.",
    ])

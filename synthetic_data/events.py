"""Immune-related adverse events (gold positives) and distractors (gold negatives) as notes.

``event_notes`` returns note specs whose text holds the term and the grade-defining detail;
the ones flagged ``evidence`` become ``evidence_documents`` in gold/irae.json.
"""

from __future__ import annotations

from .notes import _cap, exam, header, lab_report, ros, vitals

# term -> grade-specific clinical detail. Keys: sx (ROS positives), hpi, detail, mgmt,
# consult (service, findings), labs (overrides for lab_report), imaging, admit, action, steroid
EVENTS = {
    ("colitis", 2): dict(
        sx=("diarrhea", "abdominal pain"), service="Gastroenterology",
        hpi="reports 5 to 6 watery stools per day over a baseline of 1 for the past 4 days, "
            "with lower abdominal cramping; no blood in stool, tolerating oral intake",
        detail="increase of 4-6 stools per day over baseline, consistent with grade 2 colitis "
               "(CTCAE v5)",
        findings="Stool C. difficile PCR negative, GI pathogen panel negative, fecal "
                 "calprotectin 640 mcg/g. Flexible sigmoidoscopy: patchy erythema and edema; "
                 "biopsies show active colitis with intraepithelial lymphocytes.",
        mgmt="Hold {drug}. Start prednisone 1 mg/kg/day (80 mg daily) with taper over 4 to 6 "
             "weeks once stools return to grade 1 or less.",
        labs={"CRP": ("38 mg/L", "H")}, admit=False, action="held", steroid="prednisone"),
    ("colitis", 3): dict(
        sx=("diarrhea", "abdominal pain", "nausea"), service="Gastroenterology",
        hpi="reports 9 to 10 watery stools per day over a baseline of 1 with nocturnal stools, "
            "severe cramping, and one episode of fecal incontinence; limiting self-care",
        detail="increase of 7 or more stools per day over baseline with limitation of self-care "
               "ADL, consistent with grade 3 immune-mediated colitis (CTCAE v5)",
        findings="C. difficile PCR negative, GI pathogen panel negative. Flexible sigmoidoscopy: "
                 "diffuse erythema, loss of vascular pattern and ulcerations; biopsies show "
                 "active colitis with crypt abscesses, no CMV inclusions.",
        mgmt="Admit. Permanently discontinue ipilimumab; hold {drug}. IV methylprednisolone "
             "2 mg/kg/day. Infliximab 5 mg/kg if no improvement within 72 hours.",
        labs={"CRP": ("112 mg/L", "H"), "Potassium": (3.1, "L")}, admit=True,
        action="discontinued", steroid="methylprednisolone",
        course="Required a single dose of infliximab 5 mg/kg on hospital day 3 with subsequent "
               "improvement to 2 stools per day; transitioned to oral prednisone 80 mg daily."),
    ("hepatitis", 2): dict(
        sx=("nausea",), service="Hepatology",
        hpi="is asymptomatic; routine pre-infusion labs showed new transaminase elevation",
        detail="AST 132 U/L (3.3 x ULN) and ALT 210 U/L (3.8 x ULN), total bilirubin 0.9 mg/dL; "
               "ALT >3 to 5 x ULN consistent with grade 2 immune-mediated hepatitis (CTCAE v5)",
        findings="Hepatitis A, B and C serologies negative; no new liver lesions or biliary "
                 "dilatation on ultrasound; no hepatotoxic medications or alcohol.",
        mgmt="Hold {drug}. Start prednisone 0.5 to 1 mg/kg/day; recheck LFTs twice weekly.",
        labs={"AST": (132, "H"), "ALT": (210, "H")}, admit=False, action="held",
        steroid="prednisone"),
    ("hepatitis", 3): dict(
        sx=("nausea",), service="Hepatology",
        hpi="reports fatigue and dark urine for 1 week; pre-infusion labs showed marked "
            "transaminase elevation",
        detail="AST 246 U/L (6.2 x ULN) and ALT 448 U/L (8.0 x ULN), total bilirubin 1.4 mg/dL; "
               "ALT >5 to 20 x ULN consistent with grade 3 immune-mediated hepatitis (CTCAE v5)",
        findings="Viral hepatitis serologies negative, autoimmune serologies negative; ultrasound "
                 "without biliary obstruction or progression of liver disease.",
        mgmt="Admit. Hold {drug}. IV methylprednisolone 1 mg/kg/day; add mycophenolate mofetil "
             "if no improvement in 3 days.",
        labs={"AST": (246, "H"), "ALT": (448, "H"), "Total bilirubin": (1.4, "H")}, admit=True,
        action="held", steroid="methylprednisolone",
        course="LFTs improved by 40% within 72 hours of steroids; discharged on prednisone "
               "1 mg/kg with a 6-week taper."),
    ("pneumonitis", 2): dict(
        sx=("cough", "shortness of breath"), service="Pulmonology",
        hpi="reports 10 days of dry cough and dyspnea climbing one flight of stairs, limiting "
            "instrumental activities; no fever",
        detail="symptomatic bilateral ground-glass opacities limiting instrumental ADL, SpO2 93% "
               "on room air, consistent with grade 2 checkpoint inhibitor pneumonitis (CTCAE v5)",
        findings="CT chest: new bilateral peripheral ground-glass opacities in the lower lobes, "
                 "organizing pneumonia pattern. Bronchoscopy with BAL: no bacterial, fungal or "
                 "viral pathogens; lymphocytosis 32%.",
        mgmt="Hold {drug}. Start prednisone 1 mg/kg/day with taper over 6 weeks; repeat CT in "
             "4 weeks.",
        labs=None, imaging=True, admit=False, action="held", steroid="prednisone", spo2=93),
    ("hypothyroidism", 2): dict(
        sx=("weight loss",), service="Endocrinology",
        hpi="reports fatigue, cold intolerance and constipation; TSH was suppressed 6 weeks "
            "ago (painless thyroiditis phase) and is now markedly elevated",
        detail="TSH 38.2 mIU/L with free T4 0.42 ng/dL after a thyrotoxic thyroiditis phase; "
               "symptomatic, thyroid replacement indicated: grade 2 immune-related "
               "hypothyroidism (CTCAE v5)",
        findings="Thyroid peroxidase antibodies positive. No prior thyroid disease; baseline "
                 "TSH before immunotherapy was normal.",
        mgmt="Start levothyroxine 1.6 mcg/kg/day (100 mcg daily). Continue {drug}; no steroids "
             "required.",
        labs={"TSH": (38.2, "H"), "Free T4": ("0.42 ng/dL", "L")}, admit=False,
        action="continued", steroid=None),
    ("dermatitis", 2): dict(
        sx=("rash", "pruritus"), service="Dermatology",
        hpi="reports a pruritic eruption on the trunk and upper arms for 1 week",
        detail="maculopapular rash covering approximately 20% of body surface area (10-30% BSA) "
               "with pruritus: grade 2 immune-related dermatitis (CTCAE v5)",
        findings="Erythematous macules and papules on trunk and proximal arms; no mucosal "
                 "involvement, no blistering, Nikolsky negative. Punch biopsy: interface "
                 "dermatitis with lymphocytic infiltrate.",
        mgmt="Continue {drug}. Triamcinolone 0.1% cream twice daily and oral cetirizine; "
             "reassess in 2 weeks.",
        labs=None, admit=False, action="continued", steroid=None,
        skin="Erythematous maculopapular rash over trunk and arms, about 20% BSA."),
    ("hypophysitis", 2): dict(
        sx=("headache", "weight loss"), service="Endocrinology",
        hpi="reports 2 weeks of frontal headache, profound fatigue and lightheadedness",
        detail="morning cortisol 2.1 mcg/dL with ACTH 6 pg/mL, TSH 0.21 mIU/L with low free "
               "T4, pituitary enlargement on MRI; moderate symptoms: grade 2 hypophysitis "
               "(CTCAE v5)",
        findings="MRI pituitary: diffuse enlargement with homogeneous enhancement and "
                 "thickened stalk. Visual fields full.",
        mgmt="Start hydrocortisone 20 mg AM / 10 mg PM, then levothyroxine after 5 days. "
             "Hold {drug} until symptoms controlled. Stress-dose steroid education.",
        labs={"TSH": (0.21, "L"), "Cortisol AM": ("2.1 mcg/dL", "L"), "ACTH": ("6 pg/mL", "L")},
        admit=False, action="held", steroid="hydrocortisone"),
    ("myocarditis", 3): dict(
        sx=("chest pain", "shortness of breath", "palpitations"), service="Cardiology",
        hpi="presents with 3 days of exertional chest pressure, dyspnea with minimal exertion "
            "and palpitations",
        detail="troponin I 4.8 ng/mL (ref <0.04), new right bundle branch block, LVEF 40% "
               "(baseline 60%), cardiac MRI with patchy late gadolinium enhancement; symptoms "
               "with minimal exertion: grade 3 immune-mediated myocarditis (CTCAE v5)",
        findings="Coronary angiography without obstructive disease. Concurrent CK 1450 U/L "
                 "without myasthenic features.",
        mgmt="Admit to cardiac ICU with telemetry. Permanently discontinue {drug}. "
             "Methylprednisolone 1 g IV daily for 3 days.",
        labs={"Troponin I": ("4.8 ng/mL", "H"), "CK": ("1450 U/L", "H")}, admit=True,
        action="discontinued", steroid="methylprednisolone",
        course="Troponin trended down after pulse steroids; LVEF recovered to 52%. Discharged "
               "on prednisone 1 mg/kg with slow taper. Immunotherapy permanently discontinued."),
    ("nephritis", 2): dict(
        sx=("weight loss",), service="Nephrology",
        hpi="is asymptomatic; pre-infusion labs showed a rise in creatinine",
        detail="creatinine 2.1 mg/dL from baseline 0.9 mg/dL (2.3 x baseline), sterile pyuria, "
               "no obstruction: grade 2 acute kidney injury due to immune-mediated nephritis "
               "(CTCAE v5)",
        findings="Renal ultrasound normal. Urinalysis with white cells and no casts; urine "
                 "protein/creatinine 0.6 g/g. No NSAID or contrast exposure.",
        mgmt="Hold {drug}. Start prednisone 1 mg/kg/day; recheck creatinine in 1 week.",
        labs={"Creatinine": (2.1, "H")}, admit=False, action="held", steroid="prednisone"),
}


def event_notes(rng, c: dict, term: str, grade: int) -> tuple[list[dict], dict]:
    """Return (note specs, state effects) for one irAE."""
    e = EVENTS[(term, grade)]
    drug = c["regimen"]
    mgmt = e["mgmt"].format(drug=drug)
    label = f"grade {grade} immune-related {term}"
    sev = e.get("spo2")
    ed_title = ("EMERGENCY DEPARTMENT NOTE" if e["admit"] else
                "PROGRESS NOTE - MEDICAL ONCOLOGY (URGENT VISIT)")
    first = "\n".join([
        header(ed_title, c, "{date}", c["ed"] if e["admit"] else c["onc"]),
        f"Chief Complaint: {_cap(term)} workup on {drug}.",
        f"HPI: {c['title']} {c['family']} is a {c['age']}-year-old {c['sex']} on {drug} "
        f"(last dose 2 weeks ago) who {e['hpi']}.",
        ros(rng, e["sx"]), vitals(rng, spo2=sev),
        exam(rng, skin=e.get("skin", "No rash.")),
        f"Assessment: {_cap(e['detail'])}. Attributed to immune checkpoint inhibitor "
        f"({drug}). Differential included infection, which was excluded.",
        f"Plan: {mgmt}",
    ])
    specs = [dict(loinc="34111-5" if e["admit"] else "11506-3", day=0, text=first, evidence=True,
                  author="onc" if not e["admit"] else "gp", setting="EMER" if e["admit"] else "AMB",
                  facets=[f"irae:{term}"])]
    consult = "\n".join([
        header(f"CONSULT NOTE - {e['service'].upper()}", c, "{date}", c["consultant"]),
        f"Reason for consult: Suspected immune-related {term} on {drug}.",
        f"HPI: Patient {e['hpi']}.", f"Findings: {e['findings']}",
        f"Assessment: {_cap(e['detail'])}. Attribution: immune checkpoint inhibitor.",
        f"Recommendations: {mgmt}",
    ])
    specs.append(dict(loinc="11488-4", day=1, text=consult, evidence=True, author="gp",
                      setting="IMP" if e["admit"] else "AMB", facets=[f"irae:{term}"]))
    if e.get("labs"):
        specs.append(dict(loinc="11502-2", day=0, text=lab_report(
            rng, c, "{date}", e["labs"], f"Abnormal values called to oncology; see {label}."),
            evidence=False, author="lab", setting="AMB", facets=[f"irae:{term}", "labs"]))
    if e.get("imaging"):
        specs.append(dict(loinc="18748-4", day=0, text="\n".join([
            header("CT CHEST WITHOUT CONTRAST - HIGH RESOLUTION", c, "{date}", "Radiology"),
            f"Indication: Cough and dyspnea on {drug}; evaluate for pneumonitis.",
            f"Findings: {e['findings']}",
            "Impression: New bilateral ground-glass opacities, organizing pneumonia pattern, "
            "most consistent with checkpoint inhibitor pneumonitis in this clinical context."]),
            evidence=False, author="rad", setting="AMB", facets=[f"irae:{term}", "imaging"]))
    if e["admit"]:
        specs.append(dict(loinc="18842-5", day=5, text="\n".join([
            header("DISCHARGE SUMMARY", c, "{date}", c["gp_name"]),
            f"Admission diagnosis: {label}.",
            f"Hospital course: Admitted with {e['detail']}. {e['findings']} {mgmt} "
            f"{e.get('course', '')}",
            f"Discharge diagnosis: Grade {grade} immune-mediated {term} secondary to {drug}.",
            f"Discharge medications: {e['steroid'] or 'none new'} taper; PJP prophylaxis with "
            "trimethoprim-sulfamethoxazole; pantoprazole.",
            "Follow-up: Oncology clinic in 1 week; labs twice weekly."]),
            evidence=True, author="gp", setting="IMP", facets=[f"irae:{term}"]))
    effects = dict(
        issue=f"Grade {grade} immune-related {term}, onset {{onset}}: {e['action']} {drug}; "
              f"{e['steroid'] or 'no steroids'}.",
        followup=f"{_cap(term)} improving on treatment; {e['steroid'] or 'supportive care'}"
                 f"{' taper' if e['steroid'] else ''} ongoing.",
        action=e["action"], steroid=e["steroid"], sx=e["sx"])
    return specs, effects


DISTRACTORS = {
    "pneumonitis_ruled_out": dict(
        facet="distractor:pneumonia", loinc="34111-5", title="EMERGENCY DEPARTMENT NOTE",
        sx=("cough", "fevers", "shortness of breath"),
        hpi="presents with 3 days of productive cough, fever to 38.9 C and right-sided "
            "pleuritic chest pain",
        assessment="Right lower lobe community-acquired pneumonia. Differential diagnosis "
                   "included checkpoint inhibitor pneumonitis; CT shows lobar consolidation "
                   "with air bronchograms, not ground-glass, sputum culture grew Streptococcus "
                   "pneumoniae. Pneumonitis ruled out; no evidence of immune-related "
                   "pneumonitis.",
        plan="Ceftriaxone and azithromycin, transition to oral amoxicillin-clavulanate. No "
             "steroids. Continue {drug} after recovery.",
        summary="community-acquired pneumonia (S. pneumoniae); pneumonitis considered and "
                "ruled out"),
    "preexisting_hypothyroidism": dict(
        facet="distractor:hypothyroidism", loinc="11506-3",
        title="PROGRESS NOTE - MEDICAL ONCOLOGY", sx=(),
        hpi="has longstanding Hashimoto hypothyroidism diagnosed in 2012, on levothyroxine "
            "88 mcg daily, which predates immunotherapy",
        assessment="Hypothyroidism, pre-existing (2012), not immune-related: TSH 2.1 mIU/L on "
                   "stable levothyroxine; no evidence of immune-related thyroiditis.",
        plan="Continue levothyroxine 88 mcg daily. TSH every 6 weeks while on {drug}.",
        summary="hypothyroidism since 2012 on levothyroxine, predates ICI"),
    "chemo_diarrhea": dict(
        facet="distractor:chemo_diarrhea", loinc="11506-3",
        title="PROGRESS NOTE - MEDICAL ONCOLOGY", sx=("diarrhea",),
        hpi="is receiving second-line FOLFIRI (irinotecan) before planned immunotherapy and "
            "reports 5 loose stools per day for 4 days after cycle 3",
        assessment="Grade 2 diarrhea attributed to irinotecan chemotherapy (FOLFIRI), not "
                   "immune-related; immunotherapy has not been started. Stool C. difficile "
                   "negative.",
        plan="Loperamide 4 mg then 2 mg after each loose stool; irinotecan dose reduction 20%. "
             "Plan to switch to pembrolizumab given MSI-high status.",
        summary="grade 2 irinotecan (FOLFIRI) diarrhea before ICI start"),
    "cirrhosis_lfts": dict(
        facet="distractor:liver", loinc="11506-3", title="PROGRESS NOTE - MEDICAL ONCOLOGY",
        sx=(),
        hpi="has Child-Pugh A cirrhosis from prior hepatitis C (cured 2019) with chronically "
            "mildly elevated transaminases (AST 58, ALT 49) that are unchanged from before "
            "atezolizumab",
        assessment="Stable baseline transaminase elevation from cirrhosis and underlying HCC; "
                   "no evidence of immune-mediated hepatitis.",
        plan="Continue {drug} with bevacizumab. LFTs each cycle.",
        summary="chronic mild transaminase elevation from cirrhosis, unchanged from baseline"),
    "radiation_dermatitis": dict(
        facet="distractor:radiation_dermatitis", loinc="11506-3",
        title="PROGRESS NOTE - MEDICAL ONCOLOGY", sx=("rash",),
        hpi="completed chemoradiation to the neck in 2024; residual hyperpigmentation and "
            "dryness of neck skin within the radiation field, unchanged",
        assessment="Chronic radiation dermatitis, grade 1, confined to radiation field and "
                   "predating nivolumab; not an immune-related rash.",
        plan="Emollients. Continue {drug}.",
        summary="grade 1 radiation dermatitis predating nivolumab"),
    "cdiff_diarrhea": dict(
        facet="distractor:cdiff", loinc="34111-5", title="EMERGENCY DEPARTMENT NOTE",
        sx=("diarrhea", "abdominal pain"),
        hpi="reports 6 watery stools per day for 3 days, two weeks after a course of "
            "clindamycin for a dental infection",
        assessment="Clostridioides difficile infection (toxin positive). Immune-mediated "
                   "colitis was considered; CT shows mild pancolonic wall thickening but C. "
                   "difficile toxin is positive and symptoms resolved on oral vancomycin. "
                   "Colitis ruled out as immune-related; no steroids given.",
        plan="Oral vancomycin 125 mg four times daily for 10 days. Continue {drug} after "
             "resolution.",
        summary="C. difficile infection after clindamycin; immune-mediated colitis ruled out"),
}


def distractor_note(rng, c: dict, kind: str) -> dict:
    d = DISTRACTORS[kind]
    text = "\n".join([
        header(d["title"], c, "{date}", c["ed"] if d["loinc"] == "34111-5" else c["onc"]),
        f"HPI: {c['title']} {c['family']} is a {c['age']}-year-old {c['sex']} with "
        f"{c['cancer_short']} who {d['hpi']}.",
        ros(rng, d["sx"]), vitals(rng, fever="fevers" in d["sx"]), exam(rng),
        f"Assessment: {d['assessment']}",
        f"Plan: {d['plan'].format(drug=c['regimen'])}",
    ])
    return dict(loinc=d["loinc"], text=text, evidence=False, facets=[d["facet"]],
                author="gp" if d["loinc"] == "34111-5" else "onc",
                setting="EMER" if d["loinc"] == "34111-5" else "AMB", summary=d["summary"])

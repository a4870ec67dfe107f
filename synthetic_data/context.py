"""Per-patient context: names, MRNs and the disease-specific phrases used by the templates."""

from __future__ import annotations

import datetime as dt

from . import cohort

WINDOW_START = dt.date(2025, 11, 1)
WINDOW_END = dt.date(2026, 10, 31)

CANCER_TEXT = {
    "melanoma": dict(
        short="metastatic melanoma", specimen="Core needle biopsy, right axillary lymph node",
        micro="Sheets of atypical epithelioid melanocytes with prominent nucleoli, mitoses "
              "8/mm2, focal necrosis.",
        path_dx="Metastatic malignant melanoma involving lymph node.",
        markers="SOX10 positive, Melan-A positive, HMB-45 positive. BRAF V600E/K not detected. "
                "PD-L1 (22C3) 15%.",
        findings="Right axillary adenopathy 2.8 cm and two pulmonary nodules (1.4 and 0.9 cm).",
        baseline="Metastatic melanoma to right axillary nodes and lungs.",
        presentations=["Noticed an enlarging right axillary mass over 2 months.",
                       "A changing pigmented lesion on the back was excised 1 year ago; now "
                       "new axillary adenopathy."]),
    "nsclc": dict(
        short="metastatic lung adenocarcinoma",
        specimen="EBUS-guided FNA, station 4R lymph node, and CT-guided left upper lobe biopsy",
        micro="Malignant glandular cells forming acini with mucin production.",
        path_dx="Adenocarcinoma of lung origin (TTF-1 positive, napsin A positive).",
        markers="PD-L1 (22C3) TPS 80%. NGS: KRAS G12C; EGFR, ALK, ROS1, RET, MET negative.",
        findings="Left upper lobe mass 4.1 cm with mediastinal adenopathy and two adrenal "
                 "metastases.",
        baseline="Left upper lobe primary with nodal and adrenal metastases, stage IVB.",
        presentations=["Presented with 3 months of cough and 6 kg weight loss.",
                       "Found on CT performed for hemoptysis."]),
    "rcc": dict(
        short="metastatic clear cell renal cell carcinoma",
        specimen="CT-guided biopsy, left lung nodule",
        micro="Nests of tumor cells with clear cytoplasm and delicate vasculature.",
        path_dx="Metastatic clear cell renal cell carcinoma, ISUP grade 3.",
        markers="PAX8 positive, CA-IX positive, CD10 positive.",
        findings="Right renal mass 7.2 cm, multiple pulmonary nodules up to 1.8 cm.",
        baseline="Right renal primary with pulmonary metastases.",
        presentations=["Presented with gross hematuria and flank pain.",
                       "Incidental renal mass on CT for abdominal pain; lung nodules found."]),
    "urothelial": dict(
        short="metastatic urothelial carcinoma",
        specimen="Transurethral resection of bladder tumor",
        micro="High-grade papillary urothelial carcinoma invading muscularis propria.",
        path_dx="Invasive high-grade urothelial carcinoma, pT2.",
        markers="GATA3 positive. PD-L1 (SP142) IC 5%.",
        findings="Bladder wall thickening, pelvic adenopathy, two liver lesions.",
        baseline="Bladder primary with nodal and hepatic metastases.",
        presentations=["Presented with painless hematuria.",
                       "Recurrent urinary tract infections led to cystoscopy."]),
    "hcc": dict(
        short="unresectable hepatocellular carcinoma",
        specimen="Ultrasound-guided liver biopsy, segment 7",
        micro="Trabecular hepatocellular neoplasm with thickened plates and pseudoglands.",
        path_dx="Hepatocellular carcinoma, moderately differentiated, background cirrhosis.",
        markers="Glypican-3 positive, HepPar-1 positive. AFP 840 ng/mL.",
        findings="Multifocal liver lesions up to 6 cm with portal vein branch invasion; "
                 "cirrhotic liver morphology.",
        baseline="Multifocal HCC with segmental portal vein invasion.",
        presentations=["Found on surveillance ultrasound for cirrhosis.",
                       "Presented with right upper quadrant pain."]),
    "crc_msi": dict(
        short="metastatic MSI-high colon cancer",
        specimen="Colonoscopic biopsy, sigmoid colon mass", micro="Invasive adenocarcinoma with "
        "tumor-infiltrating lymphocytes and mucinous features.",
        path_dx="Adenocarcinoma, moderately differentiated, mismatch-repair deficient.",
        markers="Loss of MLH1 and PMS2 expression (dMMR/MSI-H). KRAS wild-type, BRAF V600E "
                "negative.",
        findings="Sigmoid primary resected; multiple hepatic metastases up to 3 cm.",
        baseline="Hepatic metastases from colon primary.",
        presentations=["Previously treated with FOLFOX and FOLFIRI for metastatic disease."]),
    "hnscc": dict(
        short="recurrent oropharyngeal squamous cell carcinoma",
        specimen="Biopsy, left neck mass", micro="Keratinizing squamous cell carcinoma.",
        path_dx="Squamous cell carcinoma, keratinizing, p16 negative.",
        markers="p16 negative. PD-L1 CPS 30.",
        findings="Recurrent left level II nodal mass 3.2 cm; post-radiation changes in neck.",
        baseline="Recurrent nodal disease in left neck; no distant metastases.",
        presentations=["Completed cisplatin chemoradiation in 2024; new neck mass."]),
}

AUTHORS = {"onc": "prac-onc-1", "nurse": "prac-nurse-1", "psych": "prac-psych-1",
           "gp": "prac-gp-1", "lab": "prac-gp-1", "rad": "prac-gp-1", "admin": "prac-admin-1"}


def age_at(birth: str, on: dt.date = WINDOW_START) -> int:
    b = dt.date.fromisoformat(birth)
    return on.year - b.year - ((on.month, on.day) < (b.month, b.day))


def build_context(p: dict, idx: int, rng, families: list[str]) -> dict:
    given = p.get("given") or rng.choice(cohort.GIVEN[p["sex"]])
    family = p.get("family") or families[idx % len(families)]
    c = {
        "pid": p["id"], "given": given, "family": family, "full": f"{given} {family}",
        "mrn": f"SBX{100200 + idx * 17:07d}", "birth": p["birth"],
        "title": "Mr." if p["sex"] == "male" else "Ms.",
        "sex": "man" if p["sex"] == "male" else "woman", "age": age_at(p["birth"]),
        "onc": "Adaeze Okafor, MD (Medical Oncology)", "nurse": "Maja Lindqvist, RN",
        "psych": "Samir Haddad, MD (Psychiatry)", "gp_name": "Thomas Brennan, MD (Internal "
        "Medicine)", "ed": "Thomas Brennan, MD (covering, Emergency Department)",
        "consultant": "Thomas Brennan, MD (on behalf of consult service)",
        "city": cohort.CITIES[idx % len(cohort.CITIES)],
        "problems": p.get("problems", []),
        "social": ["Former smoker, 30 pack-years, quit 2015. Drinks socially.",
                   "Never smoker. Retired teacher, lives with spouse.",
                   "Quit smoking 10 years ago. Works as an electrician."],
    }
    if "cancer" in p:
        t = CANCER_TEXT[p["cancer"]]
        start = dt.date.fromisoformat(p["start"])
        c.update({
            "cancer_desc": cohort.CANCERS[p["cancer"]][2], "cancer_short": t["short"],
            "dx_date": (start - dt.timedelta(days=30)).strftime("%B %Y"),
            "regimen": cohort.REGIMEN_LABEL[p["regimen"]], "start": p["start"],
            "specimen": t["specimen"], "micro": t["micro"], "path_dx": t["path_dx"],
            "markers": t["markers"], "imaging_findings": t["findings"],
            "baseline_imp": t["baseline"], "presentations": t["presentations"],
            "pmh": rng.choice(["Hypertension; hyperlipidemia.", "Type 2 diabetes; GERD.",
                               "Osteoarthritis of knees; hypertension."]),
            "home_meds": rng.choice(["Amlodipine 5 mg daily; atorvastatin 20 mg daily.",
                                     "Metformin 500 mg twice daily; omeprazole 20 mg daily.",
                                     "Lisinopril 10 mg daily; acetaminophen as needed."]),
        })
        kinds = {d["kind"] for d in p.get("distractors", [])}
        extra = ""
        if "preexisting_hypothyroidism" in kinds:
            extra += " Comorbid Hashimoto hypothyroidism since 2012 on levothyroxine 88 mcg."
            c["pmh"] += " Hypothyroidism (Hashimoto) since 2012."
        if "cirrhosis_lfts" in kinds:
            extra += " Background Child-Pugh A cirrhosis (treated hepatitis C)."
        if "radiation_dermatitis" in kinds:
            extra += " Prior cisplatin chemoradiation (2024)."
        if "chemo_diarrhea" in kinds:
            extra += " Prior FOLFOX and FOLFIRI chemotherapy."
        c["history_extra"] = extra
    return c

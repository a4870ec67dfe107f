"""Who is in the synthetic cohort: practitioners, oncology and general-medicine patients.

Everything here is declarative; the note text lives in ``notes.py`` and the timeline and
FHIR resources are built in ``generate.py``. Days in ``events``/``distractors`` are offsets
from the first immune checkpoint inhibitor (ICI) dose (negative: before ICI start).
"""

from __future__ import annotations

ORG_ID = "org-sandbox-hospital"
ORG_NAME = "Sandbox General Hospital"

# id, family, given, prefix, role code, role display, SNOMED specialty, specialty display, title
PRACTITIONERS = [
    ("prac-onc-1", "Okafor", "Adaeze", "Dr.", "doctor", "Doctor",
     "394593009", "Medical oncology", "oncologist"),
    ("prac-nurse-1", "Lindqvist", "Maja", "", "nurse", "Nurse",
     "394593009", "Medical oncology", "oncology nurse"),
    ("prac-psych-1", "Haddad", "Samir", "Dr.", "doctor", "Doctor",
     "394587001", "Psychiatry", "psychiatrist"),
    ("prac-gp-1", "Brennan", "Thomas", "Dr.", "doctor", "Doctor",
     "419192003", "Internal medicine", "general internist"),
    ("prac-admin-1", "Castillo", "Renata", "", "ict", "ICT professional",
     "394733009", "Medical specialty--OTHER--NOT LISTED", "clinical informatics administrator"),
]

# name, RxNorm ingredient code
DRUGS = {
    "pembrolizumab": ("pembrolizumab 200 mg IV every 3 weeks", "1547545"),
    "nivolumab": ("nivolumab 480 mg IV every 4 weeks", "1597876"),
    "ipilimumab": ("ipilimumab 3 mg/kg IV every 3 weeks for 4 doses", "1094833"),
    "nivolumab-induction": ("nivolumab 1 mg/kg IV every 3 weeks for 4 doses with ipilimumab",
                            "1597876"),
    "atezolizumab": ("atezolizumab 1200 mg IV every 3 weeks", "1792776"),
}
REGIMENS = {
    "pembrolizumab": ["pembrolizumab"],
    "nivolumab": ["nivolumab"],
    "ipi_nivo": ["ipilimumab", "nivolumab-induction"],
    "atezolizumab": ["atezolizumab"],
}
REGIMEN_LABEL = {
    "pembrolizumab": "pembrolizumab",
    "nivolumab": "nivolumab",
    "ipi_nivo": "ipilimumab plus nivolumab",
    "atezolizumab": "atezolizumab",
}

# term -> (organ, SNOMED code, display)
IRAE_TERMS = {
    "colitis": ("gastrointestinal", "64226004", "Colitis"),
    "hepatitis": ("hepatic", "128241005", "Inflammatory disease of liver"),
    "pneumonitis": ("pulmonary", "205237003", "Pneumonitis"),
    "hypothyroidism": ("endocrine", "40930008", "Hypothyroidism"),
    "dermatitis": ("dermatologic", "182782007", "Dermatitis"),
    "hypophysitis": ("endocrine", "74791000", "Hypophysitis"),
    "myocarditis": ("cardiac", "50920009", "Myocarditis"),
    "nephritis": ("renal", "52845002", "Nephritis"),
}

CANCERS = {
    "melanoma": ("372244006", "Malignant melanoma, stage IV",
                 "stage IV cutaneous melanoma, BRAF V600 wild-type, with lung and nodal "
                 "metastases"),
    "nsclc": ("254637007", "Non-small cell lung cancer",
              "stage IV lung adenocarcinoma, PD-L1 TPS 80%, EGFR/ALK/ROS1 negative"),
    "rcc": ("702391001", "Renal cell carcinoma, clear cell",
            "metastatic clear cell renal cell carcinoma, IMDC intermediate risk"),
    "urothelial": ("399326009", "Urothelial carcinoma of bladder",
                   "metastatic urothelial carcinoma of the bladder, cisplatin-ineligible"),
    "hcc": ("25370001", "Hepatocellular carcinoma",
            "unresectable hepatocellular carcinoma, Child-Pugh A, BCLC stage C"),
    "crc_msi": ("363406005", "Colorectal cancer, MSI-high",
                "metastatic MSI-high adenocarcinoma of the sigmoid colon"),
    "hnscc": ("255055008", "Squamous cell carcinoma of head and neck",
              "recurrent p16-negative squamous cell carcinoma of the oropharynx"),
}

# Each oncology patient. events -> gold; distractors -> explicitly NOT events.
ONCOLOGY = [
    dict(id="pat-onc-01", sex="male", birth="1957-03-14", cancer="melanoma", regimen="ipi_nivo",
         start="2025-11-17",
         events=[dict(term="colitis", grade=3, day=44), dict(term="hypophysitis", grade=2, day=97)],
         distractors=[], labels=["psy"]),
    dict(id="pat-onc-02", sex="female", birth="1961-08-02", cancer="nsclc", regimen="pembrolizumab",
         start="2025-11-24", events=[dict(term="pneumonitis", grade=2, day=118)], distractors=[],
         labels=[]),
    dict(id="pat-onc-03", sex="male", birth="1954-12-21", cancer="rcc", regimen="nivolumab",
         start="2025-12-01", events=[dict(term="hepatitis", grade=3, day=71)], distractors=[],
         labels=["restricted"]),
    dict(id="pat-onc-04", sex="male", birth="1949-05-09", cancer="nsclc", regimen="pembrolizumab",
         start="2025-12-08", events=[], distractors=[dict(kind="pneumonitis_ruled_out", day=96)],
         labels=[]),
    dict(id="pat-onc-05", sex="female", birth="1970-01-27", cancer="melanoma", regimen="nivolumab",
         start="2025-11-10",
         events=[dict(term="dermatitis", grade=2, day=30), dict(term="hypothyroidism", grade=2,
                                                                day=124)],
         distractors=[], labels=[]),
    dict(id="pat-onc-06", sex="female", birth="1952-06-30", cancer="urothelial",
         regimen="atezolizumab", start="2025-12-15", events=[],
         distractors=[dict(kind="preexisting_hypothyroidism", day=0)], labels=[]),
    dict(id="pat-onc-07", sex="male", birth="1966-10-11", cancer="crc_msi", regimen="pembrolizumab",
         start="2026-01-26", events=[], distractors=[dict(kind="chemo_diarrhea", day=-49)],
         labels=[]),
    dict(id="pat-onc-08", sex="female", birth="1959-04-18", cancer="melanoma", regimen="ipi_nivo",
         start="2025-12-22",
         events=[dict(term="hepatitis", grade=2, day=38),
                 dict(term="myocarditis", grade=3, day=64)],
         distractors=[], labels=[]),
    dict(id="pat-onc-09", sex="male", birth="1956-02-05", cancer="hcc", regimen="atezolizumab",
         start="2025-11-20", events=[], distractors=[dict(kind="cirrhosis_lfts", day=0)],
         labels=[]),
    dict(id="pat-onc-10", sex="female", birth="1963-09-12", cancer="nsclc", regimen="atezolizumab",
         start="2026-01-05", events=[dict(term="hypothyroidism", grade=2, day=84)],
         distractors=[dict(kind="pneumonitis_ruled_out", day=150)], labels=[]),
    dict(id="pat-onc-11", sex="male", birth="1960-07-07", cancer="hnscc", regimen="nivolumab",
         start="2025-12-03", events=[], distractors=[dict(kind="radiation_dermatitis", day=0)],
         labels=[]),
    dict(id="pat-onc-12", sex="male", birth="1968-11-23", cancer="melanoma",
         regimen="pembrolizumab",
         start="2025-11-13", events=[dict(term="colitis", grade=2, day=88)],
         distractors=[], labels=["part2"]),
    dict(id="pat-onc-13", sex="female", birth="1955-03-03", cancer="rcc", regimen="ipi_nivo",
         start="2026-01-12", events=[dict(term="nephritis", grade=2, day=55)], distractors=[],
         labels=[]),
    dict(id="pat-onc-14", sex="female", birth="1958-12-09", cancer="nsclc", regimen="pembrolizumab",
         start="2025-12-29", events=[], distractors=[dict(kind="cdiff_diarrhea", day=77)],
         labels=[]),
]

# General medicine: problems drive the progress-note content (see notes.GEN_PROBLEMS).
GENERAL = [
    dict(id="pat-gen-01", sex="female", birth="1964-02-14", problems=["diabetes", "hypertension"],
         hostile=["invalid_utf8"], labels=[]),
    dict(id="pat-gen-02", sex="male", birth="1950-09-30", problems=["heart_failure", "afib"],
         hostile=["html_script"], labels=[]),
    dict(id="pat-gen-03", sex="male", birth="1947-01-19", problems=["copd", "hypertension"],
         hostile=["long_note"], labels=[]),
    dict(id="pat-gen-04", sex="male", birth="1972-05-05", problems=["alcohol_use", "ckd"],
         hostile=[], labels=["part2"]),
    dict(id="pat-gen-05", sex="female", birth="1958-07-22", problems=["ckd", "gout"],
         hostile=[], labels=[]),
    dict(id="pat-gen-06", sex="female", birth="1981-10-08", problems=["depression", "hypertension"],
         hostile=[], labels=["psy"]),
]

CANARY = dict(id="pat-canary", sex="male", birth="1966-06-06", problems=["hypertension",
              "hyperlipidemia"], hostile=[], labels=[], given="Zyxwend", family="Canarywhistle")

GIVEN = {
    "male": ["James", "Robert", "Luis", "Wei", "Kwame", "Daniel", "Anders", "Hiroshi", "Mateo",
             "Patrick", "Omar", "Viktor", "George", "Samuel"],
    "female": ["Maria", "Linda", "Aisha", "Mei", "Sofia", "Ingrid", "Grace", "Fatima", "Elena",
               "Nora", "Priya", "Rosa", "Helen", "Ruth"],
}
FAMILY = ["Alvarez", "Bergstrom", "Chen", "Dubois", "Eriksen", "Fitzgerald", "Gonzaga", "Hoffmann",
          "Ivanova", "Jablonski", "Kowalczyk", "Larkspur", "Moreau", "Nakamura", "Oyelaran",
          "Petrakis", "Quintero", "Rasmussen", "Sandoval", "Takahashi", "Underwood", "Vasquez"]
CITIES = [("Springfield", "IL", "62701"), ("Madison", "WI", "53703"), ("Ann Arbor", "MI", "48104"),
          ("Columbus", "OH", "43215"), ("Rochester", "MN", "55901")]

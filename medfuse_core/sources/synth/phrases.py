"""Word banks for synthetic notes: planted phrases, distractors, and disease-free filler.

Only diseases whose route includes notes have phrases here. Single-route diseases of other
modalities (renal failure, electrolytes, dysrhythmia, pleural disease) have no words at all, and no
filler may name them (`FORBIDDEN` lists what a test scans every note for). Every planted phrase
contains one of its disease's `KEYWORDS`, so a span can be checked without a clinician.
"""

from __future__ import annotations

# Disease key -> words of which every planted span contains at least one (case-insensitive).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "chf": ("heart failure", "CHF", "HFrEF", "furosemide", "Lasix"),
    "pneumonia": ("pneumonia", "PNA", "productive cough"),
    "sepsis": ("sepsis", "septic"),
    "diabetes": ("diabetes", "DM2", "T2DM", "metformin", "insulin"),
    "hypertension": ("hypertension", "HTN", "lisinopril", "amlodipine", "losartan", "hydralazine"),
    "copd": ("COPD", "chronic obstructive pulmonary disease", "emphysema", "albuterol", "tiotropium",
             "inhaler", "home O2", "home oxygen"),
}

# Words that must never appear in any note: they would leak a single-route disease into notes.
# Short ones are matched as whole words by the tests.
FORBIDDEN: tuple[str, ...] = (
    "renal", "kidney", "creatinine", "AKI", "ARF", "BUN", "dialysis", "nephro",
    "sodium", "potassium", "natremia", "kalemia", "electrolyte", "lytes",
    "arrhythm", "dysrhythm", "fibrillation", "afib", "palpitation", "irregular", "tachycard", "RVR",
    "SVT", "rhythm", "pleur", "effusion", "pneumothorax", "collapse", "atelectasis", "chest tube",
    "thoracentesis",
)

# Past-history mentions (PMH bullet / HPI list), medication lines, plan problems, nursing remarks.
HISTORY: dict[str, tuple[str, ...]] = {
    "chf": ("CHF", "congestive heart failure", "HFrEF (EF 30%)", "chronic systolic heart failure"),
    "diabetes": ("type 2 diabetes", "DM2", "diabetes mellitus", "T2DM, diet and oral agents"),
    "hypertension": ("hypertension", "HTN", "essential hypertension"),
    "copd": ("COPD", "COPD on 2L home O2", "chronic obstructive pulmonary disease", "emphysema"),
}
MEDICATIONS: dict[str, tuple[str, ...]] = {
    "chf": ("furosemide 40 mg PO daily", "Lasix 20 mg PO BID"),
    "diabetes": ("metformin 1000 mg PO BID", "metformin 500 mg PO daily", "insulin glargine 18 units qHS"),
    "hypertension": ("lisinopril 20 mg PO daily", "amlodipine 10 mg PO daily", "losartan 50 mg PO daily"),
    "copd": ("albuterol inhaler 2 puffs q4h PRN", "tiotropium inhaler daily", "home oxygen 2L NC"),
}
PROBLEMS: dict[str, tuple[str, ...]] = {
    "chf": ("Acute on chronic CHF", "Decompensated heart failure", "CHF exacerbation"),
    "pneumonia": ("Community-acquired pneumonia", "Pneumonia", "RLL PNA"),
    "sepsis": ("Sepsis", "Septic shock", "Sepsis, source likely pulmonary vs urinary"),
    "diabetes": ("DM2", "Type 2 diabetes", "T2DM"),
    "hypertension": ("HTN", "Hypertension", "Essential hypertension"),
    "copd": ("COPD", "COPD, stable", "Emphysema"),
}
PLAN_EXTRA: dict[str, tuple[str, ...]] = {  # a second planted phrase inside the plan line
    "chf": ("IV furosemide", "Lasix drip"),
    "pneumonia": ("productive cough",),
    "sepsis": ("sepsis bundle",),
    "diabetes": ("hold metformin", "insulin sliding scale"),
    "hypertension": ("home lisinopril", "home amlodipine"),
    "copd": ("home inhalers", "home O2 at 2L"),
}
NURSING: dict[str, tuple[str, ...]] = {
    "chf": ("diuresing well with IV Lasix", "CHF education given"),
    "pneumonia": ("productive cough with thick yellow sputum", "productive cough, encouraged IS"),
    "sepsis": ("on levophed for septic shock", "sepsis precautions continued"),
    "diabetes": ("fingersticks covered per insulin sliding scale", "diabetes teaching done"),
    "hypertension": ("PRN hydralazine given x1 for HTN", "home lisinopril given"),
    "copd": ("inhaler given by RT", "on home O2 at 2L, at baseline"),
}
HPI_ACUTE: dict[str, tuple[str, ...]] = {
    "pneumonia": ("productive cough", "productive cough and sputum"),
    "sepsis": ("concern for sepsis", "possible sepsis"),
    "chf": ("CHF exacerbation", "worsening heart failure"),
}

# Distractors: mention a disease but are not evidence of it (negated) or not about the patient (family).
NEGATED: dict[str, tuple[str, ...]] = {
    "chf": ("no evidence of heart failure", "no known history of CHF"),
    "pneumonia": ("no evidence of pneumonia", "pneumonia ruled out"),
    "sepsis": ("does not meet sepsis criteria", "low suspicion for sepsis"),
    "diabetes": ("no history of diabetes", "denies diabetes"),
    "hypertension": ("no known hypertension", "denies HTN"),
    "copd": ("no history of COPD", "denies COPD"),
}
FAMILY: dict[str, tuple[str, ...]] = {
    "chf": ("Father had heart failure.", "Brother with CHF."),
    "diabetes": ("Mother had diabetes.", "Sister with type 2 diabetes."),
    "hypertension": ("Father with hypertension.", "Mother had HTN."),
    "copd": ("Father had emphysema.", "Mother with COPD."),
}

# Filler: nothing here names any of the ten diseases.
COMPLAINTS = ("shortness of breath", "weakness", "fall at home", "altered mental status",
              "abdominal pain", "chest pain", "fatigue", "dizziness", "poor PO intake")
OTHER_HISTORY = ("hyperlipidemia", "GERD", "osteoarthritis", "hypothyroidism", "BPH", "depression",
                 "s/p cholecystectomy", "gout", "anemia of chronic disease", "s/p R TKA")
OTHER_MEDS = ("atorvastatin 40 mg PO daily", "aspirin 81 mg PO daily", "omeprazole 20 mg PO daily",
              "levothyroxine 75 mcg PO daily", "sertraline 50 mg PO daily", "acetaminophen 650 mg PO q6h PRN",
              "tamsulosin 0.4 mg PO qHS", "allopurinol 100 mg PO daily")
SOCIAL = ("Lives with wife. Former smoker, quit 10 yrs ago. Occasional EtOH.",
          "Lives alone, independent in ADLs. Denies tobacco, EtOH, illicit drugs.",
          "Lives with daughter. Retired teacher. No tobacco.",
          "Lives with husband. Remote tobacco use. No EtOH.")
ROS = ("Denies headache, vision changes. No nausea/vomiting. No dysuria.",
       "ROS otherwise negative except as per HPI.",
       "Denies chills, night sweats. No diarrhea. No rash.")
EXAM = ("Gen: NAD, A&Ox3. HEENT: MMM. Neck: supple. Abd: soft, NT/ND. Ext: WWP.",
        "Gen: tired appearing but in no acute distress. Abd: soft, nontender. Ext: no edema.",
        "Gen: comfortable. Neuro: grossly intact, moving all extremities. Skin: no rash.")
GENERIC_PLAN = ("continue current management.", "monitor closely.", "reassess in AM.",
                "will discuss with team.", "as per primary team.")
FILLER_PLAN = ("# Nutrition: cardiac diet, advance as tolerated.", "# PPx: heparin SC, PPI.",
               "# Code: full code (confirmed with pt).", "# Dispo: remain in ICU for now.",
               "# Access: PIV x2.", "# Pain: acetaminophen PRN.")
NURSING_LINES = ("Neuro: A&Ox3, MAE, follows commands.", "Neuro: alert, oriented x2, pleasant.",
                 "CV: hemodynamically stable, pulses palpable.", "Resp: lungs coarse bilaterally, on RA.",
                 "Resp: LS diminished at bases, on 2L NC.", "GI/GU: abd soft, +BS, voiding via foley.",
                 "Skin: intact, turned q2h.", "Social: family at bedside, updated on plan of care.",
                 "Activity: OOB to chair with assist x1.")
NURSING_PLAN = ("Plan: continue to monitor, update team with changes.", "Plan: cont current POC.",
                "Plan: monitor and support, pain control.")

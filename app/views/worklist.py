"""Worklist: the patients of the current source, highest predicted risk first when a model is loaded.

Filters (disease, minimum risk, modalities present) only narrow the table; one click on a row opens
the patient's review. Without a model the list is the plain cohort, with the reason said once.
"""

import pandas as pd
import streamlit as st

from app.components.worklist import MODALITY_CODES, filter_worklist, short_label, with_risk, worklist_frame
from app.components.patient_header import MODALITY_NAMES
from app.state import current_checkpoint, current_source, load_cohort_report, predictor_or_reason, scores_or_none
from medfuse_core.record import MODALITIES

OPEN_KEY = "worklist_open"  # the review a row click asked for: {"patient": ..., "disease": ...}
SHOWN_KEY = "worklist_shown"  # the patient ids of the table's rows as drawn, and the disease it is sorted by


def _open_selected() -> None:
    """on_select: note the clicked row's patient (and the disease the list is sorted by) for the rerun, which
    then opens the review before building this page again (issue 18: rebuilding the worklist first was
    ~0.1-0.2 s of every patient open)."""
    rows = st.session_state["worklist_table"].selection.rows
    ids, disease = st.session_state.get(SHOWN_KEY, ([], None))
    if rows and 0 <= rows[0] < len(ids):
        st.session_state[OPEN_KEY] = {"patient": ids[rows[0]], **({"disease": disease} if disease else {})}


wanted = st.session_state.pop(OPEN_KEY, None)
if wanted:  # one click opens the review; the page reads ?patient= / session state
    st.session_state["patient_id"] = wanted["patient"]
    st.switch_page("views/patient.py", query_params=wanted)

source = current_source()
checkpoint = current_checkpoint()
cohort = load_cohort_report(str(source))
records = cohort.records

st.title("Patients")
st.caption(f"Source: `{source}` · {len(records)} patients · "
           + ", ".join(f"{code} = {name}" for name, code in MODALITY_CODES.items()))
if cohort.unreadable:  # said, never dropped in silence; plain text cells (nothing from the data is rendered)
    n = len(cohort.unreadable)
    st.warning(f"{n} bundle folder{'s' if n != 1 else ''} could not be read and {'are' if n != 1 else 'is'} "
               "not listed; see why below.", icon=":material/warning:")
    with st.expander(f"Folders not listed ({n})"):
        st.dataframe(pd.DataFrame([{"folder": u.folder, "why": u.reason} for u in cohort.unreadable]),
                     hide_index=True, width="stretch", key="wl_unreadable")
if not records:
    st.warning("No readable patient bundles in this source.")
    st.stop()

frame = worklist_frame(records)
scores = scores_or_none(str(source), checkpoint)
disease = None
if scores is None:
    st.info(predictor_or_reason(checkpoint)[1], icon=":material/info:")
    c1, c2 = st.columns([1, 1])
    modalities = c1.multiselect("Must have", MODALITIES, format_func=lambda m: MODALITY_NAMES[m], key="wl_modalities")
    shown = filter_worklist(frame, 0.0, modalities)
    risk_config = {}
else:
    labels = next(iter(scores.values())).labels if scores else []
    c1, c2, c3 = st.columns([2, 1, 1])
    disease = c1.selectbox("Risk for", [None, *labels], format_func=lambda d: "any disease (highest)" if d is None else d,
                           key="wl_disease", help="Sort by the calibrated probability of this disease, or by "
                                                  "each patient's highest one.")
    min_risk = c2.slider("Minimum risk", 0.0, 1.0, 0.0, 0.05, key="wl_min_risk", format="%.2f")
    modalities = c3.multiselect("Must have", MODALITIES, format_func=lambda m: MODALITY_NAMES[m], key="wl_modalities")
    review_only = st.checkbox("Only patients who need review", key="wl_review_only",
                              help="Data unlike the training data, or a decision the model is uncertain about.")
    shown = filter_worklist(with_risk(frame, scores, disease), min_risk, modalities, needs_review=review_only)
    risk_config = {
        "review": st.column_config.TextColumn("review", width=110, help="Why the patient needs review: 'unusual' "
                                              "data (unlike the training data, left out of the prediction), or an "
                                              "'uncertain' decision (its likely range crosses the threshold)."),
        "interval": st.column_config.TextColumn("likely range", width=80, help="Where the risk is likely to lie "
                                                "(the checkpoint's stated level): wide when the model knows less."),
        "risk": st.column_config.ProgressColumn(
            "risk", format="percent", min_value=0.0, max_value=1.0, width=96,
            help="Calibrated probability: the patient's highest over all diseases, or of the chosen disease."),
        "for": st.column_config.TextColumn("for", width=160, help="The disease the risk is for."),
    }
    if disease:
        st.caption(f"Sorted by the probability of {short_label(disease)}.")

st.caption(f"{len(shown)} of {len(frame)} patients shown · select a row to open that patient's review.")
if shown.empty:
    st.warning("No patient matches the filters.")
    st.stop()
# Column order and widths chosen so every column fits 1440 px beside the sidebar (issue 18), the risk's
# likely range and the review reason included (issue 17): the `data` column holds the modalities with their
# counts (the `modalities` column stays for filtering); age and sex share a column; how many diseases are
# above threshold stays in the frame, not shown, for room.
shown = shown.assign(**{"age · sex": [f"{'' if pd.isna(a) else int(a)} {x}".strip() for a, x in zip(shown["age"], shown["sex"])]})
st.dataframe(
    shown,
    hide_index=True,
    width="stretch",
    column_order=[c for c in ("patient", "risk", "interval", "for", "review", "age · sex", "admitted", "data",
                              "warnings") if c in shown.columns],
    column_config={
        "patient": st.column_config.TextColumn("patient", width=72),
        "age · sex": st.column_config.TextColumn("age · sex", width=58),
        "admitted": st.column_config.DatetimeColumn("admitted", format="YYYY-MM-DD HH:mm", width=120),
        "data": st.column_config.TextColumn("data", width=172, help="LAB lab results · NOTE notes · VIT vitals · "
                                            "CXR chest X-rays, with how many; absent ones are left out"),
        "warnings": st.column_config.NumberColumn("warnings", width=62, help="Loading warnings of this bundle."),
        **risk_config,
    },
    on_select=_open_selected,
    selection_mode="single-row",
    key="worklist_table",
)
# what a click on a row opens (_open_selected): sorted by a disease, the review opens on it
st.session_state[SHOWN_KEY] = ([str(p) for p in shown["patient"]], disease if scores is not None else None)

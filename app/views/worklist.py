"""Worklist: the patients of the current source (the scored worklist comes with the model)."""

import streamlit as st

from app.components.worklist import MODALITY_CODES, worklist_frame
from app.state import current_source, load_cohort

source = current_source()
records = load_cohort(str(source))

st.title("Patients")
st.caption(f"Source: `{source}` · {len(records)} patients · "
           + ", ".join(f"{code} = {name}" for name, code in MODALITY_CODES.items()))
if not records:
    st.warning("No readable patient bundles in this source.")
else:
    frame = worklist_frame(records)
    st.caption("Select a row to open that patient's review.")
    event = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "age": st.column_config.NumberColumn("age", format="%d"),
            "admitted": st.column_config.DatetimeColumn("admitted", format="YYYY-MM-DD HH:mm"),
            "labs": st.column_config.NumberColumn("lab results"),
        },
        on_select="rerun",
        selection_mode="single-row",
        key="worklist_table",
    )
    if event.selection.rows:  # one click opens the review; the page reads ?patient= / session state
        patient_id = str(frame.iloc[event.selection.rows[0]]["patient"])
        st.session_state["patient_id"] = patient_id
        st.switch_page("views/patient.py", query_params={"patient": patient_id})

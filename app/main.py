"""MEDFuse Lens dashboard: `streamlit run app/main.py`."""

import streamlit as st

from app.state import current_source, demo_dir

st.set_page_config(page_title="MEDFuse Lens", page_icon="🩺", layout="wide")

pages = [
    st.Page("views/worklist.py", title="Patients", icon=":material/groups:", default=True),
    st.Page("views/patient.py", title="Patient review", icon=":material/person:", url_path="patient"),
]
st.sidebar.markdown("**MEDFuse Lens**  \nmultimodal prediction, explained")
if current_source() == demo_dir():
    st.info("Demo data: every patient here is synthetic, generated with planted ground truth. "
            "Not for clinical use.", icon=":material/science:")
st.navigation(pages).run()

"""MEDFuse Lens dashboard: `streamlit run app/main.py`.

Environment: MEDFUSE_LENS_SOURCE (a folder of patient bundles; default the synthetic demo cohort),
MEDFUSE_LENS_MIMIC3 (a folder of MIMIC-III tables offered as a source), MEDFUSE_LENS_CHECKPOINT (a run folder; default assets/demo_model when present, else no predictions),
MEDFUSE_LENS_HOME (caches: demo cohort, sentence embeddings), MEDFUSE_LENS_TORCH_THREADS (PyTorch intra-op
threads for one patient's explanation; default 1, see medfuse_core/runtime/threads.py interactive_threads).
MEDFUSE_LENS_PRECOMPUTE (0: no background explanations; app/explanations.py).
Sign-in and audit (app/auth.py): MEDFUSE_LENS_USERS (a users file; serve with `streamlit run app/server.py`,
which binds sessions to the browser: here local sign-in is refused unless MEDFUSE_LENS_UNBOUND_SIGN_IN=1, for
development), MEDFUSE_LENS_DEV (1: no sign-in, loopback only), MEDFUSE_LENS_AUDIT_LOG (the audit log; default
audit.log in MEDFUSE_LENS_HOME).
"""

import os
from pathlib import Path

from app.memory import limit_arenas

limit_arenas()  # sessions are threads of this process: see app/memory.py (idempotent on reruns)

import streamlit as st  # noqa: E402

from app.explanations import PAGE_RUNS
from app.heap import freeze_after_first_run
from app.auth import DEV_BANNER, role_allows, sidebar_account, sign_in
from app.state import (SOURCE_ENV, current_checkpoint, current_source, default_checkpoint, default_mimic3_tables,
                       demo_dir, device_in_use, mimic3_bundles, model_is_synthetic)
from medfuse_core.problems import DataError

st.set_page_config(page_title="MEDFuse Lens", page_icon="🩺", layout="wide")
viewer = sign_in()  # draws the sign-in and stops here until someone is signed in


def _page(path: str, role: str, **kwargs) -> st.Page:
    """A page for `role` and above; hidden from the menu otherwise (the page itself then says "not permitted")."""
    return st.Page(path, visibility="visible" if role_allows(viewer.role, role) else "hidden", **kwargs)


pages = [
    _page("views/worklist.py", "clinician", title="Patients", icon=":material/groups:", default=True),
    _page("views/patient.py", "clinician", title="Patient review", icon=":material/person:", url_path="patient"),
    _page("views/upload.py", "researcher", title="Upload a patient", icon=":material/upload_file:", url_path="upload"),
    _page("views/lab.py", "researcher", title="Disentanglement lab", icon=":material/science:", url_path="lab"),
    _page("views/model_card.py", "clinician", title="Model card", icon=":material/description:",
          url_path="model_card"),
]


def _sidebar() -> None:
    """Data source, checkpoint and device: what every page's numbers come from. Only researchers may
    point the dashboard at other folders of the server (tables, bundles, checkpoints)."""
    sb = st.sidebar
    locked = not role_allows(viewer.role, "researcher")
    sb.markdown("**MEDFuse Lens**  \nmultimodal prediction, explained")
    for key, default in (("source_choice", "Bundle folder" if os.environ.get(SOURCE_ENV) else "Demo cohort"),
                         ("source_folder", os.environ.get(SOURCE_ENV, "")),
                         ("mimic3_folder", default_mimic3_tables())):
        st.session_state.setdefault(key, default)
    choice = sb.radio("Data source", ["Demo cohort", "MIMIC-III tables", "Bundle folder"], key="source_choice")
    st.session_state["source_dir"] = str(demo_dir())  # unless the chosen source below is usable
    if choice == "MIMIC-III tables":
        tables = sb.text_input("Folder of MIMIC-III tables", key="mimic3_folder", placeholder="/path/to/mimic-iii",
                               disabled=locked, help="ADMISSIONS, PATIENTS, LABEVENTS, ... as .csv or .csv.gz; imported once into "
                                    "patient bundles (`python -m medfuse_core import mimic3` does the same).")
        if not tables.strip():
            sb.info("Enter the folder of the MIMIC-III tables; showing the demo cohort.")
        else:
            try:
                st.session_state["source_dir"] = str(mimic3_bundles(tables.strip()))
            except DataError as exc:
                sb.error(f"Not readable as MIMIC-III tables: {exc}. Showing the demo cohort.")
            except Exception as exc:  # a broken extract must not take the dashboard down
                sb.error(f"The MIMIC-III import failed ({type(exc).__name__}: {exc}). Showing the demo cohort.")
    elif choice == "Bundle folder":
        folder = sb.text_input("Folder of patient bundles", key="source_folder", placeholder="/path/to/bundles",
                               disabled=locked)
        if folder.strip() and Path(folder.strip()).is_dir():
            st.session_state["source_dir"] = folder.strip()
        elif folder.strip():
            sb.error("That folder does not exist; showing the demo cohort.")
    if "checkpoint_dir" not in st.session_state:
        st.session_state["checkpoint_dir"] = default_checkpoint()
    sb.text_input("Checkpoint (run folder)", key="checkpoint_dir", placeholder="no model: data only", disabled=locked,
                  help="A folder with config.json and model.safetensors written by `python -m medfuse_core train`.")
    sb.caption(f"Device: `{device_in_use(current_checkpoint())}`")


_sidebar()
sidebar_account(viewer)
# One compact line per kind (info, warning) instead of three tall banners at the top of every page.
notices = [DEV_BANNER] if viewer.mode == "dev" else []
if current_source() == demo_dir():
    notices.append("Demo data: synthetic patients with planted ground truth, not for clinical use")
if notices:
    st.info(" · ".join(notices), icon=":material/science:")
if model_is_synthetic(current_checkpoint()):
    st.warning("Demo model: trained on synthetic patients only; its predictions are illustrations, "
               "not clinical estimates.", icon=":material/model_training:")
with PAGE_RUNS.run():  # the background explanations wait while pages run (app/explanations.py)
    st.navigation(pages).run()
freeze_after_first_run(current_checkpoint())  # app/heap.py: no per-run full collection

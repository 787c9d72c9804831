"""Upload: score one patient bundle (or a few) sent as a zip, without writing anything to the source.

The zip is unpacked into a tempfile.TemporaryDirectory that is gone when the page has read it; the
validator's problems are shown one per row (file, field, message); a readable patient is scored and
explained on the spot. Results are cached by the zip's content and the checkpoint, so switching the
disease does not unpack and score again.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from app.bundle_zip import UploadResult, read_upload
from app.components import contributions as C
from app.components import evidence as E
from app.components import patient_header as H
from app.scoring import UNCERTAINTY_HELP, UNCERTAINTY_NAME, PatientScores, explain_panels
from app.state import checkpoint_stamp, current_checkpoint, predictor_or_reason


@st.cache_data(show_spinner="Unpacking, validating and scoring...", max_entries=8)
def process_upload(data: bytes, name: str, checkpoint: str, stamp: float = 0.0) -> UploadResult:
    """read_upload, cached by the zip's bytes and the checkpoint (the disease switch does not redo it)."""
    predictor, reason = predictor_or_reason(checkpoint)
    return read_upload(data, name, predictor, reason)


@st.cache_data(show_spinner="Explaining the prediction...", max_entries=32)
def upload_evidence(digest: str, checkpoint: str, stamp: float, patient_id: str, disease: str, _record) -> dict:
    """`explain_panels` (sentence level) for one uploaded patient and disease, cached by the zip's digest,
    the checkpoint, the patient and the disease (`_record` is not hashed)."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return E.empty_evidence()
    return explain_panels(_record, predictor, disease)


def evidence_rows(evidence: dict) -> list[dict[str, str]]:
    """The top evidence per modality as table rows (st.dataframe shows text as text: nothing is HTML)."""
    names = {"labs": "Labs", "notes": "Notes", "vitals": "Vitals", "image": "X-ray"}
    top = (evidence.get("summary") or {}).get("top") or {}
    return [{"modality": names.get(m, m), "evidence (attribution, log-odds)": line}
            for m in ("labs", "notes", "vitals", "image") for line in top.get(m, [])]


st.title("Upload a patient")
st.caption("A zip of a patient bundle (patient.json, labs.csv, vitals.csv, notes/, images/; see the README). "
           "It is unpacked into a temporary folder, validated, scored and explained here; nothing is kept.")
upload = st.file_uploader("Patient bundle (.zip)", type=["zip"], key="upload_zip")
if upload is None:
    st.info("Choose a zip file to begin.", icon=":material/upload_file:")
    st.stop()

data = upload.getvalue()
checkpoint = current_checkpoint()
result = process_upload(data, upload.name, checkpoint, checkpoint_stamp(checkpoint))
digest = hashlib.sha256(data).hexdigest()
st.caption(f"`{upload.name}` · {len(data) / 1024:.0f} KB · sha256 {digest[:12]}")

problems = result.problems
n_errors = int((problems["severity"] == "error").sum()) if not problems.empty else 0
if result.fatal:
    st.error(result.fatal, icon=":material/error:")
if not problems.empty:
    (st.error if n_errors else st.warning)(
        f"{len(problems)} problem(s) found ({n_errors} error(s)): each row says the file, the field and what was "
        "expected.")
    st.dataframe(problems, hide_index=True, width="stretch", key="upload_problems")
elif not result.fatal:
    st.success("The bundle passed validation.", icon=":material/check_circle:")
if not result.records:
    st.stop()

by_id = {r.patient_id: r for r in result.records}
pid = st.selectbox("Patient", list(by_id), key="upload_patient") if len(by_id) > 1 else next(iter(by_id))
record = by_id[pid]
st.header(f"Patient {pid}", anchor=False)
st.text(H.demographics_line(record))
st.html(H.modality_badges_html(record))
if result.score_error:
    st.info(result.score_error, icon=":material/info:")
    st.stop()
scores = result.scores.get(pid)
if scores is None:
    st.info("The model gave no prediction for this patient.")
    st.stop()


@st.fragment
def _explained(scores: PatientScores) -> None:
    """Disease selector and waterfall: switching the disease reruns only this part."""
    left, right = st.columns([1, 1], gap="medium")
    with right:
        disease = st.selectbox("Disease", scores.labels, index=scores.top, key="upload_disease")
        k = scores.index(disease)
        st.markdown("**" + C.probability_sentence(disease, float(scores.probabilities[k]), float(scores.thresholds[k]),
                                                  float(scores.subset_low[k]), float(scores.subset_high[k])) + "**")
        base, contributions, logit = C.scores_contributions(scores, disease)
        st.plotly_chart(C.waterfall_figure(base, contributions, logit), width="stretch", key="upload_contrib_chart",
                        config={"displaylogo": False})
        st.caption(C.contribution_sentence(contributions, C.present_by_modality(scores)))
    with left:
        frame = C.predictions_frame(scores).drop(columns=["spread"])
        st.dataframe(frame, hide_index=True, width="stretch", key="upload_predictions", column_config={
            "probability": st.column_config.ProgressColumn("probability", format="percent", min_value=0.0, max_value=1.0),
            "threshold": st.column_config.NumberColumn("threshold", format="percent"),
            "call": st.column_config.TextColumn("vs threshold"),
            "range": st.column_config.TextColumn(UNCERTAINTY_NAME, help=UNCERTAINTY_HELP)})
        st.caption(f"Uncertainty: the {UNCERTAINTY_NAME}. {UNCERTAINTY_HELP}")
    rows = evidence_rows(upload_evidence(digest, checkpoint, checkpoint_stamp(checkpoint), pid, disease, record))
    st.markdown(f"**Evidence for {disease}**: the top items per modality by Captum attribution "
                "(positive raises the risk).")
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch", key="upload_evidence")
    else:
        st.caption("No evidence-level attribution for this patient.")


st.subheader("Predictions", anchor=False)
_explained(scores)

"""Upload: score one patient bundle (or a few) sent as a zip, without writing anything to the source;
and, for researchers, upload a checkpoint to use in this session.

Files go only into this session's temporary folder (app/bundle_zip.py `new_session_dir`, held in
st.session_state): a zip is unpacked into a folder inside it that is gone when the page has read it; an
uploaded checkpoint stays there while the session may use it and is deleted when another replaces it;
the whole folder goes when the session's state does (or, after a crash, by the stale-folder sweep).
The validator's problems are shown one per row (file, field, message); a readable patient is scored and
explained on the spot, the others' problems still shown. Results are cached by the zip's content and
the checkpoint, so switching the disease does not unpack and score again.

A checkpoint is accepted only as config.json + model.safetensors, checked before anything is written
(medfuse_core/runtime/checkpoint.py `install_checkpoint`); "Use this checkpoint" sets the sidebar's
checkpoint folder (st.session_state["checkpoint_dir"]) in a button callback, before the sidebar is drawn.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import streamlit as st

from app.auth import audit_event, require_role
from app.components.plain import markdown_escape, plain_text
from app.components.shading import effect_words
from app.bundle_zip import UploadResult, new_session_dir, read_upload, touch
from app.components import contributions as C
from app.components import evidence as E
from app.components import patient_header as H
from app.components.wording import (ALL_OUT_OF_DOMAIN_MESSAGE, NO_DATA_MESSAGE, NO_DOMAIN_CHECK_MESSAGE,
                                    UNCERTAINTY_HELP, UNCERTAINTY_NAME)
from app.scoring import explain_panels
from app.components.worklist import short_label
from app import tables as T
from app.state import checkpoint_stamp, current_checkpoint, predictor_or_reason
from medfuse_core.explain.scores import PatientScores
from medfuse_core.explain.probability_scale import risk_points
from medfuse_core.modalities import REGISTRY
from medfuse_core.runtime.checkpoint import UPLOAD_FILES, install_checkpoint, is_checkpoint

require_role("researcher")


SESSION_DIR_KEY = "_upload_session_dir"  # session_state: this session's TemporaryDirectory
CHECKPOINT_CHECK_KEY = "_upload_checkpoint_check"  # session_state: (digest, folder or "", problem rows)


def session_dir() -> Path:
    """This session's temporary folder, made on first use and marked as in use on every run."""
    tmp = st.session_state.get(SESSION_DIR_KEY)
    if tmp is None or not Path(tmp.name).is_dir():
        tmp = new_session_dir()
        st.session_state[SESSION_DIR_KEY] = tmp
    touch(tmp.name)
    return Path(tmp.name)


@st.cache_data(show_spinner="Unpacking, validating and scoring...", max_entries=8)
def process_upload(digest: str, name: str, checkpoint: str, stamp: float = 0.0, _data: bytes = b"",
                   _workdir: str | None = None) -> UploadResult:
    """read_upload of `_data`, cached by its sha256 `digest` and the checkpoint (the disease switch does not
    redo it, and a 200 MB zip is hashed once per rerun, not twice); unpacked inside `_workdir` (the
    session's folder; not part of the cache key)."""
    predictor, reason = predictor_or_reason(checkpoint)
    return read_upload(_data, name, predictor, reason, workdir=_workdir)


@st.cache_data(show_spinner="Explaining the prediction...", max_entries=32)
def upload_evidence(digest: str, checkpoint: str, stamp: float, patient_id: str, disease: str, _record) -> dict:
    """`explain_panels` (sentence level) for one uploaded patient and disease, cached by the zip's digest,
    the checkpoint, the patient and the disease (`_record` is not hashed)."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return E.empty_evidence()
    return explain_panels(_record, predictor, disease)


EVIDENCE_NAMES = {s.key: s.display_name for s in REGISTRY}  # the registry's names (Labs, Notes, Vitals, X-ray)


def evidence_rows(evidence: dict) -> list[dict[str, str]]:
    """The top evidence per modality with exact attributions, for researchers (st.dataframe shows text as
    text: nothing is HTML). Each note sentence appears once (summed over copies)."""
    top = (evidence.get("summary") or {}).get("top") or {}
    return [{"modality": s.display_name, "evidence (attribution, log-odds)": line}
            for s in REGISTRY for line in top.get(s.key, [])]


def evidence_words(evidence: dict) -> list[dict[str, str]]:
    """The same evidence in a clinician's words: what, and whether it raised or lowered the risk (strength
    relative to the strongest item of this patient and disease)."""
    items = (evidence.get("summary") or {}).get("items") or {}
    weights = [abs(w) for rows in items.values() for _, w in rows if w == w]
    scale = max(weights, default=0.0)
    return [{"source": EVIDENCE_NAMES.get(m, m), "evidence": what,
             "effect on risk": "shown on the film" if w != w else effect_words(w, scale)}
            for m in EVIDENCE_NAMES for what, w in items.get(m, [])]


def _bundle_section() -> None:
    """Upload a zip of patient bundles: problems, then the readable patients' predictions."""
    st.caption("A zip of a patient bundle (patient.json, labs.csv, vitals.csv, notes/, images/; see the README). "
               "It is unpacked into this session's temporary folder, validated, scored and explained here; "
               "nothing is kept.")
    upload = st.file_uploader("Patient bundle (.zip)", type=["zip"], key="upload_zip")
    if upload is None:
        st.info("Choose a zip file to begin.", icon=":material/upload_file:")
        return

    data = upload.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    checkpoint = current_checkpoint()
    try:
        result = process_upload(digest, upload.name, checkpoint, checkpoint_stamp(checkpoint), _data=data,
                                _workdir=str(session_dir()))
    except Exception as exc:  # the zip must never take the page (and the checkpoint section below) down
        st.error(f"The zip could not be read ({type(exc).__name__}); nothing from it was used.", icon=":material/error:")
        return
    st.text(f"{plain_text(upload.name, 120)} · {len(data) / 1024:.0f} KB · sha256 {digest[:12]}")

    problems = result.problems
    n_errors = int((problems["severity"] == "error").sum()) if not problems.empty else 0
    n_info = int((problems["severity"] == "info").sum()) if not problems.empty else 0
    if result.fatal:
        st.error(result.fatal, icon=":material/error:")
    if result.duplicates:
        st.warning(f"{result.duplicates} bundles share a patient id with another bundle in the zip and are not "
                   "shown (a choice must open one definite patient); see the rows on patient_id below.",
                   icon=":material/warning:")
    if not problems.empty:
        show = st.error if n_errors else st.warning if len(problems) > n_info else st.info
        show(f"{len(problems)} problem(s) found ({n_errors} error(s)): each row says the file, the field and what was "
             "expected. What is not named here was read.")
        st.dataframe(problems, hide_index=True, width="stretch", key="upload_problems")
    elif not result.fatal:
        st.success("The bundle passed validation.", icon=":material/check_circle:")
    if not result.records:
        return
    audit_event("upload_bundle", patient_id=result.records[0].patient_id if len(result.records) == 1 else None,
                once=digest, required=True, file=upload.name, sha256=digest, patients=[r.patient_id for r in result.records])

    by_id = {r.patient_id: r for r in result.records}
    pid = st.selectbox("Patient", list(by_id), key="upload_patient") if len(by_id) > 1 else next(iter(by_id))
    record = by_id[pid]
    st.header(f"Patient {markdown_escape(pid)}", anchor=False)
    st.text(H.demographics_line(record))
    st.html(H.modality_badges_html(record))
    if result.score_error:
        st.info(result.score_error, icon=":material/info:")
        return
    scores = result.scores.get(pid)
    if scores is None:
        st.info(NO_DATA_MESSAGE if not record.present_modalities else ALL_OUT_OF_DOMAIN_MESSAGE, icon=":material/info:")
        return
    st.subheader("Predictions", anchor=False)
    _explained(scores, digest, checkpoint, pid, record)


@st.fragment
def _explained(scores: PatientScores, digest: str, checkpoint: str, pid: str, record) -> None:
    """Disease selector and waterfall: switching the disease reruns only this part."""
    left, right = st.columns([3, 2], gap="medium")
    with right:
        disease = st.selectbox("Disease", scores.labels, index=scores.top, key="upload_disease", format_func=short_label)
        k = scores.index(disease)
        st.markdown("**" + C.probability_sentence(disease, float(scores.probabilities[k]), float(scores.thresholds[k]),
                                                  float(scores.subset_low[k]), float(scores.subset_high[k])) + "**")
        start, shares, end = risk_points(scores, disease)
        points = C.source_points(shares)
        st.html(C.risk_bars_html(start, points, end))
        st.caption(C.risk_sentence(points, C.present_by_modality(scores)))
    with left:
        # the review page's table and column settings (app/tables.py): short names, percent columns
        frame = C.predictions_display(scores, disease)
        st.dataframe(frame, hide_index=True, width="stretch", key="upload_predictions",
                     height=T.table_height(len(frame)), column_config=T.predictions_columns())
        st.caption(" ".join(C.status_lines(scores)))
    evidence = upload_evidence(digest, checkpoint, checkpoint_stamp(checkpoint), pid, disease, record)
    words = evidence_words(evidence)
    st.markdown(f"**Evidence for {short_label(disease)}**: what raised or lowered the risk most, per source.")
    if words:
        st.dataframe(words, hide_index=True, width="stretch", key="upload_evidence_words")
    else:
        st.caption("No evidence-level attribution for this patient.")
    with st.expander("For researchers: exact contributions (log-odds) and attributions"):
        base, contributions, logit = C.scores_contributions(scores, disease)
        st.plotly_chart(C.waterfall_figure(base, contributions, logit), width="stretch", key="upload_contrib_chart",
                        config={"displaylogo": False})
        st.caption(C.contribution_sentence(contributions, C.present_by_modality(scores))
                   + f" Probability: the log-odds {scores.calibration}. Range: the {UNCERTAINTY_NAME}. "
                   + UNCERTAINTY_HELP)
        rows = evidence_rows(evidence)
        if rows:
            st.dataframe(rows, hide_index=True, width="stretch", key="upload_evidence")


def _use_checkpoint(folder: str) -> None:
    """Button callback: runs before the next run draws the sidebar, so its checkpoint field may change."""
    st.session_state["checkpoint_dir"] = folder


def _forget_other_checkpoints(root: Path, keep: set[str]) -> None:
    """Delete earlier uploaded checkpoints of this session, except those named in `keep` (in use)."""
    for old in root.glob("checkpoint-*"):
        if str(old) not in keep and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def _checkpoint_section() -> None:
    """Upload config.json + model.safetensors; when they check out, offer to use them for this session."""
    st.subheader("Upload a checkpoint (researchers)", anchor=False)
    st.caption(f"The two files of a run folder: {' and '.join(UPLOAD_FILES)}. The config is checked key by key and "
               "the weights' tensor names and shapes against the model it builds; pickle files (.pt, .bin, .pkl) "
               "are refused. A valid checkpoint is kept in this session's temporary folder while it is in use.")
    files = st.file_uploader("Checkpoint files", accept_multiple_files=True, key="upload_checkpoint")
    if not files:
        return
    contents = {f.name: f.getvalue() for f in files}
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + hashlib.sha256(contents[n]).digest()
                                     for n in sorted(contents))).hexdigest()
    root = session_dir()
    folder = root / f"checkpoint-{digest[:16]}"
    cached = st.session_state.get(CHECKPOINT_CHECK_KEY)
    if cached is None or cached[0] != digest or (cached[1] and not is_checkpoint(cached[1])):
        with st.spinner("Checking the checkpoint..."):
            _forget_other_checkpoints(root, {current_checkpoint()})
            check = install_checkpoint(contents, folder)
        rows = [p.to_dict() for p in check.problems]
        cached = (digest, str(folder) if check.ok else "", rows)
        st.session_state[CHECKPOINT_CHECK_KEY] = cached
        if check.ok:
            audit_event("upload_checkpoint", once=digest, file=", ".join(sorted(contents)), sha256=digest)
    _, installed, rows = cached
    if not installed:
        st.error(f"The checkpoint was refused ({len(rows)} problem(s)); nothing from it was kept. Each row says the "
                 "file, the field and what was expected.", icon=":material/error:")
        st.dataframe(rows, hide_index=True, width="stretch", key="checkpoint_problems")
        return
    st.success("The checkpoint passed the checks: config.json is valid and model.safetensors holds exactly the "
               "tensors it describes.", icon=":material/check_circle:")
    # only config.json and model.safetensors are uploaded: its domain and interval files never come with it
    st.warning(f"{NO_DOMAIN_CHECK_MESSAGE} Nor are uncertainty intervals shown with it: only {' and '.join(UPLOAD_FILES)} "
               "are uploaded.", icon=":material/warning:")
    if current_checkpoint() == installed:
        st.info("This checkpoint is in use for this session (see the sidebar).", icon=":material/model_training:")
    else:
        st.button("Use this checkpoint for this session", key="use_uploaded_checkpoint", on_click=_use_checkpoint,
                  args=(installed,), type="primary")


st.title("Upload a patient")
_bundle_section()
st.divider()
_checkpoint_section()

"""Patient review: one patient's evidence in four panels (labs, notes, vital signs, chest X-ray).

The view only lays out what app/components builds. Each panel takes an optional attribution: the
model's evidence for the selected disease (medfuse_core.explain.explain, cached per source,
checkpoint, patient and disease), or, for synthetic patients, the planted truth through the same
shading, as a separate, labelled view. A missing modality is said in words, never an error; a file
that failed to load is listed in the header's loading warnings and the rest of the page still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from app.auth import audit_event, audited
from app.components import labs as L
from app.components import notes as N
from app.components import patient_header as H
from app.components import vitals as V
from app.components import xray as X
from app.components.shading import legend_html, max_abs
from app.components.worklist import short_label
from app.components import contributions as C
from app.components import evidence as E
from app.components import report as R
from app.components.wording import UNCERTAINTY_HELP, UNCERTAINTY_NAME
from app.scoring import TOP_SENTENCES, explain_panels
from app.state import (planted_evidence, record_by_id, records_by_id, checkpoint_stamp, current_checkpoint, current_source, load_cohort, model_is_synthetic,
                       predictor_or_reason, scores_or_none)
from medfuse_core.explain.scores import PatientScores
from medfuse_core.modalities import REGISTRY
from medfuse_core.record import PatientRecord

PATIENT_PARAM = "patient"  # ?patient=P00012 makes a review page linkable
PATIENT_KEY = "patient_id"  # shared with the worklist: the patient last opened


# ------------------------------------------------------------------------------------------ data


def _record(source: str, patient_id: str) -> PatientRecord:
    return record_by_id(source, patient_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _lab_tables(source: str, patient_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = L.lab_rows(_record(source, patient_id))
    return L.latest_per_item(rows), rows


@st.cache_resource(show_spinner=False, max_entries=32)
def _vitals_figure(source: str, patient_id: str, mode: str, disease: str | None = None, checkpoint: str = "",
                   stamp: float = 0.0) -> Any:
    """The vitals small multiples, shaded by `mode`: 'planted', 'model' (attribution) or 'none'."""
    record = _record(source, patient_id)
    attribution = None
    if mode == "planted":
        attribution = planted_evidence(source, patient_id, disease)["vitals"]
    elif mode == "model" and disease:
        attribution = _explained(source, checkpoint, stamp, patient_id, disease)["vitals"]
    return V.vitals_figure(record, attribution or None)


# ---------------------------------------------------------------------------------------- panels


@st.cache_data(show_spinner=False, max_entries=128)
def _coverage(source: str, checkpoint: str, stamp: float, patient_id: str) -> dict[str, dict[str, Any]]:
    """Per modality, the model's coverage of the record (medfuse_core.features.coverage): the summary line
    and the unread rows with the reason; empty without a model."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return {}
    try:
        cov = predictor.featurizer.coverage(_record(source, patient_id))
    except Exception:  # noqa: BLE001 - the coverage line must never take the review page down
        return {}
    return {m: {"summary": c.summary(cov.hours), "unread": c.unread, "details": c.details}
            for m, c in cov.modalities.items()}


def _coverage_line(coverage: dict[str, Any] | None) -> None:
    """"12 of 52 lab results not used: 9 unknown tests, 3 unknown units", expandable to the list."""
    if not coverage or not coverage["unread"]:
        return
    st.caption(coverage["summary"])
    with st.expander("Not used by the model, and why"):
        st.dataframe(pd.DataFrame(coverage["details"], columns=["what", "time", "reason"]), hide_index=True,
                     width="stretch")


def _lab_panel(source: str, record: PatientRecord, attribution: dict | None, mode: str = "none",
               coverage: dict[str, Any] | None = None) -> None:
    st.subheader("Labs")
    if not record.has("labs"):
        st.info("No lab results in this record." + (" The labs contribute nothing." if mode == "model" else ""))
        return
    _coverage_line(coverage)
    latest, rows = _lab_tables(source, record.patient_id)
    n_abnormal = int(latest["abnormal"].sum())
    timeline = st.toggle("Full timeline", key="labs_timeline",
                         help="Every result in time order instead of the latest value per item.")
    if timeline:
        items = st.multiselect("Items", list(latest["item"]), placeholder="All items", key="labs_items")
        shown = rows[rows["item"].isin(items)] if items else rows
        st.caption(f"{len(shown)} results · abnormal rows in red · hours from admission")
        table = shown
        config = {}
    else:
        st.caption(f"Latest value of {len(latest)} items · {n_abnormal} abnormal (red) · "
                   "'previous' is the result before it, n the number of results")
        table = latest[["item", "value", "flag", "reference", "unit", "previous", "n", "hours", "time",
                        "abnormal", "stamp"]]
        config = {"n": st.column_config.NumberColumn("n", width="small")}
    small = {c: st.column_config.TextColumn(c, width="small") for c in ("value", "unit", "previous", "flag")}
    height = min(36 * (len(table) + 1) + 4, 640)  # the latest-per-item view usually fits unscrolled
    st.dataframe(L.style_labs(table, attribution), hide_index=True, width="stretch", height=height,
                 column_config={**small, "hours": st.column_config.TextColumn("h", width="small"),
                                "time": st.column_config.TextColumn("time", width="medium"), **config})
    if attribution:
        st.html(legend_html(max_abs(attribution.values()), _ATTRIBUTION_WHAT[mode]))
        if mode == "model":
            st.caption("attribution: Integrated Gradients on each item's value embedding (baseline: every item "
                       "at its training median), in log-odds; None = not read by the model (the line above the "
                       "table says why).")
    elif mode == "model":
        st.caption("The model read none of these results (the line above the table says why): no attribution.")


_ATTRIBUTION_WHAT = {"model": "model attribution", "planted": "planted truth", "none": "attribution"}


def _notes_panel(record: PatientRecord, spans_by_note: dict[int, list] | None, mode: str = "none",
                 word_spans: Callable[[], dict[int, list]] | None = None) -> None:
    st.subheader("Notes")
    notes = [(i, n) for i, n in enumerate(record.notes) if n.text.strip()]
    if not notes:
        st.info("No clinical notes in this record." + (" The notes contribute nothing." if mode == "model" else ""))
        return
    if mode == "model" and word_spans is not None and spans_by_note:
        level = st.segmented_control(
            "Highlight", ["Sentences", "Words"], default="Sentences", key="notes_level",
            help="Sentences: Integrated Gradients on every sentence's embedding. Words: the word pieces of the "
                 f"top {TOP_SENTENCES} sentences, by Integrated Gradients through the text model (takes a few "
                 "seconds the first time for each disease).") or "Sentences"
        if level == "Words":
            spans_by_note = word_spans()
            st.caption(f"Word pieces of the {TOP_SENTENCES} sentences with the largest attribution; "
                       "the other sentences are not highlighted in this view.")
    query = st.text_input("Find in notes", key="notes_find", placeholder="a word or phrase, e.g. cough")
    hits = sum(len(N.find_spans(n.text, query)) for _, n in notes) if query.strip() else 0
    st.caption(f"{len(notes)} notes, oldest first"
               + (f" · {hits} matches for the search" if query.strip() else ""))
    blocks = []
    for i, note in notes:
        hours = record.hours_since_index(note.time) if note.time is not None and pd.notna(note.time) else None
        heading = N.note_heading(note.time, note.category, hours)
        if query.strip():
            blocks.append(N.note_html(heading, note.text, N.find_spans(note.text, query), rgb=N.SEARCH_RGB))
        else:
            blocks.append(N.note_html(heading, note.text, (spans_by_note or {}).get(i, ())))
    if spans_by_note and not query.strip():
        scale = max_abs(w for spans in spans_by_note.values() for _, _, w in spans)
        st.html(legend_html(scale, _ATTRIBUTION_WHAT[mode]))
    # st.html sanitises again (DOMPurify); our HTML is escaped already, so that is a second guard.
    with st.container(height=640, border=False):  # as tall as the labs table
        st.html("".join(blocks))


def _vitals_panel(source: str, record: PatientRecord, mode: str = "none", disease: str | None = None,
                  checkpoint: str = "", coverage: dict[str, Any] | None = None) -> None:
    st.subheader("Vital signs")
    if not record.has("vitals"):
        st.info("No vital signs in this record." + (" The vitals contribute nothing." if mode == "model" else ""))
        return
    _coverage_line(coverage)
    channels = V.channels_present(record)
    shading = {"model": " · background = model attribution per hour (orange raises, blue lowers)",
               "planted": " · background = planted evidence hours"}.get(mode, "")
    st.caption(f"{len(channels)} channels · green band = normal range · red points outside it · "
               f"dotted lines = the model's first {V.WINDOW_HOURS} h" + shading)
    fig = _vitals_figure(source, record.patient_id, mode, disease, checkpoint,
                         checkpoint_stamp(checkpoint) if mode == "model" else 0.0)
    st.plotly_chart(fig, width="stretch", key="vitals_chart", config={"displaylogo": False})


@st.fragment
def _xray_panel(record: PatientRecord, overlays: dict[int, np.ndarray] | None, mode: str = "none") -> None:
    """A fragment: moving the window/level sliders reruns only this panel."""
    st.subheader("Chest X-ray")
    if not record.has("image"):
        failed = [p for p in record.problems if "images" in Path(p.file).parts]
        st.info("No chest X-ray in this record."
                + (" An image file could not be read; see the loading warnings above." if failed else "")
                + (" The X-ray contributes nothing." if mode == "model" else ""))
        return
    labels = [X.image_label(i, im, record.hours_since_index(im.time) if im.time is not None else None)
              for i, im in enumerate(record.images)]
    index = 0
    if len(labels) > 1:
        read = [i for i in (overlays or {}) if 0 <= i < len(labels)]
        if read and st.session_state.get("xray_image") not in range(len(labels)):
            st.session_state["xray_image"] = read[0]  # open on the image the attribution is about
        index = st.selectbox("Image", range(len(labels)), format_func=lambda i: labels[i], key="xray_image")
    else:
        st.caption(f"Image {labels[0]}")
    image = record.images[index]
    c1, c2 = st.columns(2)
    centre = c1.slider("Window centre (level)", 0.0, 1.0, 0.5, 0.01, key="xray_centre")
    width = c2.slider("Window width", 0.02, 1.0, 1.0, 0.01, key="xray_width")
    overlay = (overlays or {}).get(index)
    opacity = 0.5
    if overlay is not None:
        opacity = st.slider(f"Overlay opacity ({_ATTRIBUTION_WHAT[mode]})", 0.0, 1.0, 0.45, 0.05, key="xray_opacity")
    elif mode == "model" and overlays:
        st.caption(f"The model read image {next(iter(overlays)) + 1}; its attribution map is shown there.")
    fig = X.xray_figure(image.pixels, centre, width, overlay=overlay, overlay_opacity=opacity,
                        signed=bool(overlay is not None and np.min(overlay) < 0))
    st.plotly_chart(fig, width="stretch", key="xray_chart",
                    config={"displaylogo": False, "scrollZoom": True})
    st.caption("Drag to zoom, scroll to zoom, double-click to reset."
               + (" Overlay: where on the film the model found evidence for this disease (Grad-CAM on a late "
                  "stage of the image encoder x integrated gradients; orange = stronger)."
                  if overlay is not None and mode == "model" else ""))
    with st.expander("Image details"):
        st.dataframe(X.metadata_frame(image), hide_index=True, width="stretch")


# ------------------------------------------------------------------------------ the model's view


@st.cache_data(show_spinner="Explaining the prediction...", max_entries=128)
def _explained(source: str, checkpoint: str, stamp: float, patient_id: str, disease: str,
               words: bool = False) -> dict[str, Any]:
    """`explain_panels` cached per (source, checkpoint and its weights' mtime, patient, disease, words):
    word-level note attribution is computed only when the notes panel is switched to "Words"."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return E.empty_evidence()
    return explain_panels(_record(source, patient_id), predictor, disease, words)


def _word_spans(source: str, checkpoint: str, patient_id: str, disease: str) -> dict[int, list]:
    return _explained(source, checkpoint, checkpoint_stamp(checkpoint), patient_id, disease, True)["note_tokens"]


def _model_evidence(source: str, checkpoint: str, patient_id: str, disease: str) -> dict[str, Any] | None:
    """The model's evidence-level attributions for one disease, in the panels' formats (None: no model,
    or the explanation failed; the page then says so and shows no shading)."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None or disease not in predictor.labels:
        return None
    try:
        return _explained(source, checkpoint, checkpoint_stamp(checkpoint), patient_id, disease)
    except Exception as exc:  # an explanation must never take the review page down
        st.warning(f"The model's evidence could not be computed ({type(exc).__name__}: {exc}).")
        return None


def _disease_options(record: PatientRecord, scores: PatientScores | None) -> list[str]:
    if scores is not None:
        return list(scores.labels)
    return list((record.labels or {}).keys())


def _default_disease(record: PatientRecord, scores: PatientScores | None, options: list[str]) -> str | None:
    """The patient's highest predicted disease; without a model, the first positive label."""
    if scores is not None:
        return scores.labels[scores.top]
    positives = [k for k, v in (record.labels or {}).items() if v]
    return positives[0] if positives else (options[0] if options else None)


def _predictions_table(scores: PatientScores, disease: str | None) -> None:
    frame = C.predictions_frame(scores).drop(columns=["spread"])
    frame["disease"] = [("▶ " if d == disease else "") + short_label(d) for d in frame["disease"]]
    frame[["probability", "threshold"]] *= 100  # percent columns read "43%", not "0.43"
    st.dataframe(
        frame, hide_index=True, width="stretch", key="predictions_table",
        height=35 * (len(frame) + 1) + 3,
        column_config={
            "disease": st.column_config.TextColumn("disease", width="medium", help="▶ marks the disease explained on the right."),
            "probability": st.column_config.ProgressColumn(
                "probability", format="%.0f%%", min_value=0.0, max_value=100.0, width="small",
                help="Calibrated probability (temperature scaling fitted on validation patients)."),
            "threshold": st.column_config.NumberColumn(
                "thr.", format="%.0f%%", width="small",
                help="Decision threshold (F1-optimal on validation patients)."),
            "call": st.column_config.TextColumn("vs thr.", width="small"),
            "range": st.column_config.TextColumn("subset range", width="small",
                                                 help=f"{UNCERTAINTY_NAME}: {UNCERTAINTY_HELP}"),
        })
    st.caption(f"Uncertainty: the {UNCERTAINTY_NAME}. {UNCERTAINTY_HELP}")


def _contribution_chart(scores: PatientScores, disease: str) -> None:
    k = scores.index(disease)
    st.markdown("**" + C.probability_sentence(disease, float(scores.probabilities[k]), float(scores.thresholds[k]),
                                              float(scores.subset_low[k]), float(scores.subset_high[k])) + "**")
    base, contributions, logit = C.scores_contributions(scores, disease)
    fig = C.waterfall_figure(base, contributions, logit)
    st.plotly_chart(fig, width="stretch", key="contrib_chart", config={"displaylogo": False})
    st.caption(C.contribution_sentence(contributions, C.present_by_modality(scores))
               + f" Bars start at the base value (every modality hidden) and add up to the model's log-odds "
                 f"({logit:+.2f}); probability = sigmoid(log-odds / {scores.temperature:.2f}). "
                 "Orange raises the risk, blue lowers it.")


def _report_content(source: str, checkpoint: str, record: PatientRecord, scores: PatientScores | None,
                    disease: str | None, model_evidence: dict[str, Any] | None = None) -> R.ReportContent:
    """What the exported report holds (plain text; the report escapes it)."""
    latest, _ = _lab_tables(source, record.patient_id)
    evidence: dict[str, list[str]] = {}
    abnormal = latest[latest["abnormal"]] if not latest.empty else latest
    evidence["Abnormal lab results (latest value)"] = [
        f"{r.item}: {r.value} {r.unit} ({r.flag or 'abnormal'}; reference {r.reference or 'not given'})"
        for r in abnormal.itertuples(index=False)]
    top = ((model_evidence or {}).get("summary") or {}).get("top") or {}
    for route, lines in top.items():
        unit = REGISTRY[route].evidence_unit if route in REGISTRY else route
        evidence[f"Model attribution for {disease}: top {unit} (log-odds)"] = list(lines)
    if disease and record.truth is not None:
        planted = ((record.truth or {}).get("evidence", {}) or {}).get(disease)
        if planted:
            evidence[f"Planted evidence for {disease} (synthetic ground truth)"] = [
                f"{route}: {len(planted.get(route) or [])} item(s)" for route in REGISTRY.keys()]
    notes = [(N.note_heading(n.time, n.category, record.hours_since_index(n.time)
                             if n.time is not None and pd.notna(n.time) else None), n.text)
             for n in record.notes if n.text.strip()]
    return R.ReportContent(
        patient_id=record.patient_id, demographics=H.demographics_line(record, V.body_size(record)),
        modalities=", ".join(H.MODALITY_NAMES[m] for m in record.present_modalities) or "none",
        scores=scores, disease=disease, checkpoint=checkpoint, synthetic_model=model_is_synthetic(checkpoint),
        synthetic_data=record.truth is not None, evidence=evidence, notes=notes)


def _downloads(source: str, checkpoint: str, record: PatientRecord, scores: PatientScores | None,
               disease: str | None, model_evidence: dict[str, Any] | None = None) -> None:
    content = _report_content(source, checkpoint, record, scores, disease, model_evidence)
    c1, c2, _ = st.columns([1, 1, 3])
    patient = record.patient_id  # each download is logged when the file is made (app/auth.py audited)
    html_report = audited(lambda: R.report_html(content), "export_report", patient, format="html", disease=disease)
    pdf_report = audited(lambda: R.report_pdf(content), "export_report", patient, format="pdf", disease=disease)
    c1.download_button("Report (HTML)", data=html_report, file_name=f"{patient}_report.html",
                       mime="text/html", icon=":material/download:", key="report_html", on_click="ignore")
    c2.download_button("Report (PDF)", data=pdf_report, file_name=f"{patient}_report.pdf",
                       mime="application/pdf", icon=":material/picture_as_pdf:", key="report_pdf", on_click="ignore")


@st.fragment
def _disease_part(source: str, checkpoint: str, patient_id: str) -> None:
    """Everything that depends on the selected disease: switching it reruns only this fragment."""
    record = _record(source, patient_id)
    scores = (scores_or_none(source, checkpoint) or {}).get(patient_id)
    options = _disease_options(record, scores)
    disease = None
    if options:
        if st.session_state.get("disease") not in options:
            st.session_state["disease"] = _default_disease(record, scores, options)
    if scores is not None:
        st.subheader("Predictions")
        left, right = st.columns([6, 5], gap="medium")
        with right:
            disease = st.selectbox("Disease", options, key="disease", format_func=short_label,
                                   help="The disease whose contributions and evidence are shown.")
            _contribution_chart(scores, disease)
        with left:
            _predictions_table(scores, disease)
    elif options:
        disease = st.selectbox("Disease (for the planted evidence)", options, key="disease")
    model_evidence = None
    if scores is not None and disease:
        model_evidence = _model_evidence(source, checkpoint, patient_id, disease)
    _downloads(source, checkpoint, record, scores, disease, model_evidence)

    planted = False
    if record.truth is not None:
        planted = st.toggle("Planted truth instead of model attribution (synthetic ground truth)", key="show_planted",
                            help="Off: the panels are shaded by the model's attribution for this disease. On: by where "
                                 "the generator planted this disease's evidence, through the same shading, so the "
                                 "two can be compared.")
    mode = "planted" if planted else ("model" if model_evidence is not None else "none")
    if planted:
        evidence = planted_evidence(source, patient_id, disease)
    elif model_evidence is not None:
        evidence = model_evidence
    else:
        evidence = dict.fromkeys(REGISTRY.keys())
    _evidence_banner(mode, disease)
    st.divider()
    left, right = st.columns([11, 9], gap="medium")
    coverage = _coverage(source, checkpoint, checkpoint_stamp(checkpoint), patient_id) if checkpoint else {}
    with left:
        _lab_panel(source, record, evidence["labs"] or None, mode, coverage.get("labs"))
    with right:
        _notes_panel(record, evidence["notes"] or None, mode,
                     (lambda: _word_spans(source, checkpoint, patient_id, disease)) if mode == "model" else None)
    st.divider()
    left, right = st.columns([3, 2], gap="medium")
    with left:
        _vitals_panel(source, record, mode, disease, checkpoint, coverage.get("vitals"))
    with right:
        _xray_panel(record, evidence["image"] or None, mode)


def _evidence_banner(mode: str, disease: str | None) -> None:
    """Which view the shading below is: the model's attribution or the planted truth (or none)."""
    name = short_label(disease) if disease else ""
    if mode == "model":
        st.html(f'<div class="mf-evidence-mode" style="font-size:0.9rem;">Evidence shading: <b>model attribution</b> '
                f'for <b>{_escape(name)}</b> (what this model used; orange raises the risk, blue lowers it).</div>')
    elif mode == "planted":
        st.html(f'<div class="mf-evidence-mode" style="font-size:0.9rem;">Evidence shading: <b>planted truth</b> '
                f'for <b>{_escape(name)}</b> (where the synthetic generator put the evidence; not the model).</div>')
    else:
        st.caption("Evidence shading: off (no model loaded).")


def _escape(text: str) -> str:
    import html

    return html.escape(text)


# ------------------------------------------------------------------------------------------- page


def _requested_patient(ids: list[str]) -> str:
    wanted = st.query_params.get(PATIENT_PARAM) or st.session_state.get(PATIENT_KEY)
    if wanted and wanted not in ids:
        st.warning(f"Patient {wanted!r} is not in this source; showing {ids[0]}.")
    return wanted if wanted in ids else ids[0]


def _on_pick() -> None:
    pid = st.session_state["patient_picker"]
    st.session_state[PATIENT_KEY] = pid
    st.query_params[PATIENT_PARAM] = pid


source = str(current_source())
checkpoint = current_checkpoint()
by_id = records_by_id(source)
ids = list(by_id)

if not ids:
    st.title("Patient review")
    st.warning("No readable patient bundles in this source.")
    st.stop()

requested = _requested_patient(ids)
if st.session_state.get("patient_picker") != requested:
    st.session_state["patient_picker"] = requested
title_col, pick_col = st.columns([4, 1], vertical_alignment="bottom")
pid = pick_col.selectbox("Patient", ids, key="patient_picker", on_change=_on_pick)
st.session_state[PATIENT_KEY] = pid
if st.query_params.get(PATIENT_PARAM) != pid:
    st.query_params[PATIENT_PARAM] = pid
record = by_id[pid]
audit_event("view_patient", patient_id=pid, once=True, required=True, source=source)
title_col.title(f"Patient {pid}", anchor=False)
st.text(H.demographics_line(record, V.body_size(record)))
st.html(H.modality_badges_html(record))
if record.problems:
    with st.expander(f"Loading warnings ({len(record.problems)}): some data could not be used"):
        st.dataframe(H.problems_frame(record), hide_index=True, width="stretch")

scores = scores_or_none(source, checkpoint)
patient_scores = (scores or {}).get(pid)
if scores is None:
    st.info(predictor_or_reason(checkpoint)[1], icon=":material/info:")
elif patient_scores is None:
    st.info("The model has no prediction for this patient.", icon=":material/info:")
_disease_part(source, checkpoint, pid)

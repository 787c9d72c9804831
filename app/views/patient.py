"""Patient review: one patient's evidence in four panels (labs, notes, vital signs, chest X-ray).

The view only lays out what app/components builds. Each panel takes an optional attribution
(model explanations, later; for synthetic patients the planted truth can be shown through the same
path). A missing modality is said in words, never an error; a file that failed to load is listed in
the header's loading warnings and the rest of the page still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.components import labs as L
from app.components import notes as N
from app.components import patient_header as H
from app.components import vitals as V
from app.components import xray as X
from app.components.shading import legend_html, max_abs
from app.components.worklist import short_label
from app.components import contributions as C
from app.components import report as R
from app.scoring import UNCERTAINTY_HELP, UNCERTAINTY_NAME, PatientScores
from app.state import (current_checkpoint, current_source, load_cohort, model_is_synthetic, predictor_or_reason,
                       scores_or_none)
from medfuse_core.record import PatientRecord

PATIENT_PARAM = "patient"  # ?patient=P00012 makes a review page linkable
PATIENT_KEY = "patient_id"  # shared with the worklist: the patient last opened


# ------------------------------------------------------------------------------------------ data


@st.cache_resource(show_spinner=False)
def _records_by_id(source: str) -> dict[str, PatientRecord]:
    return {r.patient_id: r for r in load_cohort(source)}


def _record(source: str, patient_id: str) -> PatientRecord:
    return _records_by_id(source)[patient_id]


@st.cache_data(show_spinner=False, max_entries=64)
def _lab_tables(source: str, patient_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = L.lab_rows(_record(source, patient_id))
    return L.latest_per_item(rows), rows


@st.cache_resource(show_spinner=False, max_entries=32)
def _vitals_figure(source: str, patient_id: str, planted: bool, disease: str | None = None) -> Any:
    record = _record(source, patient_id)
    return V.vitals_figure(record, _planted(source, patient_id, disease)["vitals"] if planted else None)


@st.cache_data(show_spinner=False, max_entries=64)
def _planted(source: str, patient_id: str, disease: str | None = None) -> dict[str, Any]:
    """The synthetic cohort's planted evidence in the panels' attribution formats (one disease, or all)."""
    record = _record(source, patient_id)
    out: dict[str, Any] = {"labs": {}, "notes": {}, "vitals": {}, "image": {}}
    evidence = (record.truth or {}).get("evidence", {}) or {}
    if disease is not None:
        evidence = {disease: evidence[disease]} if disease in evidence else {}
    folder = Path(record.source)
    for item in evidence.values():
        for lab in item.get("labs", []) or []:
            name = lab.get("item") or lab.get("label")
            if name:
                out["labs"][str(name)] = 1.0
        for span in item.get("notes", []) or []:
            for i, note in enumerate(record.notes):
                if span.get("file") and Path(note.source).name == Path(span["file"]).name:
                    out["notes"].setdefault(i, []).append((int(span["start"]), int(span["end"]), 1.0))
        for vit in item.get("vitals", []) or []:
            lo, hi = (vit.get("hours") or [0, 0])[:2]
            hours = out["vitals"].setdefault(vit["channel"], {})
            for h in range(int(np.floor(lo)), int(np.ceil(hi))):
                hours[h] = 1.0
        for img in item.get("image", []) or []:
            for i, image in enumerate(record.images):
                if Path(image.source).name != Path(img.get("file", "")).name:
                    continue
                mask = _read_mask(folder / img["mask"]) if img.get("mask") else None
                if mask is None or mask.shape != image.pixels.shape:
                    mask = np.zeros(image.pixels.shape, dtype=np.float32)
                    x0, y0, x1, y1 = (int(v) for v in img["box"])
                    mask[y0:y1, x0:x1] = 1.0
                out["image"][i] = np.maximum(out["image"].get(i, 0), mask)
    return out


def _read_mask(path: Path) -> np.ndarray | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            return (np.asarray(im.convert("L"), dtype=np.float32) > 127).astype(np.float32)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------- panels


def _lab_panel(source: str, record: PatientRecord, attribution: dict | None) -> None:
    st.subheader("Labs")
    if not record.has("labs"):
        st.info("No lab results in this record.")
        return
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
        st.html(legend_html(max_abs(attribution.values())))


def _notes_panel(record: PatientRecord, spans_by_note: dict[int, list] | None) -> None:
    st.subheader("Notes")
    notes = [(i, n) for i, n in enumerate(record.notes) if n.text.strip()]
    if not notes:
        st.info("No clinical notes in this record.")
        return
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
    # st.html sanitises again (DOMPurify); our HTML is escaped already, so that is a second guard.
    with st.container(height=640, border=False):  # as tall as the labs table
        st.html("".join(blocks))


def _vitals_panel(source: str, record: PatientRecord, planted: bool, disease: str | None = None) -> None:
    st.subheader("Vital signs")
    if not record.has("vitals"):
        st.info("No vital signs in this record.")
        return
    channels = V.channels_present(record)
    st.caption(f"{len(channels)} channels · green band = normal range · red points outside it · "
               f"dotted lines = the model's first {V.WINDOW_HOURS} h")
    fig = _vitals_figure(source, record.patient_id, planted, disease)
    st.plotly_chart(fig, width="stretch", key="vitals_chart", config={"displaylogo": False})


@st.fragment
def _xray_panel(record: PatientRecord, overlays: dict[int, np.ndarray] | None) -> None:
    """A fragment: moving the window/level sliders reruns only this panel."""
    st.subheader("Chest X-ray")
    if not record.has("image"):
        failed = [p for p in record.problems if "images" in Path(p.file).parts]
        st.info("No chest X-ray in this record."
                + (" An image file could not be read; see the loading warnings above." if failed else ""))
        return
    labels = [X.image_label(i, im, record.hours_since_index(im.time) if im.time is not None else None)
              for i, im in enumerate(record.images)]
    index = 0
    if len(labels) > 1:
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
        opacity = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05, key="xray_opacity")
    fig = X.xray_figure(image.pixels, centre, width, overlay=overlay, overlay_opacity=opacity,
                        signed=bool(overlay is not None and np.min(overlay) < 0))
    st.plotly_chart(fig, width="stretch", key="xray_chart",
                    config={"displaylogo": False, "scrollZoom": True})
    st.caption("Drag to zoom, scroll to zoom, double-click to reset.")
    with st.expander("Image details"):
        st.dataframe(X.metadata_frame(image), hide_index=True, width="stretch")


# ------------------------------------------------------------------------------ the model's view


def _model_evidence(source: str, checkpoint: str, patient_id: str, disease: str) -> dict[str, Any] | None:
    """The model's evidence-level attributions for one disease, in the panels' formats.

    TODO(lead): wire medfuse_core.explain.explain(record, predictor, labels=[disease]) here (its
    api.py appeared while this page was written and was still changing). Map
    `explanation.per_label[disease].evidence` (LabelEvidence) to the panels' formats, as the planted
    evidence in `_planted` is mapped: labs -> {lab name: attribution}; note_sentences ->
    {note_index: [(start, end, attribution)]}; vitals spans -> {channel: {hour: attribution}} (also
    pass it into `_vitals_figure`, which today shades planted hours only); image heatmap (film pixel
    grid) -> {image_index: signed map}. Cache it with st.cache_data keyed by (source, checkpoint,
    patient, disease) and use it when the planted toggle is off. Until then: planted truth or no shading.
    """
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
                 "Red raises the risk, blue lowers it.")


def _report_content(source: str, checkpoint: str, record: PatientRecord, scores: PatientScores | None,
                    disease: str | None) -> R.ReportContent:
    """What the exported report holds (plain text; the report escapes it)."""
    latest, _ = _lab_tables(source, record.patient_id)
    evidence: dict[str, list[str]] = {}
    abnormal = latest[latest["abnormal"]] if not latest.empty else latest
    evidence["Abnormal lab results (latest value)"] = [
        f"{r.item}: {r.value} {r.unit} ({r.flag or 'abnormal'}; reference {r.reference or 'not given'})"
        for r in abnormal.itertuples(index=False)]
    if disease and record.truth is not None:
        planted = ((record.truth or {}).get("evidence", {}) or {}).get(disease)
        if planted:
            evidence[f"Planted evidence for {disease} (synthetic ground truth)"] = [
                f"{route}: {len(planted.get(route) or [])} item(s)" for route in ("labs", "notes", "vitals", "image")]
    notes = [(N.note_heading(n.time, n.category, record.hours_since_index(n.time)
                             if n.time is not None and pd.notna(n.time) else None), n.text)
             for n in record.notes if n.text.strip()]
    return R.ReportContent(
        patient_id=record.patient_id, demographics=H.demographics_line(record, V.body_size(record)),
        modalities=", ".join(H.MODALITY_NAMES[m] for m in record.present_modalities) or "none",
        scores=scores, disease=disease, checkpoint=checkpoint, synthetic_model=model_is_synthetic(checkpoint),
        synthetic_data=record.truth is not None, evidence=evidence, notes=notes)


def _downloads(source: str, checkpoint: str, record: PatientRecord, scores: PatientScores | None,
               disease: str | None) -> None:
    content = _report_content(source, checkpoint, record, scores, disease)
    c1, c2, _ = st.columns([1, 1, 3])
    c1.download_button("Report (HTML)", data=lambda: R.report_html(content), file_name=f"{record.patient_id}_report.html",
                       mime="text/html", icon=":material/download:", key="report_html", on_click="ignore")
    c2.download_button("Report (PDF)", data=lambda: R.report_pdf(content), file_name=f"{record.patient_id}_report.pdf",
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
    _downloads(source, checkpoint, record, scores, disease)

    model_evidence = _model_evidence(source, checkpoint, patient_id, disease) if (scores and disease) else None
    planted = False
    if record.truth is not None:
        planted = st.toggle("Show planted evidence for this disease (synthetic ground truth)", key="show_planted",
                            help="Highlights where the generator planted this disease's evidence, through the same "
                                 "shading the model's attributions use.")
    if planted:
        evidence = _planted(source, patient_id, disease)
    elif model_evidence is not None:
        evidence = model_evidence
    else:
        evidence = {"labs": None, "notes": None, "vitals": None, "image": None}
    st.divider()
    left, right = st.columns([11, 9], gap="medium")
    with left:
        _lab_panel(source, record, evidence["labs"] or None)
    with right:
        _notes_panel(record, evidence["notes"] or None)
    st.divider()
    left, right = st.columns([3, 2], gap="medium")
    with left:
        _vitals_panel(source, record, planted, disease)
    with right:
        _xray_panel(record, evidence["image"] or None)


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
by_id = _records_by_id(source)
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

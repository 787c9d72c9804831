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
from app.state import current_source, load_cohort
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
def _vitals_figure(source: str, patient_id: str, planted: bool) -> Any:
    record = _record(source, patient_id)
    return V.vitals_figure(record, _planted(source, patient_id)["vitals"] if planted else None)


@st.cache_data(show_spinner=False, max_entries=32)
def _planted(source: str, patient_id: str) -> dict[str, Any]:
    """The synthetic cohort's planted evidence in the panels' attribution formats (all diseases)."""
    record = _record(source, patient_id)
    out: dict[str, Any] = {"labs": {}, "notes": {}, "vitals": {}, "image": {}}
    evidence = (record.truth or {}).get("evidence", {}) or {}
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


def _vitals_panel(source: str, record: PatientRecord, planted: bool) -> None:
    st.subheader("Vital signs")
    if not record.has("vitals"):
        st.info("No vital signs in this record.")
        return
    channels = V.channels_present(record)
    st.caption(f"{len(channels)} channels · green band = normal range · red points outside it · "
               f"dotted lines = the model's first {V.WINDOW_HOURS} h")
    fig = _vitals_figure(source, record.patient_id, planted)
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

planted = False
if record.truth is not None:
    planted = st.toggle("Show planted evidence (synthetic ground truth)", key="show_planted",
                        help="Highlights where the generator planted disease evidence, through the same "
                             "shading the model's attributions will use.")
evidence = _planted(source, pid) if planted else {"labs": None, "notes": None, "image": None}

left, right = st.columns([11, 9], gap="medium")
with left:
    _lab_panel(source, record, evidence["labs"] or None)
with right:
    _notes_panel(record, evidence["notes"] or None)
st.divider()
left, right = st.columns([3, 2], gap="medium")
with left:
    _vitals_panel(source, record, planted)
with right:
    _xray_panel(record, evidence["image"] or None)

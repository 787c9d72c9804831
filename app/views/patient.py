"""Patient review: one patient's evidence in four panels (labs, notes, vital signs, chest X-ray).

The view only lays out what app/components builds. Each panel takes an optional attribution: the
model's evidence for the selected disease (medfuse_core.explain.explain, cached per source,
checkpoint, patient and disease), or, for synthetic patients, the planted truth through the same
shading, as a separate, labelled view. A missing modality is said in words, never an error; a file
that failed to load is listed in the header's loading warnings and the rest of the page still works.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st

from app.auth import DEV_VIEWER, audit_event, audited, current_viewer
from app.components import labs as L
from app.components import notes as N
from app.components import patient_header as H
from app.components import vitals as V
from app.components import xray as X
from app.components.shading import legend_html, max_abs
from app.components.worklist import short_label
from app.components import contributions as C
from app.components.plain import markdown_escape
from app.components import evidence as E
from app.components import report as R
from app.components.wording import UNCERTAINTY_HELP, UNCERTAINTY_NAME
from app.scoring import TOP_SENTENCES
from app.explanations import SERVICE as EXPLAINED
from app.state import (checkpoint_stamp, current_checkpoint, current_source, load_cohort, model_is_synthetic,
                       planted_evidence, predictor_or_reason, record_by_id, records_by_id, scores_or_none)
from medfuse_core.explain.scores import PatientScores
from medfuse_core.explain.probability_scale import risk_points
from medfuse_core.modalities import REGISTRY
from app import tables as T
from medfuse_core.provenance import portable_path
from medfuse_core.runtime.threads import interactive_threads
from medfuse_core.record import PatientRecord

PATIENT_PARAM = "patient"  # ?patient=P00012 makes a review page linkable
PATIENT_KEY = "patient_id"  # shared with the worklist: the patient last opened
DISEASE_PARAM = "disease"  # ?disease=...: the worklist opens a patient on the disease it was sorted by
DISEASE_PATIENT_KEY = "disease_patient"  # the patient the selected disease was chosen for


# ------------------------------------------------------------------------------------------ data


def _record(source: str, patient_id: str) -> PatientRecord:
    return record_by_id(source, patient_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _lab_tables(source: str, patient_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = L.lab_rows(_record(source, patient_id))
    return L.latest_per_item(rows), rows


@st.cache_resource(show_spinner=False, max_entries=64)
def _vitals_chart(source: str, patient_id: str) -> str:
    """The vitals small multiples as an image (the same for every disease: the attribution is the strip above)."""
    svg = V.vitals_svg(_record(source, patient_id))
    return V.svg_image_html(svg) if svg else ""


# ---------------------------------------------------------------------------------------- panels


@st.cache_data(show_spinner=False, max_entries=128)
def _coverage(source: str, checkpoint: str, stamp: float, patient_id: str,
              left_out: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Per modality, the model's coverage of the record (medfuse_core.features.coverage): the summary line
    and the unread rows with the reason, a modality the domain check `left_out` counted as not read; empty
    without a model."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return {}
    try:
        cov = predictor.featurizer.coverage(_record(source, patient_id)).leaving_out(left_out)
    except Exception:  # noqa: BLE001 - the coverage line must never take the review page down
        return {}
    return {m: {"summary": c.summary(cov.hours), "unread": c.unread, "details": c.details}
            for m, c in cov.modalities.items()}


def _lazy_expander(label: str, key: str, draw: Callable[[], None]) -> None:
    """An expander whose content is built only while it is open (opening it reruns the fragment once): a
    table in a folded expander was still built, sent and drawn on every disease switch (issue 18)."""
    box = st.expander(label, key=key, on_change="rerun")
    with box:
        if box.open:
            draw()


def _coverage_line(coverage: dict[str, Any] | None, key: str) -> None:
    """"12 of 52 lab results not used: 9 unknown tests, 3 unknown units", expandable to the list."""
    if not coverage or not coverage["unread"]:
        return
    st.caption(coverage["summary"])
    _lazy_expander("Not used by the model, and why", f"coverage_{key}", lambda: st.dataframe(
        pd.DataFrame(coverage["details"], columns=["what", "time", "reason"]), hide_index=True, width="stretch"))


def _lab_panel(source: str, record: PatientRecord, attribution: dict | None, mode: str = "none",
               read: dict | None = None, coverage: dict[str, Any] | None = None) -> None:
    st.subheader("Labs")
    if not record.has("labs"):
        st.info("No lab results in this record." + (" The labs contribute nothing." if mode == "model" else ""))
        return
    _coverage_line(coverage, "labs")
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
                        "abnormal", "stamp", "critical"]].copy()
        config = {}
        seen = L.read_by_model(table, read) if mode == "model" and read else None
        if seen is not None and seen.str.len().gt(0).any():  # only when some value read is not the latest shown
            table.insert(table.columns.get_loc("hours"), "model read", seen)
            config["model read"] = {"help": "The result the model read for this item (its last one in the model's "
                                            f"first {V.WINDOW_HOURS} h), where it is not the latest value shown."}
    # pixel widths so every column fits 1440 px (issue 18; 972 px with "model read", the grid has 978);
    # helper columns (abnormal, stamp, critical) are left out by column_order
    widths = {"item": 130, "value": 62, "attribution": 130, "flag": 94, "reference": 86, "unit": 62,
              "previous": 66, "n": 36, "model read": 112, "hours": 66, "time": 128}
    shown = [c for c in ("item", "value", "attribution", "flag", "reference", "unit", "previous", "n", "model read",
                         "hours", "time") if c in table.columns or (c == "attribution" and attribution)]
    labels = {"hours": "h", "time": "result time", "attribution": "effect on risk"}
    column_config = {c: st.column_config.Column(labels.get(c, c), width=widths[c]) for c in shown}
    column_config["attribution"] = st.column_config.Column(
        "effect on risk", width=widths["attribution"],
        help="Whether this result raised or lowered the risk of the selected disease, and how strongly compared "
             "with this patient's other results; – = not read by the model.")
    for name, setting in config.items():
        column_config[name] = st.column_config.Column(labels.get(name, name), width=widths.get(name),
                                                      help=getattr(setting, "get", lambda *_: None)("help"))
    height = min(36 * (len(table) + 1) + 4, 640)  # the latest-per-item view usually fits unscrolled
    st.dataframe(L.style_labs(table, attribution), hide_index=True, width="stretch", height=height,
                 column_order=shown, column_config=column_config)
    if attribution:
        st.html(legend_html(max_abs(attribution.values()), _ATTRIBUTION_WHAT[mode], numbers=mode != "model"))
        if mode == "model":
            def exact() -> None:
                st.caption("Integrated Gradients on each item's value embedding (baseline: every item at its "
                           "training median), in log-odds of the selected disease; the results the model did not read "
                           "are listed above the table, each with the reason.")
                st.dataframe([{"item": k, "attribution (log-odds)": round(float(v), 4)}
                              for k, v in sorted(attribution.items(), key=lambda kv: -abs(kv[1]))],
                             hide_index=True, width="stretch")
            _lazy_expander("For researchers: exact lab attributions and method", "researcher_labs", exact)
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
            help="Sentences: how much each sentence raised or lowered the risk. Words: the words of the "
                 f"{TOP_SENTENCES} most important sentences (takes a few seconds the first time for each "
                 "disease).") or "Sentences"
        if level == "Words":
            pieces = word_spans()
            spans_by_note = {i: N.whole_words(record.notes[i].text, spans) for i, spans in pieces.items()
                             if 0 <= i < len(record.notes)}
            st.caption(f"Words of the {TOP_SENTENCES} sentences that moved the risk most; "
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
        st.html(legend_html(scale, _ATTRIBUTION_WHAT[mode], numbers=mode != "model"))
    # st.html sanitises again (DOMPurify); our HTML is escaped already, so that is a second guard.
    with st.container(height=480, border=False):
        st.html("".join(blocks))


def _vitals_panel(source: str, record: PatientRecord, attribution: dict | None, mode: str = "none",
                  coverage: dict[str, Any] | None = None, left_out_by_domain: bool = False) -> None:
    st.subheader("Vital signs")
    if not record.has("vitals"):
        st.info("No vital signs in this record." + (" The vitals contribute nothing." if mode == "model" else ""))
        return
    _coverage_line(coverage, "vitals")
    channels = V.channels_present(record)
    left_out = V.not_drawn_note(record)
    if left_out:
        st.warning(left_out, icon=":material/warning:")
    strip = V.effect_strip_svg(record, attribution) if attribution else ""
    if strip:
        st.caption({"model": f"How each vital sign moved the risk, hour by hour over the model's first "
                             f"{V.WINDOW_HOURS:g} h:",
                    "planted": f"Where the evidence was planted, hour by hour over the first {V.WINDOW_HOURS:g} h:"
                    }.get(mode, ""))
        st.html(V.svg_image_html(strip, "How each vital sign moved the risk, hour by hour", "mf-vitals-effect")
                + legend_html(1.0, _ATTRIBUTION_WHAT[mode], numbers=False))
        if mode == "model":
            st.caption(V.effect_summary(record, attribution))
    elif mode == "model" and left_out_by_domain:
        st.caption("The vital signs were left out of this prediction (unlike the training data), so they did "
                   "not move this risk.")
    elif mode == "model":
        st.caption("The vital signs did not move this risk in the model's window.")
    st.caption(f"{len(channels)} channels · green band = normal range · red points outside it · "
               f"dotted lines = the model's first {V.WINDOW_HOURS:g} h · exact values in the table below")
    try:
        chart = _vitals_chart(source, record.patient_id)
    except Exception as exc:  # one panel must never take the page down
        st.warning(f"The vital signs could not be drawn ({type(exc).__name__}).", icon=":material/warning:")
        chart = ""
    if chart:
        st.html(chart)
    _lazy_expander("Every reading, with its time", "vitals_readings", lambda: st.dataframe(
        V.readings_frame(record), hide_index=True, width="stretch", height=300))


@st.cache_resource(show_spinner=False, max_entries=64)
def _film(source: str, patient_id: str, index: int, centre: float, width: float) -> tuple[str, int]:
    """The film as the viewer sends it (xray.film_png), per image and window: the same for every disease."""
    return X.film_png(_record(source, patient_id).images[index].pixels, centre, width)


@st.fragment
def _xray_panel(source: str, record: PatientRecord, overlays: dict[int, np.ndarray] | None,
                mode: str = "none") -> None:
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
    top = X.grey_levels(image)  # the sliders run in the film's own grey levels (0-255, 0-4095, ...)
    c1, c2 = st.columns(2)
    centre = c1.slider(f"Window centre (0-{top})", 0, top, (top + 1) // 2, max(1, top // 255), key="xray_centre")
    width = c2.slider(f"Window width (1-{top + 1})", 1, top + 1, top + 1, max(1, top // 255), key="xray_width")
    centre, width = centre / top, width / top
    overlay = (overlays or {}).get(index)
    opacity = 0.5
    if overlay is not None:
        opacity = st.slider(f"Overlay opacity ({_ATTRIBUTION_WHAT[mode]})", 0.0, 1.0, 0.45, 0.05, key="xray_opacity")
    elif mode == "model" and overlays:
        st.caption(f"The model read image {next(iter(overlays)) + 1}; its attribution map is shown there.")
    fig = X.xray_figure(image.pixels, centre, width, overlay=overlay, overlay_opacity=opacity,
                        film=_film(source, record.patient_id, index, centre, width),
                        signed=bool(overlay is not None and np.min(overlay) < 0))
    st.plotly_chart(fig, width="stretch", key="xray_chart",
                    config={"displaylogo": False, "scrollZoom": True})
    st.caption("Drag to zoom, scroll to zoom, double-click to reset."
               + (" Overlay: where on the film the model found evidence for this disease (orange = stronger)."
                  if overlay is not None and mode == "model" else ""))
    if overlay is not None and mode == "model":
        with st.expander("For researchers: how the overlay is made"):
            st.caption("Grad-CAM on a late stage of the image encoder multiplied by Integrated Gradients on the "
                       "pixels, for the selected disease's logit.")
    _lazy_expander("Image details", "xray_details",
                   lambda: st.dataframe(X.metadata_frame(image), hide_index=True, width="stretch"))


# ------------------------------------------------------------------------------ the model's view


def _explained(source: str, checkpoint: str, stamp: float, patient_id: str, disease: str,
               words: bool = False) -> dict[str, Any]:
    """`explain_panels` per (checkpoint, patient record, disease, words), computed once per server for every
    session, usually before it is asked for (app/explanations.py; shared: never changed here): word-level note
    attribution only when the notes panel is switched to "Words". A failure the background worker recorded is
    raised here as if computed now."""
    predictor, _ = predictor_or_reason(checkpoint)
    if predictor is None:
        return E.empty_evidence()
    record = _record(source, patient_id)
    key = EXPLAINED.key(record, checkpoint, stamp, disease, words)
    return EXPLAINED.get(key, record, predictor, waiting=lambda: st.spinner("Explaining the prediction..."))


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
    frame = C.predictions_display(scores, disease)
    st.dataframe(frame, hide_index=True, width="stretch", key="predictions_table",
                 height=T.table_height(len(frame)), column_config=T.predictions_columns())
    st.caption(" ".join(C.status_lines(scores)))  # the patient's status; what this checkpoint cannot check


def _contribution_chart(scores: PatientScores, disease: str) -> None:
    k = scores.index(disease)
    st.markdown("**" + C.probability_sentence(disease, float(scores.probabilities[k]), float(scores.thresholds[k]),
                                              float(scores.subset_low[k]), float(scores.subset_high[k])) + "**")
    start, shares, end = risk_points(scores, disease)
    points = C.source_points(shares)
    st.html(C.risk_bars_html(start, points, end))
    st.caption(C.risk_sentence(points, C.present_by_modality(scores))
               + " Orange raised the risk, blue lowered it; the points add up to this patient's risk.")
    # the waterfall is drawn only while the expander is open (one rerun of this fragment when it is opened):
    # a Plotly chart the browser rebuilt on every disease switch even folded away (issue 18)
    researcher = st.expander("For researchers: exact contributions (log-odds), formula and methods",
                             key="researcher_contributions", on_change="rerun")
    with researcher:
        base, contributions, logit = C.scores_contributions(scores, disease)
        if researcher.open:
            st.plotly_chart(C.waterfall_figure(base, contributions, logit), width="stretch", key="contrib_chart",
                            config={"displaylogo": False})
        st.caption(C.contribution_sentence(contributions, C.present_by_modality(scores)))
        st.markdown(
            f"Exact Shapley values of the fusion tokens (four modality-specific tokens and the shared token), on the "
            f"logit: base value {base:+.3f} (every modality hidden) + contributions = {logit:+.3f}; probability = "
            f"the log-odds {scores.calibration}. "
            "The percentage points above are the Shapley values of that calibrated probability over the same tokens "
            "(medfuse_core/explain/probability_scale.py). The range in the table is the "
            f"{UNCERTAINTY_NAME}: {UNCERTAINTY_HELP}")


@st.cache_data(show_spinner="Re-running the model on the data available at each point of the stay...", max_entries=64)
def _trajectory(source: str, checkpoint: str, stamp: float, patient_id: str) -> Any:
    """medfuse_core.trajectory.risk_trajectory, cached per patient and checkpoint."""
    from medfuse_core.trajectory import risk_trajectory

    predictor, _ = predictor_or_reason(checkpoint)
    with interactive_threads():
        return risk_trajectory(predictor, _record(source, patient_id))


@st.cache_resource(show_spinner="Preparing the reference patients (first time only)...", max_entries=4)
def _reference_bank(source: str, checkpoint: str, stamp: float) -> tuple[Any, str]:
    """The next test's reference patients: for a model trained on a `synth` cohort, the first
    REFERENCE_PATIENTS of that very training cohort regenerated in memory (the generator is deterministic);
    otherwise the patients of the current source. (bank, what it is in words)."""
    from medfuse_core.next_test import build_reference_bank
    from medfuse_core.sources.synth import generate_patient

    predictor, _ = predictor_or_reason(checkpoint)
    made_by = str(((predictor.config.get("data") or {}).get("made_by")) or "")
    words = made_by.split()
    with interactive_threads():
        if words[:1] == ["synth"] and "--seed" in words:
            seed = int(words[words.index("--seed") + 1])
            size = int(words[words.index("--image-size") + 1]) if "--image-size" in words else \
                int(predictor.featurizer.spec.image_size)
            records = [generate_patient(seed, i, image_size=size) for i in range(REFERENCE_PATIENTS)]
            return build_reference_bank(predictor, records), (f"{REFERENCE_PATIENTS} patients of the model's training "
                                                              f"cohort (`{made_by}`)")
        return build_reference_bank(predictor, load_cohort(source)), "the patients of the current source"


REFERENCE_PATIENTS = 150
NEXT_TEST_K = 20


def _over_time_and_next_test(source: str, checkpoint: str, patient_id: str, scores: PatientScores,
                             disease: str) -> None:
    """Risk over time and the next test, each behind a switch (both run the model again)."""
    c1, c2 = st.columns(2)
    over_time = c1.toggle("Risk over time", key="show_trajectory",
                          help="The model re-run on the data available at 6, 12, 24, 36 and 48 h and at each note "
                               "and film: how this disease's risk built up, and what moved it.")
    next_test = c2.toggle("What a missing test could change", key="show_next_test",
                          help="For each source this patient lacks: the range its probability could move to, "
                               "estimated from the most similar reference patients who had it.")
    stamp = checkpoint_stamp(checkpoint)
    if over_time:
        trajectory = _trajectory(source, checkpoint, stamp, patient_id)
        hours, probs = trajectory.series(disease)
        st.plotly_chart(C.trajectory_figure(hours, probs, short_label(disease)), width="stretch",
                        key="trajectory_chart", config={"displaylogo": False})
        moves = trajectory.biggest_moves(disease)
        st.caption(("What moved it: " + "; ".join(moves) + ".") if moves else
                   "No arrival moved this risk by 5 points or more.")
    if next_test:
        from medfuse_core.next_test import next_test_for_record

        bank, what = _reference_bank(source, checkpoint, stamp)
        with interactive_threads():
            ranges = next_test_for_record(predictor_or_reason(checkpoint)[0], _record(source, patient_id), bank,
                                          k=NEXT_TEST_K)
        k = scores.index(disease)
        if not ranges:
            st.caption("This patient has every source the model reads: no test is missing.")
        for r in ranges:
            st.markdown(f"- {H.MODALITY_NAMES[r.modality][:1].upper() + H.MODALITY_NAMES[r.modality][1:]} could move {short_label(disease)} from "
                        f"{r.now[k]:.0%} to **{r.low[k]:.0%}–{r.high[k]:.0%}**")
        st.caption(f"Estimated from the {NEXT_TEST_K} reference patients most like this one ({what}): their "
                   "results for the missing source completed this patient's data; the range holds 90 % of the "
                   "resulting probabilities (benchmarks/results/next_test.md: coverage on held-out patients).")


def _feedback_form(checkpoint: str, patient_id: str, disease: str, evidence: dict[str, Any] | None) -> None:
    """Agree / disagree / implausible, with an optional comment, on the prediction or one piece of its
    evidence; kept in the audit trail (medfuse_core/feedback.py). A form: nothing reruns until it is sent."""
    from medfuse_core import audit
    from medfuse_core.feedback import MAX_COMMENT, PREDICTION_TARGET, VERDICTS, record_feedback

    items = ((evidence or {}).get("summary") or {}).get("items") or {}
    targets = [PREDICTION_TARGET] + [f"{REGISTRY[route].display_name if route in REGISTRY else route}: {what}"
                                     for route, rows in items.items() for what, _ in rows]
    def form() -> None:  # its five widgets are built only while the expander is open (a switch redraws less)
        with st.form(f"feedback_{patient_id}", clear_on_submit=True, border=False):
            target = st.selectbox("About", targets, key="feedback_target")
            verdict = st.radio("Your view", VERDICTS, horizontal=True, key="feedback_verdict",
                               format_func=str.capitalize)
            comment = st.text_area("Comment (optional)", key="feedback_comment", max_chars=MAX_COMMENT, height=68)
            sent = st.form_submit_button("Send feedback")
        if sent:
            viewer = current_viewer() or DEV_VIEWER
            try:
                record_feedback(verdict, user=viewer.name, role=viewer.role, patient_id=patient_id,
                                checkpoint=checkpoint, label=disease, target=target, comment=comment)
            except (ValueError, audit.AuditError) as exc:
                st.error(f"The feedback was not saved: {exc}")
            else:
                st.success(f"Saved: {verdict} on {target[:60]} (audit trail).", icon=":material/check_circle:")

    _lazy_expander("Feedback on this prediction or its evidence", "feedback_open", form)


def _report_content(checkpoint: str, record: PatientRecord, scores: PatientScores | None, disease: str | None,
                    latest: pd.DataFrame, synthetic_model: bool,
                    model_evidence: dict[str, Any] | None = None) -> R.ReportContent:
    """What the exported report holds (plain text; the report escapes it). Plain Python: it runs on
    Streamlit's download thread, outside the script run, so what needs the run (caches) is passed in."""
    evidence: dict[str, list[str]] = {}
    abnormal = latest[latest["abnormal"]] if not latest.empty else latest
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
    image = overlay = None
    caption = ""
    if record.images:
        maps = (model_evidence or {}).get("image") or {}
        index = next(iter(maps), len(record.images) - 1) if maps else len(record.images) - 1
        index = index if 0 <= index < len(record.images) else 0
        film = record.images[index]
        image, overlay = film.pixels, maps.get(index)
        caption = X.image_label(index, film, record.hours_since_index(film.time) if film.time is not None else None)
    vitals = {}
    table = record.vitals.table
    for channel in V.channels_present(record)[:6]:
        rows = table[table["channel"] == channel]
        shown = V.display_of(channel)
        vitals[f"{shown.label} ({shown.unit})" if shown.unit else shown.label] = (
            record.hours_since_index(rows["time"]).to_numpy(dtype=float), rows["value"].to_numpy(dtype=float))
    labs = [{"item": r.item, "value": r.value, "unit": r.unit, "flag": r.flag or "abnormal",
             "reference": r.reference, "time": f"{r.time} ({r.hours:+.1f} h)" if pd.notna(r.hours) else r.time}
            for r in abnormal.itertuples(index=False)]
    return R.ReportContent(
        patient_id=record.patient_id, demographics=H.demographics_line(record, V.body_size(record)),
        modalities=", ".join(H.MODALITY_NAMES[m] for m in record.present_modalities) or "none",
        scores=scores, disease=disease, checkpoint=portable_path(checkpoint),
        synthetic_model=synthetic_model, synthetic_data=record.truth is not None, evidence=evidence,
        notes=notes, image=image, overlay=overlay, image_caption=caption, vitals=vitals, labs=labs,
        coverage=R.coverage_lines(record, V.WINDOW_HOURS, H.MODALITY_NAMES),
        risk=risk_points(scores, disease) if scores is not None and disease else None,
        no_prediction_reason=R.no_prediction_reason(record, scores, predictor_or_reason(checkpoint)[0] is not None))


def _downloads(source: str, checkpoint: str, record: PatientRecord, scores: PatientScores | None,
               disease: str | None, model_evidence: dict[str, Any] | None = None) -> None:
    latest, _ = _lab_tables(source, record.patient_id)
    synthetic_model = model_is_synthetic(checkpoint)
    # built when a file is downloaded, not on every rerun (issue 18: it was ~5 % of a disease switch's run)
    content = functools.cache(lambda: _report_content(checkpoint, record, scores, disease, latest, synthetic_model,
                                                      model_evidence))
    c1, c2 = st.columns(2)
    patient = record.patient_id  # each download is logged when the file is made (app/auth.py audited)
    html_report = audited(lambda: R.report_html(content()), "export_report", patient, format="html",
                          disease=disease)
    pdf_report = audited(lambda: R.report_pdf(content()), "export_report", patient, format="pdf", disease=disease)
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
    wanted = st.query_params.get(DISEASE_PARAM)
    opened = (patient_id, wanted)  # what the disease choice below was made for
    if options and (st.session_state.get("disease") not in options
                    or st.session_state.get(DISEASE_PATIENT_KEY) != opened):
        # a newly opened patient opens on the disease the worklist was sorted by, else on its own top
        # disease, never on the previous patient's choice
        st.session_state["disease"] = wanted if wanted in options else _default_disease(record, scores, options)
        st.session_state[DISEASE_PATIENT_KEY] = opened
    if scores is not None:
        st.subheader("Predictions")
        left, right = st.columns([3, 2], gap="medium")
        with right:
            disease = st.selectbox("Disease", options, key="disease", format_func=short_label,
                                   help="The disease whose contributions and evidence are shown.")
            _contribution_chart(scores, disease)
            _feedback_form(checkpoint, patient_id, disease, _model_evidence(source, checkpoint, patient_id, disease))
        with left:  # the report buttons, risk over time and the next test sit under the table, beside the chart
            _predictions_table(scores, disease)
            if disease:
                _downloads(source, checkpoint, record, scores, disease, _model_evidence(source, checkpoint,
                                                                                       patient_id, disease))
                _over_time_and_next_test(source, checkpoint, patient_id, scores, disease)
    elif options:
        disease = st.selectbox("Disease (for the planted evidence)", options, key="disease")
    model_evidence = None
    if scores is not None and disease:
        model_evidence = _model_evidence(source, checkpoint, patient_id, disease)
    if scores is None or not disease:
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
    if planted and not any(evidence.get(route) for route in ("labs", "notes", "vitals", "image")):
        st.info(f"Nothing was planted for {short_label(disease or '')} in this synthetic patient: the generator put "
                "no evidence for it in any panel, so none is shaded.", icon=":material/info:")
    st.divider()
    # the labs table full width: at 1440 px every column (previous value, n, hours, result time) fits
    coverage = (_coverage(source, checkpoint, checkpoint_stamp(checkpoint), patient_id,
                          tuple(scores.left_out) if scores is not None else ()) if checkpoint else {})
    _guarded("lab results", _lab_panel, source, record, evidence["labs"] or None, mode,
             (model_evidence or {}).get("labs_read") if mode == "model" else None, coverage.get("labs"))
    st.divider()
    _guarded("notes", _notes_panel, record, evidence["notes"] or None, mode,
             (lambda: _word_spans(source, checkpoint, patient_id, disease)) if mode == "model" else None)
    st.divider()
    left, right = st.columns([3, 2], gap="medium")
    with left:
        _guarded("vital signs", _vitals_panel, source, record, evidence["vitals"] or None, mode, coverage.get("vitals"),
                 scores is not None and "vitals" in scores.left_out)
    with right:
        _guarded("chest X-ray", _xray_panel, source, record, evidence["image"] or None, mode)


def _guarded(what: str, panel: Callable[..., None], *args: Any) -> None:
    """Draw one panel; if it fails, say so in its place and let the other panels draw (no traceback:
    Streamlit's own stop/rerun signals are BaseExceptions and pass through)."""
    try:
        panel(*args)
    except Exception as exc:
        st.warning(f"The {what} could not be shown ({type(exc).__name__}); the rest of the page is unaffected.",
                   icon=":material/warning:")


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
    if wanted and wanted not in ids:  # the URL's value is shown as text, never as markdown
        st.warning(f"Patient {markdown_escape(repr(wanted), 90)} is not in this source; showing "
                   f"{markdown_escape(ids[0])}.")
    return wanted if wanted in ids else ids[0]


def _on_pick() -> None:
    pid = st.session_state["patient_picker"]
    st.session_state[PATIENT_KEY] = pid
    st.query_params[PATIENT_PARAM] = pid
    st.query_params.pop(DISEASE_PARAM, None)  # the worklist's disease was for the patient opened from it


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
title_col.title(f"Patient {markdown_escape(pid)}", anchor=False)
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

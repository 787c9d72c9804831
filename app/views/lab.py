"""Disentanglement lab (researchers): does the model keep modality-specific and shared information apart?

Over the current cohort and checkpoint (medfuse_core/explain/disentanglement.py computes, app/components/lab.py draws):
per disease, the share of the contribution from each specific token and from the shared token; MI
estimates (vCLUB between specific and shared, InfoNCE between modalities' shared projections); CKA of
the shared projections across modalities; a leakage probe; a 2-D PCA of the embeddings. A second
checkpoint (a run folder) can be shown side by side. The model pass is cached per (source, checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.auth import require_role
from app.components import lab as LB
from app.components.worklist import short_label
from medfuse_core.explain.disentanglement import CohortDiagnostics, cohort_diagnostics
from medfuse_core.runtime.checkpoint import is_checkpoint
from medfuse_core.runtime.threads import interactive_threads
from app.state import checkpoint_stamp, current_checkpoint, current_source, load_cohort, predictor_or_reason

require_role("researcher")


@st.cache_data(show_spinner="Running the model over the cohort...", max_entries=8)
def _diagnostics(source: str, checkpoint: str, stamp: float = 0.0) -> CohortDiagnostics:
    predictor, reason = predictor_or_reason(checkpoint)
    if predictor is None:
        raise ValueError(reason)
    with interactive_threads():  # small batches: one thread is faster on a shared CPU (medfuse_core/runtime/threads.py)
        return cohort_diagnostics(predictor, load_cohort(source))


def _diagnostics_or_reason(source: str, checkpoint: str) -> tuple[CohortDiagnostics | None, str]:
    predictor, reason = predictor_or_reason(checkpoint)
    if predictor is None:
        return None, reason
    if not hasattr(predictor.model, "fusion"):
        return None, f"`{checkpoint}` is a baseline without fusion tokens: nothing to disentangle."
    try:
        return _diagnostics(source, checkpoint, checkpoint_stamp(checkpoint)), ""
    except Exception as exc:  # a checkpoint that does not fit the cohort must not crash the page
        return None, f"The diagnostics failed for `{checkpoint}` ({type(exc).__name__}: {exc})."


def _render(diag: CohortDiagnostics, name: str, key: str) -> None:
    """Every section for one checkpoint (`key` keeps the two columns' widgets apart)."""
    st.markdown(f"#### {name}")
    st.caption(f"{len(diag.patient_ids)} patients · {int(diag.present.any(1).sum())} with any modality")
    for note in diag.notes:
        st.info(note)

    st.markdown("**Where the prediction comes from**: mean share of |contribution| per token")
    st.plotly_chart(LB.shares_figure(diag), width="stretch", key=f"{key}_shares", config={"displaylogo": False})
    st.caption("Exact Shapley values of the five fusion tokens, as a share of their total size per patient, "
               "averaged over the cohort. A large grey bar: the shared token carries the decision.")

    st.markdown("**Mutual information**")
    st.dataframe(LB.mi_frame(diag), hide_index=True, width="stretch",
                 column_config={"nats": st.column_config.NumberColumn("nats", format="%.3f")})

    st.markdown("**CKA of shared projections across modalities**")
    st.plotly_chart(LB.cka_figure(diag.cka), width="stretch", key=f"{key}_cka", config={"displaylogo": False})
    st.caption("Linear CKA over the patients having both modalities (1 = the same geometry up to rotation "
               "and scale). The shared projections are meant to agree across modalities.")

    st.markdown("**Leakage probe**")
    st.dataframe(LB.probe_frame(diag), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%.2f")
                                for c in ("accuracy", "chance", "above chance")})
    st.caption(LB.probe_sentence(diag))

    st.markdown("**2-D projection (PCA) of specific (●) and shared (×) embeddings**")
    c1, c2 = st.columns(2)
    colour = c1.radio("Colour by", ["modality", "label"], horizontal=True, key=f"{key}_colour")
    label = None
    if colour == "label":
        label = c2.selectbox("Label", diag.labels, format_func=short_label, key=f"{key}_label")
    st.plotly_chart(LB.pca_figure(diag, colour, label), width="stretch", key=f"{key}_pca",
                    config={"displaylogo": False})


source = str(current_source())
checkpoint = current_checkpoint()
st.title("Disentanglement lab")
st.caption(f"Source: `{source}` · {len(load_cohort(source))} patients. For researchers: how the model splits "
           "each modality into a specific part and a shared part, measured over the whole cohort.")

second = st.text_input("Compare with a second checkpoint (run folder)", key="lab_checkpoint_b",
                       placeholder="/path/to/another/run", help="Shown side by side with the sidebar's checkpoint.")
second = second.strip()

primary, reason = _diagnostics_or_reason(source, checkpoint)
if primary is None:
    st.info(reason, icon=":material/info:")
    st.stop()

if second:
    if not is_checkpoint(second):
        st.error(f"`{second}` is not a checkpoint (expected config.json and model.safetensors).")
        _render(primary, f"Checkpoint `{Path(checkpoint).name}`", "a")
    else:
        other, why = _diagnostics_or_reason(source, second)
        left, right = st.columns(2, gap="large")
        with left:
            _render(primary, f"A: `{Path(checkpoint).name}`", "a")
        with right:
            if other is None:
                st.info(why, icon=":material/info:")
            else:
                _render(other, f"B: `{Path(second).name}`", "b")
else:
    _render(primary, f"Checkpoint `{Path(checkpoint).name}`", "a")


def _feedback_section() -> None:
    """What clinicians said about the predictions, per label, from the audit trail; exportable as CSV."""
    from medfuse_core.feedback import feedback_by_label, read_feedback

    st.divider()
    st.subheader("Clinician feedback", anchor=False)
    feedback = read_feedback()
    if feedback.empty:
        st.caption("No feedback yet: clinicians give it on the patient review, under the prediction.")
        return
    st.dataframe(feedback_by_label(feedback), hide_index=True, width="stretch", key="feedback_by_label")
    with st.expander(f"Every feedback entry ({len(feedback)})"):
        st.dataframe(feedback, hide_index=True, width="stretch", key="feedback_entries")
    st.download_button("Feedback (CSV)", data=feedback.to_csv(index=False), file_name="feedback.csv", mime="text/csv",
                       icon=":material/download:", key="feedback_csv", on_click="ignore")


_feedback_section()


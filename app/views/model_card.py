"""Model card: what the loaded model is, how well it did on held-out patients, and its limits.

Reads assets/MODEL_CARD.md (prose written with the model) and `eval_report.json` from the checkpoint
folder (`python -m medfuse_core eval --out <checkpoint>/eval_report.json`); either may be missing.
"""

import json
from pathlib import Path


def predictor_calibration_words(predictor) -> str:
    methods = list(predictor.calibration.methods.values())
    return (f"calibration per label ({methods.count('isotonic')} isotonic, {methods.count('temperature')} temperature)"
            if (predictor.config.get("calibration") or {}).get("per_label") else "calibration: one temperature")

import streamlit as st

from app.components import model_card as M
from medfuse_core.provenance import portable_path
from app.state import EVAL_REPORT, MODEL_CARD, current_checkpoint, model_is_synthetic, predictor_or_reason



def _data_words(data: dict) -> str:
    """Where the training data came from, as a repository-relative folder and the command that made it
    (never an absolute path of the machine that trained the model: medfuse_core/provenance.py)."""
    where = f"`{portable_path(data.get('path'))}`" if data.get("path") else "an unrecorded folder"
    return where + (f" (made by `{data['made_by']}`)" if data.get("made_by") else "")


st.title("Model card")
checkpoint = current_checkpoint()
predictor, reason = predictor_or_reason(checkpoint)
if predictor is None:
    st.info(reason, icon=":material/info:")
else:
    if model_is_synthetic(checkpoint):
        st.warning("This model was trained on synthetic patients only (the demo). Its numbers describe how well it "
                   "recovers the generator's planted evidence, not performance on real patients.",
                   icon=":material/science:")
    config = predictor.config
    summary = config.get("summary") or {}
    data = config.get("data") or {}
    model = config.get("model") or {}
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Labels", len(predictor.labels))
    c2.metric("Parameters", f"{int(summary.get('parameters', 0)):,}" if summary.get("parameters") else "–")
    c3.metric("Training patients", data.get("n_train", "–"))
    c4.metric("Best epoch", summary.get("best_epoch", "–"))
    st.caption(f"Checkpoint `{portable_path(checkpoint)}` · variant `{model.get('variant', 'medfuse_lens')}` · "
               f"trained on {_data_words(data)} · {predictor_calibration_words(predictor)} · "
               f"device now `{predictor.device}`")

card = Path(MODEL_CARD)
if card.is_file():
    with st.expander("Model card (assets/MODEL_CARD.md)", expanded=True):
        st.markdown(card.read_text(encoding="utf-8"))
else:
    st.caption("No assets/MODEL_CARD.md in this installation.")

report_path = Path(checkpoint) / EVAL_REPORT if checkpoint else None
if report_path is None or not report_path.is_file():
    st.info(f"No evaluation report in the checkpoint folder (expected `{EVAL_REPORT}`; write it with "
            "`python -m medfuse_core eval --checkpoint RUN --data DIR --split test --out RUN/eval_report.json`).",
            icon=":material/info:")
    st.stop()
try:
    report = json.loads(report_path.read_text(encoding="utf-8"))
except (OSError, ValueError) as exc:
    st.error(f"`{report_path}` could not be read: {exc}")
    st.stop()

st.header("Evaluation", anchor=False)
st.caption(f"{report.get('n_patients', '?')} patients · split `{report.get('split', '?')}` · data "
           f"{_data_words({'path': report.get('data'), 'made_by': report.get('data_made_by')})}. Thresholds and the per-label calibration were fitted on the validation split.")
st.dataframe(M.summary_frame(report), hide_index=True, width="stretch",
             column_config={"value": st.column_config.NumberColumn(format="%.3f")}, key="mc_summary")
left, right = st.columns([3, 2], gap="medium")
with left:
    st.subheader("Per label", anchor=False)
    fmt = {c: st.column_config.NumberColumn(format="%.3f") for c in ("auroc", "auprc", "f1", "threshold", "prevalence")}
    st.dataframe(M.per_label_frame(report), hide_index=True, width="stretch", column_config=fmt, key="mc_per_label")
    st.subheader("With a modality withheld", anchor=False)
    st.dataframe(M.subsets_frame(report), hide_index=True, width="stretch", key="mc_subsets",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("macro AUROC", "macro AUPRC")})
with right:
    st.subheader("Calibration", anchor=False)
    fig = M.reliability_figure(report.get("reliability") or [])
    if fig is None:
        st.info("The report has no reliability data.")
    else:
        st.plotly_chart(fig, width="stretch", key="reliability_chart", config={"displaylogo": False})
        st.caption("Reliability diagram over all labels: points on the diagonal are well calibrated; "
                   "marker size grows with the number of predictions in the bin.")

"""Streamlit column settings shared by the pages that show the same table (review and upload).

The frames themselves are built by app/components (pure); this only says how st.dataframe draws
them, so the two pages cannot drift apart (the upload page once showed only the disease column).
"""

from __future__ import annotations

import streamlit as st

RANGE_HELP = ("Lowest and highest estimated probability if only some of this patient's sources (labs, notes, "
              "vital signs, X-ray) were available. A wide range means the estimate rests on one source.")


def predictions_columns() -> dict:
    """Column settings for app.components.contributions.predictions_display."""
    return {
        "disease": st.column_config.TextColumn("disease", width=196,
                                               help="▶ marks the disease explained beside the table."),
        "probability": st.column_config.ProgressColumn(
            "probability", format="%.0f%%", min_value=0.0, max_value=100.0, width=92,
            help="Estimated probability (calibrated on validation patients)."),
        "interval": st.column_config.TextColumn(
            "likely range", width=84,
            help="Where the probability is likely to lie (a conformal interval fitted on validation patients); "
                 "wider when the model has fewer sources."),
        "threshold": st.column_config.NumberColumn("thr.", format="%.0f%%", width=48,
                                                   help="Decision threshold (chosen on validation patients)."),
        "call": st.column_config.TextColumn("vs thr.", width=70),
        "range": st.column_config.TextColumn("range", width=76, help=RANGE_HELP),
    }


def table_height(rows: int) -> int:
    """Exactly the rows' height (35 px each plus the header), so no empty band sits under a table."""
    return 35 * (rows + 1) + 3

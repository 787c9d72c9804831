"""The evidence panels of one patient and disease, as the review and upload pages show them.

The maths lives in the library: cohort scores (calibrated probabilities, exact group contributions,
the modality-subset range) in medfuse_core/explain/scores.py, the explanation in explain/api.py, the
torch thread setting in medfuse_core/runtime/threads.py. This module only picks the interactive
settings and turns the explanation into the panels' plain data (app/components/evidence.py).
"""

from __future__ import annotations

from typing import Any

from app.components.evidence import panel_evidence
from medfuse_core.explain import explain
from medfuse_core.runtime.threads import interactive_threads

INTERACTIVE_IG_STEPS = 24  # the explain CLI uses 64; see explain_panels
TOP_SENTENCES = 3  # word-level note attribution: the top sentences by |attribution|


def explain_panels(record: Any, predictor: Any, disease: str, words: bool = False) -> dict[str, Any]:
    """explain() for one patient and disease, as the evidence panels' plain data (app/components/evidence.py).

    words=False skips the word-level note attribution, which runs Integrated Gradients through the text
    model for each top sentence (~90% of explain()'s time on a CPU). Integrated Gradients take
    INTERACTIVE_IG_STEPS steps: the vitals map, the costliest part, is then ~2.5x faster than with the
    CLI's 64, and the maps are for reading, not for scoring (the convergence delta stays in the
    explanation). Used by the review and upload pages, which cache the result."""
    with interactive_threads():
        explanation = explain(record, predictor, labels=[disease], evidence=True,
                              top_sentences=TOP_SENTENCES if words else 0, n_steps=INTERACTIVE_IG_STEPS)
    return panel_evidence(explanation.per_label[disease].evidence)

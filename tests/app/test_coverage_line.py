"""The review page says which lab results the model did not use and why (issue 16, item 4), with the
demo checkpoint on a real-shaped eICU stay; the false "outside its 48 h window" label is gone."""

from __future__ import annotations

import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")


def test_lab_panel_names_what_the_model_did_not_use(tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(ROOT / "tests" / "data" / "real_shape" / "eicu_stay", tmp_path / "eicu_stay")
    monkeypatch.setenv("MEDFUSE_LENS_SOURCE", str(tmp_path))
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(ROOT / "assets" / "demo_model"))
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.query_params["patient"] = "eicu-141765"
    at = at.switch_page("views/patient.py").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption]
    # the demo's domain check leaves this stay's labs out (they are unlike the synthetic training patients):
    # the 27 results the features would have read count as not read, beside the 25 rows' own reasons
    assert any(c.startswith("Status: out of domain. The labs did not look like the data") for c in captions)
    assert ("52 of 52 lab results not used: 27 left out as unlike the training data, 16 unknown tests, "
            "9 outside the 48 h window") in captions
    unused = next(e for e in at.expander if e.label == "Not used by the model, and why")
    assert not unused.dataframe  # folded: the list is not built (issue 18), opened it is
    at.session_state["coverage_labs"] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    unused = next(e for e in at.expander if e.label == "Not used by the model, and why")
    table = unused.dataframe[0].value
    assert len(table) == 26 and set(table["reason"]) == {"out of domain", "unknown test", "outside window"}
    assert table["reason"].value_counts().to_dict() == {"unknown test": 16, "outside window": 9, "out of domain": 1}
    assert "bedside glucose 171 mg/dL" in set(table["what"])
    assert not any("outside its 48 h window" in c for c in captions)

"""Every case of the malformed-input corpus (tests/data/bad/) uploaded through the dashboard's upload page
(AppTest, headless): the page shows the case's message, and the rest of the patient is still read and
scored. So that there is a "rest", each case's zip also carries a good vitals.csv and labs.csv where the
case has none (charted inside the case's 48-hour window), as a real bundle would.

Links cannot travel in a zip as files: a case's symbolic links become link members, which the upload
refuses (expected.json's `upload_contains`).
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.components.wording import NO_DATA_MESSAGE
from tests.sources.test_bad_corpus import EXPECTED, corpus  # noqa: F401  (the fixture)

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
GOOD_VITALS = "time,channel,value\n" + "".join(
    f"2131-05-07 {h:02d}:00:00,Heart Rate,{80 + h}\n2131-05-07 {h:02d}:00:00,Systolic blood pressure,{120 + h}\n"
    for h in range(9, 15))
GOOD_LABS = ("time,itemid,item,value,unit,ref_low,ref_high,flag\n"
             "2131-05-07 09:00:00,50912,Creatinine,1.0,mg/dL,0.5,1.1,\n"
             "2131-05-07 09:00:00,50983,Sodium,139,mEq/L,133,145,\n")


@pytest.fixture()
def with_model(demo_checkpoint: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDFUSE_LENS_CHECKPOINT", str(demo_checkpoint))
    monkeypatch.delenv("MEDFUSE_LENS_SOURCE", raising=False)
    return demo_checkpoint


def zip_case(folder: Path, extra: dict[str, str] | None = None) -> bytes:
    """The bundle folder as an upload zip under `folder.name/`; symbolic links as link members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            name = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if path.is_symlink():
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, str(path.readlink()))
            elif path.is_file():
                z.write(path, name)
        for rel, text in (extra or {}).items():
            z.writestr(f"{folder.name}/{rel}", text)
    return buffer.getvalue()


def companions(folder: Path) -> dict[str, str]:
    """Good vitals and labs for a case that has none (never where the case itself has the file)."""
    out = {}
    if not (folder / "vitals.csv").exists() and not (folder / "vitals.csv").is_symlink():
        out["vitals.csv"] = GOOD_VITALS
    if not (folder / "labs.csv").exists() and not (folder / "labs.csv").is_symlink() and not folder.name.startswith("labs"):
        out["labs.csv"] = GOOD_LABS
    return out


def upload(data: bytes, name: str = "bundle.zip") -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=300)
    at.switch_page("views/upload.py").run()
    at.file_uploader(key="upload_zip").set_value((name, data, "application/zip")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def messages(at: AppTest) -> list[str]:
    frames = [d.value for d in at.dataframe if "message" in d.value.columns]
    return list(frames[0]["message"]) if frames else []


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_upload_page_shows_the_case_and_scores_the_rest(case: str, corpus: dict[str, Path], with_model: Path) -> None:  # noqa: F811
    want = EXPECTED[case]
    folder = corpus[case]
    at = upload(zip_case(folder, companions(folder)), f"{case}.zip")
    shown = messages(at)
    for text in want.get("upload_contains") or [p["contains"] for p in want["problems"]]:
        assert any(text in m for m in shown), f"{case}: {text!r} not among {shown}"
    if not want["problems"] and not want.get("upload_contains"):
        assert shown == [] and "passed validation" in texts(at.success)
    if not want["patient_read"]:
        assert "could be read" in texts(at.error)
        assert not at.header
        return
    assert [h.value for h in at.header] == [f"Patient {folder.name if case != 'patient_json_bad_fields' else 'bad_fields'}"]
    predictions = [d.value for d in at.dataframe if "call" in d.value.columns]
    assert predictions and len(predictions[0]) == 11, f"{case}: the rest of the patient was not scored"


def test_a_patient_with_nothing_usable_is_no_data_not_a_number(corpus: dict[str, Path], with_model: Path) -> None:  # noqa: F811
    """The CT slice is left out and nothing else is there: "no data", no probability table."""
    at = upload(zip_case(corpus["image_ct_slice"]), "ct.zip")
    assert any("expected a chest radiograph" in m for m in messages(at))
    assert at.header[0].value == "Patient image_ct_slice"
    assert NO_DATA_MESSAGE in texts(at.info)
    assert not [d for d in at.dataframe if "call" in d.value.columns]

"""The malformed-input corpus (tests/data/bad/): each case gives its expected clear problem and
nothing else is lost. Regenerate the corpus with tests/data/bad/make_corpus.py; the cases too big to
commit (a 1 MB note, an 8000 x 8000 image) are written at test time by its `write_generated`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medfuse_core.problems import DataError
from medfuse_core.sources.bundle import MAX_NOTE_CHARS
from medfuse_core.sources.images import MAX_PIXELS, MAX_SIDE, load_image, write_image
from medfuse_core.sources.validate import validate_bundle

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED = {k: v for k, v in json.loads((BAD / "expected.json").read_text()).items() if not k.startswith("_")}
COMMITTED = sorted(k for k, v in EXPECTED.items() if not v.get("generated"))
MODALITY_COUNT = {
    "labs": lambda r: len(r.labs.table),
    "vitals": lambda r: len(r.vitals.table),
    "notes": lambda r: len(r.notes),
    "images": lambda r: len(r.images),
}


def load_make_corpus():
    """tests/data/bad/make_corpus.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("make_corpus", BAD / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every case's folder: the committed ones in tests/data/bad, the generated ones in a temporary folder."""
    generated = load_make_corpus().write_generated(tmp_path_factory.mktemp("bad_generated"))
    return {name: generated.get(name, BAD / name) for name in EXPECTED}


def matching(problems, expected: dict) -> list:
    return [
        p for p in problems
        if p.severity.value == expected["severity"]
        and Path(p.file).as_posix().endswith(expected["file"])
        and p.field == expected["field"]
        and expected["contains"] in p.message
    ]


# Per-case checks beyond the problem list: what was accepted is what was meant.
def _labs_text_values(record) -> None:
    t = record.labs.table.set_index("item")
    assert list(record.labs.table["value_text"]) == ["NEG", "HEMOLYZED", "<0.01", ">1000", "1,234", "GREATER THAN 5"]
    assert np.isnan(t.loc["Ketone", "value"]) and np.isnan(t.loc["Potassium", "value"])
    assert (t.loc["Troponin T", "value"], t.loc["Troponin T", "censored"]) == (0.01, "below")
    assert (t.loc["Creatine Kinase (CK)", "value"], t.loc["Creatine Kinase (CK)", "censored"]) == (1000.0, "above")
    assert t.loc["Platelet Count", "value"] == 1234.0 and t.loc["Albumin", "censored"] == "above"


def _labs_unit_conflict(record) -> None:
    """Glucose in mg/dL and mmol/L: the mmol/L row is converted (x 18.0156, glucose 180.156 g/mol), not dropped."""
    t = record.labs.table
    assert list(t["unit"]) == ["mg/dL", "mmol/L", "mg/dL"] and list(t["value_text"]) == ["110", "6.1", "140"]
    assert t["value"].tolist() == pytest.approx([110.0, 6.1 * 18.0156, 140.0])
    assert list(t["value_unit"]) == ["mg/dL"] * 3 and list(t["not_used"]) == [""] * 3
    assert t["ref_low"].iloc[1] == pytest.approx(3.9 * 18.0156)


def _labs_second_unit_unknown_test(record) -> None:
    t = record.labs.table  # bilirubin is not in the lab vocabulary: no molar mass, so no conversion
    assert t["value"].iloc[0] == 1.0 and np.isnan(t["value"].iloc[1]) and t["value"].iloc[2] == 1.4
    assert list(t["not_used"]) == ["", "unit incompatible", ""]


def _labs_duplicate_rows(record) -> None:
    t = record.labs.table
    assert list(t["not_used"]) == ["", "duplicate", "", "duplicate"] and t["value"].isna().tolist() == [
        False, True, False, True]


def _labs_implausible_values(record) -> None:
    t = record.labs.table.set_index("item")
    assert (t["not_used"] == "implausible").sum() == 5 and t["value"].isna().sum() == 5
    assert t.loc["Chloride", "value"] == 101.0 and t.loc["Chloride", "not_used"] == ""


def _labs_incompatible_unit(record) -> None:
    t = record.labs.table.set_index("item")
    assert t["not_used"].to_dict() == {"Glucose": "unit incompatible", "WBC x 1000": "unit incompatible",
                                       "Hgb": "unit unknown", "Creatinine": "unit missing", "BUN": ""}
    assert t.loc["BUN", "value"] == 14.0 and t.loc["BUN", "itemid"] == 51006


def _vitals_outlier(record) -> None:
    t = record.vitals.table  # the outlier is kept for display, marked, and has no value the model could read
    assert list(t["not_used"]) == ["", "implausible"] and t["value"].iloc[0] == 88.0 and np.isnan(t["value"].iloc[1])


def _vitals_out_of_range_low(record) -> None:
    t = record.vitals.table
    assert list(t["not_used"]) == ["", "implausible", "implausible"] and t["value"].isna().sum() == 2


def _vitals_irregular_times(record) -> None:
    t = record.vitals.table
    assert t["time"].is_monotonic_increasing
    assert list(t["value"]) == [88.0, 90.0, 18.0, 92.0, 76.0]
    assert str(t["time"].iloc[3]) == "2131-05-07 13:27:41.250000"


def _vitals_time_zones(record) -> None:
    assert [str(t) for t in record.vitals.table["time"]] == ["2131-05-07 09:00:00", "2131-05-07 10:00:00",
                                                            "2131-05-07 11:00:00"]


def _notes_html(record) -> None:
    assert record.notes[0].text == "<script>alert('x')</script><b>CHF</b> exacerbation; BP <90/60 on arrival."


def _notes_utf16(record) -> None:
    assert record.notes[0].text == "Temp 38.5 °C, café."


def _notes_huge(record) -> None:
    assert len(record.notes[0].text) == MAX_NOTE_CHARS and record.notes[0].text.startswith("Pt resting")


def _image_png_16bit(record) -> None:
    pixels = record.images[0].pixels
    assert pixels.shape == (32, 32) and record.images[0].metadata.bits_stored == 16
    assert len(np.unique(pixels)) > 40  # finer than 8 bits would allow on this gradient... and exact:
    yy, xx = np.mgrid[0:32, 0:32]
    np.testing.assert_allclose(pixels, (xx + yy) / 62, atol=1 / 65535)


def _image_rgb(record) -> None:
    assert record.images[0].pixels.ndim == 2 and record.images[0].metadata.photometric == "RGB"


def _image_huge(record) -> None:
    image = record.images[0]
    assert image.pixels.shape == (4000, 4000) and image.pixels.dtype == np.float32
    assert (image.metadata.rows, image.metadata.columns) == (4000, 4000)
    assert image.pixels[:, 0].max() < 0.01 and image.pixels[:, -1].min() > 0.99  # the gradient survived


CHECKS = {
    "labs_text_values": _labs_text_values,
    "labs_unit_conflict": _labs_unit_conflict,
    "labs_second_unit_unknown_test": _labs_second_unit_unknown_test,
    "labs_duplicate_rows": _labs_duplicate_rows,
    "labs_implausible_values": _labs_implausible_values,
    "labs_incompatible_unit": _labs_incompatible_unit,
    "vitals_irregular_times": _vitals_irregular_times,
    "vitals_outlier": _vitals_outlier,
    "vitals_out_of_range_low": _vitals_out_of_range_low,
    "vitals_time_zones": _vitals_time_zones,
    "notes_html_script": _notes_html,
    "notes_utf16": _notes_utf16,
    "notes_huge": _notes_huge,
    "image_png_16bit": _image_png_16bit,
    "image_rgb_png": _image_rgb,
    "image_huge": _image_huge,
}


def test_corpus_covers_every_modality_with_at_least_40_cases() -> None:
    cases = sorted(p.name for p in BAD.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert cases == COMMITTED, "expected.json and the case folders disagree"
    assert len(EXPECTED) >= 40
    assert {c.split("_")[0] for c in EXPECTED} >= {"patient", "labs", "vitals", "notes", "image", "truth", "bundle"}
    assert set(CHECKS) <= set(EXPECTED)
    committed_bytes = sum(p.stat().st_size for p in BAD.rglob("*") if p.is_file() and not p.is_symlink())
    assert committed_bytes < 200_000, "keep the committed corpus small: generate big cases in write_generated"


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_case_reports_expected_problem(case: str, corpus: dict[str, Path]) -> None:
    want = EXPECTED[case]
    report, record = validate_bundle(corpus[case])
    assert (record is not None) == want["patient_read"]
    for expected in want["problems"]:
        assert matching(report.problems, expected), (
            f"{case}: no problem like {expected}; got {[str(p) for p in report.problems]}")
    assert len(report.problems) == len(want["problems"]), [str(p) for p in report.problems]
    for modality, count in want.get("keeps", {}).items():
        assert MODALITY_COUNT[modality](record) == count, f"{case}: {modality}"
    if case in CHECKS:
        CHECKS[case](record)


def test_generated_cases_are_big_on_disk(corpus: dict[str, Path]) -> None:
    assert (corpus["notes_huge"] / "notes" / "note_00.txt").stat().st_size == 1024**2
    with Image.open(corpus["image_huge"] / "images" / "image_00.png") as img:
        assert img.size == (8000, 8000)


def test_huge_image_loads_without_a_full_size_float_copy(corpus: dict[str, Path]) -> None:
    """The 8000 x 8000 film is downsampled before any float conversion: numpy's peak stays far below the
    256 MB a float32 copy (or 512 MB a float64 one) of the full image would take."""
    tracemalloc.start()
    try:
        loaded = load_image(corpus["image_huge"] / "images" / "image_00.png", radiograph=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded.pixels.shape == (4000, 4000)
    assert peak < 160 * 1024**2, f"peak {peak / 1024**2:.0f} MB"


def test_oversized_images_are_refused_from_the_header(tmp_path: Path) -> None:
    """More than MAX_PIXELS pixels: refused before decoding, naming the size (DICOM and PNG)."""
    write_image(np.zeros((8, 8)), tmp_path / "small.dcm")
    ds = pydicom.dcmread(tmp_path / "small.dcm")
    ds.Rows, ds.Columns = 10_000, 9_000  # the header claims 90 M pixels; the data is never read
    ds.save_as(tmp_path / "claims_huge.dcm", enforce_file_format=True)
    with pytest.raises(DataError) as info:
        load_image(tmp_path / "claims_huge.dcm")
    assert info.value.problem.field == "Rows"
    assert f"expected at most {MAX_PIXELS:,} pixels; the image is 9000 x 10000" in info.value.problem.message

    Image.new("1", (9_500, 9_500)).save(tmp_path / "huge.png")  # 1-bit: a few KB on disk, 90 M pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's own, above 89 M pixels
        with pytest.raises(DataError) as info:
            load_image(tmp_path / "huge.png")
    assert info.value.problem.field == "pixels" and "9500 x 9500" in info.value.problem.message


def test_big_dicom_is_downsampled_with_its_pixel_spacing(tmp_path: Path) -> None:
    side = MAX_SIDE + 100  # 4196: factor 2
    yy, xx = np.mgrid[0:side, 0:side]
    write_image(((xx + yy) / (2 * side - 2)), tmp_path / "big.dcm", pixel_spacing_mm=(0.1, 0.1))
    loaded = load_image(tmp_path / "big.dcm", radiograph=True)
    assert loaded.pixels.shape == (side // 2, side // 2)
    assert loaded.metadata.pixel_spacing_mm == pytest.approx((0.2, 0.2))
    assert [p.field for p in loaded.problems] == ["pixels"] and "downsampled by 2" in loaded.problems[0].message


def test_cli_prints_one_line_per_problem_without_traceback() -> None:
    result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(BAD)],
                            capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in out
    wanted = [p for case in COMMITTED for p in EXPECTED[case]["problems"]]
    lines = [line for line in result.stdout.splitlines() if line.startswith(("error: ", "warning: ", "info: "))]
    assert len(lines) == len(wanted)
    counts = {s: sum(1 for p in wanted if p["severity"] == s) for s in ("error", "warning", "info")}
    assert counts["info"] > 0
    assert result.stdout.rstrip().endswith(f"{len(COMMITTED)} bundle(s) checked: {counts['error']} error(s), "
                                           f"{counts['warning']} warning(s), {counts['info']} info")


def test_cli_exit_zero_with_warnings_only() -> None:
    result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(BAD / "labs_bad_time")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "warning: " in result.stdout and "Traceback" not in result.stderr


def test_cli_on_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "expected an existing folder" in result.stdout


def test_messages_quote_only_a_short_excerpt(tmp_path: Path) -> None:
    """A long hostile value never reaches a message whole (Problem cuts every message and field)."""
    from medfuse_core.problems import MAX_MESSAGE_CHARS, warning

    problem = warning("labs.csv", "x" * 1000, "found " + "A" * 100_000)
    assert len(problem.message) < MAX_MESSAGE_CHARS + 40 and problem.message.endswith("(cut; 100,006 characters)")
    assert len(problem.field) < 250
    folder = tmp_path / "P"
    folder.mkdir()
    (folder / "patient.json").write_text('{"patient_id": "P"}')
    (folder / "vitals.csv").write_text("time,channel,value\n2131-05-07 09:00:00," + "Z" * 100_000 + ",80\n")
    report, record = validate_bundle(folder)  # an unknown channel named by 100,000 characters
    assert record is not None and report.problems
    assert all(len(p.message) < MAX_MESSAGE_CHARS + 40 and len(p.field) < 250 for p in report.problems)


def test_cli_survives_deep_json_without_traceback(corpus: dict[str, Path]) -> None:
    """`validate` on 100,000 nested brackets in patient.json and truth.json: one line each, no RecursionError."""
    folders = [str(corpus["patient_json_deep_nesting"]), str(corpus["truth_json_deep_nesting"])]
    for folder in folders:
        result = subprocess.run([sys.executable, "-m", "medfuse_core", "validate", folder],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
        assert "expected JSON nested at most 64 levels deep" in result.stdout

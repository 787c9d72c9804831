"""The cohort's films are real DICOM: plain pydicom reads every one, with proper tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfuse_core.sources.synth import generate_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dicom_cohort")
    generate_cohort(40, seed=3, out_dir=out, image_size=64, workers=1)
    return out


def test_every_film_reads_with_plain_pydicom(cohort: Path) -> None:
    files = sorted(cohort.glob("*/images/*.dcm"))
    assert len(files) >= 10
    photometric, bits = set(), set()
    for path in files:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        assert pixels.shape == (64, 64) and pixels.dtype == np.uint16
        assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1")
        assert ds.Modality in ("DX", "CR")
        assert ds.PatientID == path.parents[1].name
        assert ds.ViewPosition in ("PA", "AP")
        assert 12 <= ds.BitsStored <= 16 and ds.BitsAllocated == 16
        assert int(pixels.max()) < 2 ** ds.BitsStored
        assert len(ds.PixelSpacing) == 2 and all(float(v) > 0 for v in ds.PixelSpacing)
        photometric.add(ds.PhotometricInterpretation)
        bits.add(int(ds.BitsStored))
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    assert len(bits) >= 2

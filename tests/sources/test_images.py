"""Image loading and writing against real files: pydicom's shipped DICOM test data and fixtures
written to tmp_path by write_image / pydicom / Pillow. No mocks: every decode goes through the
installed pylibjpeg plugins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_encoder, pixel_array, set_pixel_data
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from medfuse_core.problems import DataError, Severity
from medfuse_core.sources.images import DX_FOR_PRESENTATION, LoadedImage, load_image, write_image


def shipped(name: str) -> Path:
    """A DICOM file from pydicom's wheel; fail (never skip) if it is missing, so coverage is honest."""
    found = get_testdata_file(name, download=False)
    assert found is not None, f"pydicom test file {name} is not available offline"
    return Path(found)


def phantom(rows: int = 64, cols: int = 48) -> np.ndarray:
    """Smooth chest-like test image spanning exactly [0, 1], with a bright 'bone' square."""
    y, x = np.mgrid[0:rows, 0:cols]
    img = 0.15 + 0.4 * (x / (cols - 1)) * (y / (rows - 1))
    img[rows // 4 : rows // 2, cols // 4 : cols // 2] = 0.9
    img[0, 0], img[-1, -1] = 0.0, 1.0
    return img


def assert_display(img: LoadedImage, shape: tuple[int, int]) -> None:
    """The contract: float32, the right 2-D shape, finite, in [0, 1], with real contrast."""
    px = img.pixels
    assert px.dtype == np.float32
    assert px.shape == shape
    assert np.all(np.isfinite(px))
    assert px.min() >= 0.0 and px.max() <= 1.0
    assert px.max() - px.min() > 0.2


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def raises_data_error(path: Path, field: str) -> DataError:
    with pytest.raises(DataError) as info:
        load_image(path)
    err = info.value
    assert path.name in str(err), str(err)
    assert err.problem.field == field, str(err)
    assert f": {field}: expected" in str(err), str(err)
    return err


# ---- Shipped DICOM: transfer syntaxes --------------------------------------------------------

TRANSFER_SYNTAX_FILES = [
    ("CT_small.dcm", "Explicit VR Little Endian", (128, 128)),
    ("MR_small_implicit.dcm", "Implicit VR Little Endian", (64, 64)),
    ("MR_small_bigendian.dcm", "Explicit VR Big Endian", (64, 64)),
    ("image_dfl.dcm", "Deflated Explicit VR Little Endian", (512, 512)),
    ("MR_small_RLE.dcm", "RLE Lossless", (64, 64)),
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline (Process 1)", (100, 100)),
    ("JPGExtended.dcm", "JPEG Extended (Process 2 and 4)", (1024, 256)),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", (100, 100)),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless Image Compression", (64, 64)),
    ("JPEGLSNearLossless_16.dcm", "JPEG-LS Lossy (Near-Lossless) Image Compression", (50, 10)),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)", (64, 64)),
    ("JPEG2000.dcm", "JPEG 2000 Image Compression", (1024, 256)),
]


@pytest.mark.parametrize(("name", "syntax", "shape"), TRANSFER_SYNTAX_FILES, ids=[f[0] for f in TRANSFER_SYNTAX_FILES])
def test_shipped_dicom_decodes_to_display_pixels(name: str, syntax: str, shape: tuple[int, int]) -> None:
    img = load_image(shipped(name))
    assert_display(img, shape)
    assert img.metadata.transfer_syntax == syntax
    assert img.metadata.file_format == "dicom"
    assert (img.metadata.rows, img.metadata.columns) == shape
    assert img.problems == []


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_implicit.dcm", "MR_small_bigendian.dcm"]
)
def test_lossless_encodings_match_the_uncompressed_original(name: str) -> None:
    plain = load_image(shipped("MR_small.dcm")).pixels
    other = load_image(shipped(name)).pixels
    assert corr(plain, other) > 0.999
    assert np.abs(plain - other).max() < 1e-6


def test_colour_dicom_becomes_grey_and_lossless_colour_encodings_agree() -> None:
    rle = load_image(shipped("SC_rgb_rle.dcm"))
    jpeg_ll = load_image(shipped("SC_rgb_jpeg_gdcm.dcm"))
    ybr_baseline = load_image(shipped("SC_rgb_jpeg_dcmtk.dcm"))
    for img in (rle, jpeg_ll, ybr_baseline):
        assert_display(img, (100, 100))
    assert np.abs(rle.pixels - jpeg_ll.pixels).max() < 1e-6
    assert corr(rle.pixels, ybr_baseline.pixels) > 0.999  # lossy YBR, converted to RGB then grey
    ybr = load_image(shipped("SC_ybr_full_422_uncompressed.dcm"))
    assert_display(ybr, (100, 100))
    assert corr(rle.pixels, ybr.pixels) > 0.99
    palette = load_image(shipped("examples_palette.dcm"))
    assert_display(palette, (350, 800))
    assert palette.metadata.photometric == "PALETTE COLOR"


def test_shipped_dicom_metadata_and_rescale_intercept() -> None:
    ct = load_image(shipped("CT_small.dcm"))  # RescaleIntercept -1024, no window: min-max of HU
    ds = pydicom.dcmread(shipped("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = (hu - hu.min()) / (hu.max() - hu.min())
    assert np.abs(ct.pixels - expected).max() < 1e-6
    meta = ct.metadata
    assert meta.modality == "CT"
    assert meta.study_date == "2004-01-19"
    assert meta.pixel_spacing_mm == pytest.approx((0.661468, 0.661468))
    assert meta.photometric == "MONOCHROME2"
    assert meta.bits_stored == 16


# ---- MONOCHROME1, Modality LUT, VOI ------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 16])
def test_monochrome1_is_stored_inverted_and_displayed_bone_bright(tmp_path: Path, bits: int) -> None:
    img = phantom()
    path = tmp_path / "mono1.dcm"
    write_image(img, path, photometric="MONOCHROME1", bits_stored=bits)
    stored = pydicom.dcmread(path).pixel_array
    bone = np.zeros(img.shape, bool)
    bone[16:32, 12:24] = True
    assert stored[bone].mean() < stored[~bone].mean()  # really inverted on disk
    loaded = load_image(path)
    assert loaded.metadata.photometric == "MONOCHROME1"
    assert loaded.pixels[bone].mean() > loaded.pixels[~bone].mean() + 0.4  # bone bright on screen
    assert np.abs(loaded.pixels - img).max() < 1 / 2**bits * 2


def test_presentation_lut_inverse_inverts_monochrome2(tmp_path: Path) -> None:
    path = tmp_path / "inverse.dcm"
    write_image(phantom(), path)
    ds = pydicom.dcmread(path)
    ds.PresentationLUTShape = "INVERSE"
    ds.save_as(path)
    assert np.abs(load_image(path).pixels - (1 - phantom())).max() < 1e-3


def _rescaled_copy(plain: Path, out: Path, slope: int, intercept: int) -> None:
    """Same modality values as `plain`, stored as (value - intercept) / slope."""
    ds = pydicom.dcmread(plain)
    stored = (ds.pixel_array.astype(np.int64) - intercept) // slope
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = str(slope), str(intercept)
    ds.save_as(out)


def test_modality_lut_is_applied_before_the_window(tmp_path: Path) -> None:
    even = np.round(phantom() * 2047) * 2 / 4095  # 12-bit stored values all even
    plain, rescaled = tmp_path / "plain.dcm", tmp_path / "rescaled.dcm"
    write_image(even, plain, window=(1500, 2000))  # window in modality units
    _rescaled_copy(plain, rescaled, slope=2, intercept=-1024)
    assert pydicom.dcmread(rescaled).pixel_array.max() < 2600  # different stored values...
    a, b = load_image(plain).pixels, load_image(rescaled).pixels
    assert np.abs(a - b).max() < 1e-6  # ...same display, only if slope/intercept were applied
    # Without a window the display is the min-max of modality values: also identical.
    write_image(even, plain)
    _rescaled_copy(plain, rescaled, slope=2, intercept=-1024)
    assert np.abs(load_image(plain).pixels - load_image(rescaled).pixels).max() < 1e-6


def test_narrow_window_saturates_outside_it(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 1, 256), (8, 1))
    path = tmp_path / "window.dcm"
    write_image(ramp, path, bits_stored=12, window=(2048, 512))
    px = load_image(path).pixels
    stored = np.round(ramp * 4095)
    assert np.all(px[stored < 2048 - 256] == 0.0)
    assert np.all(px[stored > 2048 + 256] == 1.0)
    inside = (stored > 2048 - 200) & (stored < 2048 + 200)
    assert np.all((px[inside] > 0) & (px[inside] < 1))
    assert np.all(np.diff(px[0]) >= 0)
    expected = np.clip((stored - 2047.5) / 511 + 0.5, 0, 1)  # DICOM LINEAR window formula
    assert np.abs(px - expected).max() < 1e-6


def test_voi_lut_sequence_is_used(tmp_path: Path) -> None:
    path = tmp_path / "voilut.dcm"
    write_image(phantom(), path, bits_stored=12)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", [(4095 - i) * 16 for i in range(4096)])  # an inverting LUT
    ds.VOILUTSequence = Sequence([item])
    ds.save_as(path)
    assert np.abs(load_image(path).pixels - (1 - phantom())).max() < 1e-3


# ---- write_image -> load_image round trips ---------------------------------------------------

ROUND_TRIPS = [
    (bits, photometric, syntax)
    for bits in (12, 16)
    for photometric in ("MONOCHROME1", "MONOCHROME2")
    for syntax in ("explicit_le", "implicit_le", "rle")
] + [(12, "MONOCHROME2", "jpeg2000"), (16, "MONOCHROME1", "jpeg2000")]


@pytest.mark.parametrize(("bits", "photometric", "syntax"), ROUND_TRIPS)
def test_dicom_round_trip(tmp_path: Path, bits: int, photometric: str, syntax: str) -> None:
    img = phantom()
    path = tmp_path / f"rt_{bits}_{photometric}_{syntax}.dcm"
    write_image(img, path, photometric=photometric, bits_stored=bits, view_position="PA",
                study_date="2131-05-07", pixel_spacing_mm=(0.139, 0.143), patient_id="10001",
                transfer_syntax=syntax)
    loaded = load_image(path)
    assert_display(loaded, img.shape)
    assert np.abs(loaded.pixels - img).max() < 1 / 2**bits * 2
    meta = loaded.metadata
    assert (meta.view_position, meta.study_date) == ("PA", "2131-05-07")
    assert meta.pixel_spacing_mm == pytest.approx((0.139, 0.143))
    assert (meta.photometric, meta.bits_stored, meta.modality) == (photometric, bits, "DX")
    assert loaded.problems == []


def test_written_dicom_has_proper_file_format_and_tags(tmp_path: Path) -> None:
    path = tmp_path / "tags.dcm"
    write_image(phantom(), path, bits_stored=14, patient_id="p7", window=(8000, 16000), transfer_syntax="rle")
    assert path.read_bytes()[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.MediaStorageSOPClassUID == DX_FOR_PRESENTATION == ds.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID.name == "RLE Lossless"
    assert (ds.Modality, ds.PatientID, ds.SamplesPerPixel, ds.PixelRepresentation) == ("DX", "p7", 1, 0)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 14, 13)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (8000.0, 16000.0)
    assert pixel_array(ds).max() <= 2**14 - 1
    other = tmp_path / "other.dcm"
    write_image(phantom(), other)
    assert pydicom.dcmread(other).StudyInstanceUID != ds.StudyInstanceUID  # fresh UIDs each time


def test_png_16bit_and_jpeg_round_trips(tmp_path: Path) -> None:
    img = phantom(96, 80)
    write_image(img, tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as im:
        assert im.mode.startswith("I")  # really 16-bit grey on disk
    png = load_image(tmp_path / "x.png")
    assert_display(png, img.shape)
    assert (png.metadata.file_format, png.metadata.bits_stored) == ("png", 16)
    assert np.abs(png.pixels - img).max() < 1 / 2**16 * 2
    for suffix in (".jpg", ".jpeg"):
        write_image(img, tmp_path / f"x{suffix}")
        jpg = load_image(tmp_path / f"x{suffix}")
        assert (jpg.metadata.file_format, jpg.metadata.bits_stored) == ("jpeg", 8)
        assert np.abs(jpg.pixels - img).max() < 0.03


def test_jpeg_ls_and_jpeg_lossless_writing_work_or_say_what_is_missing(tmp_path: Path) -> None:
    if get_encoder(JPEGLSLossless).is_available:
        write_image(phantom(), tmp_path / "ls.dcm", transfer_syntax="jpeg_ls")
        assert np.abs(load_image(tmp_path / "ls.dcm").pixels - phantom()).max() < 1 / 2**12 * 2
    else:
        with pytest.raises(ValueError, match="pyjpegls"):
            write_image(phantom(), tmp_path / "ls.dcm", transfer_syntax="jpeg_ls")
    with pytest.raises(ValueError, match="no encoder"):
        write_image(phantom(), tmp_path / "ll.dcm", transfer_syntax="jpeg_lossless")
    assert get_encoder(JPEG2000Lossless).is_available  # covered by the round trips above


def test_write_image_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="suffix"):
        write_image(phantom(), tmp_path / "x.tiff")
    with pytest.raises(ValueError, match="2-D"):
        write_image(np.zeros((4, 4, 3)), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="finite"):
        write_image(np.full((4, 4), np.nan), tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="bits_stored"):
        write_image(phantom(), tmp_path / "x.dcm", bits_stored=20)
    with pytest.raises(ValueError, match="photometric"):
        write_image(phantom(), tmp_path / "x.dcm", photometric="RGB")
    with pytest.raises(ValueError, match="study_date"):
        write_image(phantom(), tmp_path / "x.dcm", study_date="07/05/2131")
    with pytest.raises(ValueError, match="transfer_syntax"):
        write_image(phantom(), tmp_path / "x.dcm", transfer_syntax="zip")


# ---- Content sniffing ----------------------------------------------------------------------------


def test_format_is_detected_by_content_not_suffix(tmp_path: Path) -> None:
    img = phantom()
    write_image(img, tmp_path / "real.dcm")
    (tmp_path / "dicom_named.png").write_bytes((tmp_path / "real.dcm").read_bytes())
    assert load_image(tmp_path / "dicom_named.png").metadata.file_format == "dicom"
    write_image(img, tmp_path / "real.png")
    (tmp_path / "png_named.dcm").write_bytes((tmp_path / "real.png").read_bytes())
    assert load_image(tmp_path / "png_named.dcm").metadata.file_format == "png"
    write_image(img, tmp_path / "real.jpg")
    (tmp_path / "jpeg_no_suffix").write_bytes((tmp_path / "real.jpg").read_bytes())
    assert load_image(tmp_path / "jpeg_no_suffix").metadata.file_format == "jpeg"


def test_bare_dicom_without_preamble_or_file_meta_is_force_read(tmp_path: Path) -> None:
    write_image(phantom(), tmp_path / "full.dcm", view_position="LL")
    ds = pydicom.dcmread(tmp_path / "full.dcm")
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    img = load_image(bare)
    assert np.abs(img.pixels - phantom()).max() < 1 / 2**12 * 2
    assert img.metadata.transfer_syntax == "Implicit VR Little Endian"
    assert img.metadata.view_position == "LL"


# ---- Multi-frame ---------------------------------------------------------------------------------


def test_multiframe_dicom_gives_first_frame_and_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "cine.dcm"
    write_image(phantom(), path)
    ds = pydicom.dcmread(path)
    frames = np.stack([np.round(phantom() * 4095), np.zeros((64, 48)), np.full((64, 48), 4095.0)])
    set_pixel_data(ds, frames.astype(np.uint16), "MONOCHROME2", 12)
    ds.save_as(path)
    img = load_image(path)
    assert np.abs(img.pixels - phantom()).max() < 1 / 2**12 * 2
    assert len(img.problems) == 1
    problem = img.problems[0]
    assert (problem.severity, problem.field) == (Severity.WARNING, "NumberOfFrames")
    assert "3" in problem.message and "first" in problem.message


@pytest.mark.parametrize(("name", "frames", "shape"), [("rtdose.dcm", 15, (10, 10)), ("examples_ybr_color.dcm", 30, (240, 320))])
def test_shipped_multiframe_files(name: str, frames: int, shape: tuple[int, int]) -> None:
    img = load_image(shipped(name))
    assert_display(img, shape)
    assert [p.field for p in img.problems] == ["NumberOfFrames"]
    assert str(frames) in img.problems[0].message
    first = pixel_array(shipped(name), index=0).astype(np.float64)
    if first.ndim == 3:
        first = first @ np.array([0.299, 0.587, 0.114])
    assert corr(img.pixels, first) > 0.999


# ---- Pillow inputs --------------------------------------------------------------------------------


def test_colour_and_palette_png_become_grey_without_problems(tmp_path: Path) -> None:
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    img = load_image(tmp_path / "rgb.png")
    assert img.pixels.shape == (20, 30) and img.pixels.dtype == np.float32 and img.problems == []
    assert img.pixels.mean() == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=2 / 255)
    assert img.metadata.photometric == "RGB"
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 128, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").pixels.shape == (20, 30)
    Image.fromarray(rgb, "RGB").convert("P").save(tmp_path / "pal.png")
    pal = load_image(tmp_path / "pal.png")
    assert pal.pixels.shape == (20, 30) and pal.metadata.photometric == "PALETTE COLOR"
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.jpg", quality=95)
    assert load_image(tmp_path / "rgb.jpg").pixels.mean() == pytest.approx(img.pixels.mean(), abs=0.02)


def test_16bit_and_8bit_grey_png_are_scaled_by_bit_depth(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    img16 = load_image(tmp_path / "g16.png")
    assert img16.metadata.bits_stored == 16
    assert np.allclose(img16.pixels, values / 65535.0, atol=1e-6)  # not min-max stretched
    small = np.array([[10, 20], [30, 40]], dtype=np.uint8)
    Image.fromarray(small, "L").save(tmp_path / "g8.png")
    img8 = load_image(tmp_path / "g8.png")
    assert img8.metadata.bits_stored == 8
    assert np.allclose(img8.pixels, small / 255.0, atol=1e-6)


# ---- Malformed input: DataError with file and field, never a raw exception ----------------------


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_empty_and_random_and_text_files_are_format_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").write_bytes(b"")
    err = raises_data_error(tmp_path / "empty.dcm", "format")
    assert "empty" in str(err)
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(1).bytes(4096))
    raises_data_error(tmp_path / "noise.dcm", "format")
    (tmp_path / "notes.png").write_text("Patient stable overnight.\n" * 20)
    err = raises_data_error(tmp_path / "notes.png", "format")
    assert "PNG" in str(err) and "DICOM" in str(err)
    raises_data_error(tmp_path / "missing.dcm", "path")


def test_truncated_dicom_is_a_pixel_data_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    write_image(phantom(), path)
    raises_data_error(_truncate(path, 0.7), "PixelData")
    raises_data_error(shipped("MR_truncated.dcm"), "PixelData")


def test_truncated_compressed_dicom_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "cut_rle.dcm"
    write_image(phantom(), path, transfer_syntax="rle")
    raises_data_error(_truncate(path, 0.8), "PixelData")
    path = tmp_path / "cut_j2k.dcm"
    write_image(phantom(), path, transfer_syntax="jpeg2000")
    raises_data_error(_truncate(path, 0.8), "PixelData")


def test_corrupt_jpeg_codestream_in_dicom_is_a_pixel_data_error() -> None:
    err = raises_data_error(shipped("JPEG-lossy.dcm"), "PixelData")  # known-bad marker; JPGExtended is the fix
    assert "JPEG Extended" in str(err)


def test_dicom_without_pixel_data_names_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "nopixels.dcm"
    write_image(phantom(), path)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    err = raises_data_error(path, "PixelData")
    assert "Digital X-Ray" in str(err)


@pytest.mark.parametrize(("name", "class_name"), [("rtplan.dcm", "RT Plan Storage"), ("reportsi.dcm", "Basic Text SR Storage")])
def test_non_image_sop_class_names_the_class(name: str, class_name: str) -> None:
    err = raises_data_error(shipped(name), "SOPClassUID")
    assert class_name in str(err)


def test_truncated_png_and_jpeg_are_pixel_errors(tmp_path: Path) -> None:
    img = np.random.default_rng(2).random((128, 128))  # noise: compressed data fills the file
    write_image(img, tmp_path / "cut.png")
    raises_data_error(_truncate(tmp_path / "cut.png", 0.5), "pixels")
    write_image(img, tmp_path / "cut.jpg")
    raises_data_error(_truncate(tmp_path / "cut.jpg", 0.5), "pixels")
    (tmp_path / "header_only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    raises_data_error(tmp_path / "header_only.png", "format")

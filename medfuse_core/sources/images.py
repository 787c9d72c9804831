"""Chest image files (DICOM, PNG, JPEG) in and out, as display-ready grey pixels.

`load_image` turns any supported file into what a clinician would see on a viewer: float32 in
[0, 1] with bone bright, after the DICOM Modality LUT, VOI LUT/window and MONOCHROME1 inversion.
The format is decided by the file's content, not its name, because exported files are often
misnamed. Anything that cannot be read raises `DataError(file, field, expected)`; pydicom, Pillow
and numpy exceptions never leak, so the dashboard can show one line instead of a traceback.

Size is capped so that a hostile or unusual file cannot exhaust memory: an image with more than
`MAX_PIXELS` pixels is refused from its header, before decoding; one with a side longer than `MAX_SIDE`
is decoded and then downsampled by an integer factor (box average) with an info problem saying so.
The model sees at most a few hundred pixels a side, and a display no more than 4096.

`load_image(path, radiograph=True)` (what a patient bundle uses) also checks that the file is a
chest radiograph: a CT, MR, ultrasound or other cross-sectional image is refused (Modality); a colour
image is converted to grey with a warning.

`write_image` is the inverse used by the synthetic cohort and the tests: it writes a display image
so that `load_image` gives it back (exactly for lossless formats).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.pixels.processing import apply_voi, apply_windowing
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medfuse_core.problems import DataError, Problem, info, warning
from medfuse_core.record import ImageMetadata

__all__ = ["LoadedImage", "load_image", "write_image", "WRITE_TRANSFER_SYNTAXES", "MAX_PIXELS", "MAX_SIDE",
           "RADIOGRAPH_MODALITIES"]

MAX_SIDE = 4096  # longer sides are downsampled by an integer factor after decoding
MAX_PIXELS = 80_000_000  # more is refused from the header, before decoding (8000 x 8000 passes; under Pillow's bomb limit)
# DICOM Modality values a chest film can carry: computed / digital radiography (RG: radiographic imaging),
# and secondary-capture or "other" exports of one. Anything else (CT, MR, US, NM, PT, MG, XA, ...) is refused.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})
# Transfer syntaxes pydicom 3.0 does not know by name.
_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
}

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")  # Digital X-Ray Image Storage - For Presentation

# write_image's transfer_syntax names -> DICOM UIDs. jpeg_ls / jpeg_lossless need an encoder that
# pydicom may not have (pyjpegls; none exists for JPEG lossless); write_image says so when asked.
WRITE_TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit_le": ExplicitVRLittleEndian,
    "implicit_le": ImplicitVRLittleEndian,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "jpeg_ls": JPEGLSLossless,
    "jpeg_lossless": JPEGLosslessSV1,
}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_EXPECTED_FORMAT = "expected a DICOM file (with or without the 128-byte preamble), a PNG or a JPEG"
_COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")

_DICOM_ANCHOR_TAGS = (0x00080016, 0x00080018, 0x00080060, 0x00280010, 0x7FE00010, 0x00100020)
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class LoadedImage:
    """Display-ready pixels (float32, (rows, cols), [0, 1], bone bright) plus header and warnings."""

    pixels: np.ndarray
    metadata: ImageMetadata
    problems: list[Problem] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def load_image(path: str | Path, *, radiograph: bool = False) -> LoadedImage:
    """Read a DICOM/PNG/JPEG file as display pixels; raise DataError if it is not a usable image.

    radiograph=True: also refuse images that are not chest films (a CT slice, an MR...) and warn when a
    colour image is turned grey."""
    path = Path(path)
    head = _read_head(path)
    kind = _sniff(head)
    if kind in ("png", "jpeg"):
        loaded = _load_pillow(path, kind, radiograph)
    else:
        loaded = _load_dicom(path, has_preamble=(kind == "dicom"), radiograph=radiograph)
    if radiograph and loaded.metadata.file_format == "dicom" and loaded.metadata.photometric in _COLOUR_PHOTOMETRICS:
        loaded.problems.append(warning(str(path), "PhotometricInterpretation",
                                       f"expected a greyscale radiograph; the image is in colour "
                                       f"({loaded.metadata.photometric}); converted to grey (luma)"))
    return loaded


def _reduction(rows: int, cols: int, name: str, field: str) -> int:
    """The integer downsampling factor for an image of rows x cols (1: none); refuse one too large to decode."""
    if rows * cols > MAX_PIXELS:
        raise DataError(name, field, f"expected at most {MAX_PIXELS:,} pixels; the image is {cols} x {rows} "
                                     f"({rows * cols:,}); refused before decoding")
    return max(1, math.ceil(max(rows, cols) / MAX_SIDE))


def _block_mean(arr: np.ndarray, factor: int) -> np.ndarray:
    """Box average over factor x factor blocks of the first two axes (edges that do not fill a block are
    dropped), as float32; memory is the output's, not a float copy of the input."""
    rows, cols = arr.shape[0] // factor, arr.shape[1] // factor
    cropped = arr[: rows * factor, : cols * factor]
    blocks = cropped.reshape(rows, factor, cols, factor, *arr.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _downsampled_info(name: str, rows: int, cols: int, factor: int, shape: tuple[int, ...]) -> Problem:
    return info(name, "pixels", f"expected at most {MAX_SIDE} pixels a side; the image is {cols} x {rows}, "
                                f"downsampled by {factor} to {shape[1]} x {shape[0]} (box average)")


def _read_head(path: Path) -> bytes:
    """First 132 bytes: enough to see the DICOM preamble and the PNG/JPEG magic numbers."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except FileNotFoundError:
        raise DataError(str(path), "path", "expected an existing image file; none found") from None
    except OSError as exc:
        raise DataError(str(path), "path", f"expected a readable file ({exc.strerror or exc})") from None
    if not head:
        raise DataError(str(path), "format", f"{_EXPECTED_FORMAT}; the file is empty")
    return head


def _sniff(head: bytes) -> str:
    """'dicom' (preamble), 'png', 'jpeg', or 'maybe_dicom' (a bare dataset to force-read)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    return "maybe_dicom"


# ---- Pillow (PNG / JPEG) --------------------------------------------------------------------


def _load_pillow(path: Path, kind: str, radiograph: bool = False) -> LoadedImage:
    """Decode with Pillow and scale by the file's bit depth (not min-max: PNGs are already display)."""
    name = str(path)
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DataError(name, "pixels", f"expected at most {MAX_PIXELS:,} pixels; refused before decoding "
                                        f"({_short(exc)})") from None
    except Exception as exc:  # Pillow raises UnidentifiedImageError, SyntaxError, ValueError...
        raise DataError(name, "format", f"expected a valid {kind.upper()} header ({_short(exc)})") from None
    problems: list[Problem] = []
    with img:
        cols, rows = img.size
        factor = _reduction(rows, cols, name, "pixels")
        try:
            img.load()
            mode = img.mode
            if radiograph and _is_colour(img):
                problems.append(warning(name, "mode", f"expected a greyscale radiograph; the image is in colour "
                                                      f"({mode}); converted to grey (luma)"))
            grey, bits = _pillow_grey(img, factor)
        except Exception as exc:  # truncated or corrupt compressed data
            raise DataError(
                name, "pixels", f"expected complete {kind.upper()} image data ({_short(exc)})"
            ) from None
    if factor > 1:
        problems.append(_downsampled_info(name, rows, cols, factor, grey.shape))
    photometric = {"RGB": "RGB", "RGBA": "RGB", "CMYK": "CMYK", "P": "PALETTE COLOR"}.get(mode, "MONOCHROME2")
    meta = ImageMetadata(
        photometric=photometric,
        bits_stored=bits,
        file_format=kind,
        rows=int(grey.shape[0]),
        columns=int(grey.shape[1]),
    )
    return LoadedImage(pixels=grey, metadata=meta, problems=problems)


def _is_colour(img: Image.Image) -> bool:
    """A colour mode whose channels really differ (a grey film saved as RGB is not colour)."""
    if img.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return False
    small = img
    if max(img.size) > 1024:  # look at a small copy: a full-size RGB copy of a huge film is not needed
        scale = 1024 / max(img.size)
        small = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                           Image.Resampling.NEAREST)
    rgb = np.asarray(small.convert("RGB"))
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def _pillow_grey(img: Image.Image, factor: int = 1) -> tuple[np.ndarray, int]:
    """Grey float32 in [0, 1] and the bit depth it was scaled by; box-averaged by `factor` first."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit grey PNG: Pillow gives "I;16" (or "I" as int32); values are 0..65535.
        arr = np.asarray(img)
        arr = _block_mean(arr, factor) if factor > 1 else arr.astype(np.float32)
        return np.clip(arr / np.float32(65535.0), 0.0, 1.0).astype(np.float32), 16
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        arr = _block_mean(arr, factor) if factor > 1 else arr
        return _minmax(arr.astype(np.float64)).astype(np.float32), 32
    if img.mode != "L":
        img = img.convert("L")  # RGB, RGBA, P, LA, 1, CMYK, YCbCr -> luma
    if factor > 1:
        img = img.reduce(factor)
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    return arr, 8


# ---- DICOM ----------------------------------------------------------------------------------


def _load_dicom(path: Path, *, has_preamble: bool, radiograph: bool = False) -> LoadedImage:
    """Read header, check it holds an image, decode frame 0 and map it to display grey."""
    name = str(path)
    ds = _read_dataset(path, force=not has_preamble)
    _require_image(ds, name)
    if radiograph:
        _require_radiograph(ds, name)
    tsyntax = _ensure_transfer_syntax(ds, name)
    problems: list[Problem] = []
    frames = _number_of_frames(ds)
    if frames > 1:
        problems.append(
            warning(name, "NumberOfFrames", f"expected one frame; the file has {frames}, the first is used")
        )
    rows, cols = _int_or_none(ds.get("Rows")) or 0, _int_or_none(ds.get("Columns")) or 0
    _reduction(rows, cols, name, "Rows")  # refuse from the header, before decoding
    raw = _decode_first_frame(ds, name, tsyntax)
    factor = _reduction(raw.shape[0], raw.shape[1], name, "Rows")
    if factor > 1:
        reduced = _block_mean(raw, factor)
        raw = np.round(reduced).astype(raw.dtype) if raw.dtype.kind in "iu" else reduced
        problems.append(_downsampled_info(name, rows or raw.shape[0] * factor, cols or raw.shape[1] * factor, factor,
                                          raw.shape))
    pixels = _to_display(raw, ds, name, problems)
    meta = _dicom_metadata(ds, tsyntax, pixels.shape, name, problems)
    if factor > 1 and meta.pixel_spacing_mm is not None:
        meta.pixel_spacing_mm = (meta.pixel_spacing_mm[0] * factor, meta.pixel_spacing_mm[1] * factor)
    return LoadedImage(pixels=pixels, metadata=meta, problems=problems)


_CROSS_SECTIONAL_SOP_WORDS = ("CT Image", "MR Image", "PET", "Ultrasound", "Nuclear Medicine", "Mammography",
                              "Ophthalmic", "Angiographic", "Fluoroscopy", "Endoscopic", "Microscopic")


def _require_radiograph(ds: Dataset, name: str) -> None:
    """Refuse what is not a chest film: the Modality says so, or (without one) the SOP class does."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_name = _sop_name(ds.get("SOPClassUID"))
    if modality:
        if modality not in RADIOGRAPH_MODALITIES:
            what = f" ({sop_name})" if sop_name else ""
            raise DataError(name, "Modality", f"expected a chest radiograph (Modality CR or DX); found {modality}"
                                              f"{what}; image left out")
        return
    if any(word in sop_name for word in _CROSS_SECTIONAL_SOP_WORDS):
        raise DataError(name, "SOPClassUID", f"expected a chest radiograph (CR or DX Image Storage); found "
                                             f"{sop_name}; image left out")


def _read_dataset(path: Path, *, force: bool) -> Dataset:
    """pydicom dcmread; a force-read must find real DICOM tags or the file is not DICOM."""
    name = str(path)
    try:
        ds = pydicom.dcmread(path, force=force)
    except Exception as exc:  # InvalidDicomError, EOFError, struct.error, ValueError, ...
        raise DataError(name, "format", f"{_EXPECTED_FORMAT}; DICOM header unreadable ({_short(exc)})") from None
    if not _has_anchor(ds):
        # pydicom returns an empty dataset when encapsulated pixel data runs past the end of the
        # file; the header alone tells a truncated image from a file that is not DICOM at all.
        if _header_has_anchor(path, force=force):
            raise DataError(name, "PixelData", "expected complete pixel data; the file ends inside it (truncated?)")
        raise DataError(name, "format", f"{_EXPECTED_FORMAT}; no DICOM data elements could be read")
    return ds


def _has_anchor(ds: Dataset) -> bool:
    """A force-read of a non-DICOM file yields junk tags; a real dataset has a well-known one."""
    return any(tag in ds for tag in _DICOM_ANCHOR_TAGS)


def _header_has_anchor(path: Path, *, force: bool) -> bool:
    try:
        return _has_anchor(pydicom.dcmread(path, force=force, stop_before_pixels=True))
    except Exception:
        return False


def _require_image(ds: Dataset, name: str) -> None:
    """Reject datasets with no pixels: a non-image SOP class, or an image whose PixelData is missing."""
    if any(tag in ds for tag in _PIXEL_TAGS):
        return
    sop = ds.get("SOPClassUID")
    sop_name = _sop_name(sop)
    looks_like_image = "Rows" in ds or "Image" in sop_name
    if looks_like_image:
        raise DataError(
            name, "PixelData", f"expected pixel data (7FE0,0010) in this {sop_name or 'image'}; the file has none"
        )
    raise DataError(
        name,
        "SOPClassUID",
        f"expected an image SOP class (e.g. Digital X-Ray or CR Image Storage); "
        f"got {sop_name or 'no SOP class'}{f' ({sop})' if sop else ''}, which holds no image",
    )


def _sop_name(sop: Any) -> str:
    """Human name of a SOP Class UID ('RT Plan Storage'), or the UID itself when unknown."""
    if not sop:
        return ""
    try:
        uid = UID(str(sop))
        return str(uid.name) if uid.name else str(uid)
    except Exception:
        return str(sop)


def _ensure_transfer_syntax(ds: Dataset, name: str) -> UID:
    """Transfer syntax from file meta, or inferred from how a bare (no-meta) dataset was encoded."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        ds.file_meta = file_meta = FileMetaDataset()
    tsyntax = file_meta.get("TransferSyntaxUID")
    if tsyntax:
        return UID(str(tsyntax))
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        raise DataError(name, "TransferSyntaxUID", "expected a transfer syntax in the file meta; none found")
    if implicit:
        tsyntax = ImplicitVRLittleEndian
    else:
        tsyntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    file_meta.TransferSyntaxUID = tsyntax
    return tsyntax


def _number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames as an int; absent or malformed counts as one frame."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _syntax_label(uid: UID) -> str:
    """'JPEG XL Lossless (1.2.840.10008.1.2.4.110)', or the UID and that it is unknown."""
    name = _SYNTAX_NAMES.get(str(uid)) or (str(uid.name) if uid.name and uid.name != str(uid) else "")
    return f"{name} ({uid})" if name else f"{uid} (an unknown or private transfer syntax)"


def _require_decoder(uid: UID, name: str) -> None:
    """Refuse, naming the transfer syntax, pixel data that no installed pydicom decoder can read."""
    from pydicom.pixels import get_decoder

    remedy = "; image left out (convert it to Explicit VR Little Endian, or install a decoder for it)"
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DataError(name, "TransferSyntaxUID", f"expected a transfer syntax this installation can decode; "
                                                   f"{_syntax_label(uid)} has no decoder{remedy}") from None
    except Exception:
        return  # let the decode attempt say what is wrong
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise DataError(name, "TransferSyntaxUID", f"expected a transfer syntax this installation can decode; "
                                                   f"{_syntax_label(uid)} needs {missing}{remedy}")


def _decode_first_frame(ds: Dataset, name: str, tsyntax: UID) -> np.ndarray:
    """Decode only frame 0 (cheap for 30-frame cine files); wrap every decoder failure."""
    _require_decoder(tsyntax, name)
    try:
        arr = pixel_array(ds, index=0)
    except Exception as exc:  # truncated data, missing plugin, corrupt codestream, bad header
        raise DataError(
            name, "PixelData", f"expected decodable {_syntax_label(tsyntax)} pixel data ({_short(exc)})"
        ) from None
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise DataError(name, "PixelData", f"expected a 2-D image; decoded shape is {arr.shape}")
    return arr


def _to_display(raw: np.ndarray, ds: Dataset, name: str, problems: list[Problem]) -> np.ndarray:
    """Grey float32 [0, 1], bone bright: colour -> luma; monochrome -> LUTs, window, inversion."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        if raw.ndim == 3 or photometric in _COLOUR_PHOTOMETRICS:
            out = _colour_to_grey(raw, ds, photometric)
        else:
            out = _monochrome_to_display(raw, ds, photometric, name, problems)
    except Exception as exc:  # malformed LUT descriptors, bad rescale values, ...
        raise DataError(name, "PixelData", f"expected pixel values a display can map ({_short(exc)})") from None
    if not np.all(np.isfinite(out)):
        problems.append(warning(name, "PixelData", "expected finite pixel values; non-finite ones shown black"))
        out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _colour_to_grey(raw: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """RGB (pydicom already converted YBR) or palette colour -> luma, scaled by the sample range."""
    arr = raw
    if photometric == "PALETTE COLOR" and raw.ndim == 2:
        arr = apply_color_lut(raw, ds)
        full = 65535.0 if arr.dtype.itemsize > 1 else 255.0
    else:
        full = float(2 ** int(ds.get("BitsStored", 8 * arr.dtype.itemsize)) - 1)
    if arr.ndim == 2:
        return arr.astype(np.float64) / full
    grey = arr[..., :3].astype(np.float64) @ _LUMA
    return grey / full


def _monochrome_to_display(
    raw: np.ndarray, ds: Dataset, photometric: str, name: str, problems: list[Problem]
) -> np.ndarray:
    """Modality LUT, then VOI (window/LUT, else min-max), then invert MONOCHROME1."""
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    out = _apply_voi(values, ds, name, problems)
    if _is_inverted(ds, photometric):
        out = 1.0 - out
    return out


def _apply_voi(values: np.ndarray, ds: Dataset, name: str, problems: list[Problem]) -> np.ndarray:
    """VOI LUT / window mapped to [0, 1] by its own output range; min-max when there is none."""
    has_lut = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_lut or has_window:
        try:
            lo, hi = _voi_output_range(ds, has_lut)
            if hi > lo:
                voi_in = values.astype(np.int64) if has_lut else values  # LUT indices must be ints
                windowed = np.asarray(apply_voi_lut(voi_in, ds), dtype=np.float64)
                return (windowed - lo) / (hi - lo)
            problems.append(warning(name, "WindowWidth", "expected a VOI window with some width; using min-max"))
        except Exception as exc:
            problems.append(warning(name, "WindowCenter", f"expected a usable VOI window/LUT ({_short(exc)}); using min-max"))
    return _minmax(values)


def _voi_output_range(ds: Dataset, has_lut: bool) -> tuple[float, float]:
    """The range a VOI step can output, so saturation is preserved (a narrow window clips)."""
    if has_lut:
        item = ds.VOILUTSequence[0]
        entries, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
        lut = np.asarray(apply_voi(np.arange(first, first + entries, dtype=np.int64), ds), dtype=np.float64)
        return float(lut.min()), float(lut.max())
    probe = np.asarray(apply_windowing(np.array([-np.inf, np.inf]), ds), dtype=np.float64)
    return float(probe.min()), float(probe.max())


def _minmax(values: np.ndarray) -> np.ndarray:
    """Stretch finite values to [0, 1] (no window given); a constant image becomes all zeros."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.float64)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - lo) / (hi - lo)


def _is_inverted(ds: Dataset, photometric: str) -> bool:
    """MONOCHROME1 shows low values white; MONOCHROME2 with an INVERSE presentation LUT too."""
    if photometric == "MONOCHROME1":
        return True
    return str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"


def _dicom_metadata(
    ds: Dataset, tsyntax: UID, shape: tuple[int, ...], name: str, problems: list[Problem]
) -> ImageMetadata:
    """Header fields a clinician cares about; malformed optional ones become None plus a warning."""
    return ImageMetadata(
        modality=_text(ds.get("Modality")),
        view_position=_text(ds.get("ViewPosition")),
        study_date=_iso_date(ds.get("StudyDate"), name, problems),
        pixel_spacing_mm=_pixel_spacing(ds, name, problems),
        photometric=_text(ds.get("PhotometricInterpretation")),
        bits_stored=_int_or_none(ds.get("BitsStored")),
        transfer_syntax=str(tsyntax.name) if tsyntax.name else str(tsyntax),
        file_format="dicom",
        rows=int(shape[0]),
        columns=int(shape[1]),
    )


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


_DA = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")  # DICOM DA, incl. the old "YYYY.MM.DD" form


def _iso_date(value: Any, name: str, problems: list[Problem]) -> str | None:
    """DICOM DA 'YYYYMMDD' -> ISO 'YYYY-MM-DD'."""
    text = _text(value)
    if text is None:
        return None
    m = _DA.match(text)
    try:
        if m is None:
            raise ValueError
        return _dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        problems.append(warning(name, "StudyDate", f"expected a date YYYYMMDD; got {text!r}"))
        return None


def _pixel_spacing(ds: Dataset, name: str, problems: list[Problem]) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing (DX detectors often give only that), as (row, col) mm."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            row, col = (float(v) for v in value)
            if not (row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col)):
                raise ValueError
            return (row, col)
        except (TypeError, ValueError):
            problems.append(warning(name, keyword, f"expected two positive numbers (mm); got {value!r}"))
    return None


def _short(exc: BaseException) -> str:
    """One line naming the library's complaint, for the message after 'expected ...'."""
    text = " ".join(str(exc).split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_image(
    pixels: np.ndarray,
    path: str | Path,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    view_position: str | None = None,
    study_date: str | None = None,
    pixel_spacing_mm: tuple[float, float] | None = None,
    patient_id: str | None = None,
    window: tuple[float, float] | None = None,
    transfer_syntax: str = "explicit_le",
) -> None:
    """Write a display image (values in [0, 1], bone bright; clipped) so load_image gives it back.

    The suffix picks the format: `.dcm` (DICOM DX For Presentation), `.png` (16-bit grey),
    `.jpg`/`.jpeg` (8-bit grey). The DICOM-only options are ignored for PNG/JPEG.
    `window` is (WindowCenter, WindowWidth) in stored-value units (0 .. 2**bits_stored - 1), written
    verbatim; without it a reader stretches min..max, so an image spanning 0..1 reads back exactly.
    MONOCHROME1 stores inverted values so the displayed image is the same.
    """
    path = Path(path)
    grey = _checked_pixels(pixels)
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        ds = _dicom_dataset(
            grey, photometric=photometric, bits_stored=bits_stored, view_position=view_position,
            study_date=study_date, pixel_spacing_mm=pixel_spacing_mm, patient_id=patient_id, window=window,
        )
        _encode(ds, transfer_syntax)
        ds.save_as(path, enforce_file_format=True)
    elif suffix == ".png":
        Image.fromarray(np.round(grey * 65535.0).astype(np.uint16)).save(path, format="PNG", compress_level=1)
    elif suffix in (".jpg", ".jpeg"):
        Image.fromarray(np.round(grey * 255.0).astype(np.uint8), mode="L").save(path, format="JPEG", quality=95)
    else:
        raise ValueError(f"write_image: unknown suffix {path.suffix!r}; expected .dcm, .png, .jpg or .jpeg")


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    """A 2-D finite float64 array clipped to [0, 1]."""
    arr = np.asarray(pixels, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"write_image: expected a non-empty 2-D grey image; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("write_image: expected finite pixel values; got NaN or inf")
    return np.clip(arr, 0.0, 1.0)


def _dicom_dataset(
    grey: np.ndarray,
    *,
    photometric: str,
    bits_stored: int,
    view_position: str | None,
    study_date: str | None,
    pixel_spacing_mm: tuple[float, float] | None,
    patient_id: str | None,
    window: tuple[float, float] | None,
) -> Dataset:
    """A DX For Presentation dataset holding `grey` natively (16-bit allocated, unsigned)."""
    photometric = photometric.upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"write_image: photometric must be MONOCHROME1 or MONOCHROME2; got {photometric!r}")
    if not 8 <= int(bits_stored) <= 16:
        raise ValueError(f"write_image: bits_stored must be 8..16; got {bits_stored}")
    bits_stored = int(bits_stored)
    top = 2**bits_stored - 1
    stored = np.round(grey * top).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PatientID = patient_id or ""
    ds.PatientName = ""
    ds.StudyDate = _dicom_date(study_date)
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if view_position:
        ds.ViewPosition = view_position
    if pixel_spacing_mm is not None:
        spacing = _ds_pair(pixel_spacing_mm, "pixel_spacing_mm", positive=True)
        ds.PixelSpacing = spacing
        ds.ImagerPixelSpacing = spacing
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    ds.RescaleType = "US"
    if window is not None:
        center, width = _ds_pair(window, "window", positive=False)
        if float(width) < 1:
            raise ValueError(f"write_image: window width must be >= 1 (stored units); got {width}")
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = stored.astype("<u2").tobytes()
    return ds


def _encode(ds: Dataset, transfer_syntax: str) -> None:
    """Set the transfer syntax; compress natively held pixels for the compressed ones."""
    uid = WRITE_TRANSFER_SYNTAXES.get(transfer_syntax)
    if uid is None:
        raise ValueError(
            f"write_image: unknown transfer_syntax {transfer_syntax!r}; "
            f"expected one of {sorted(WRITE_TRANSFER_SYNTAXES)}"
        )
    if not uid.is_compressed:
        ds.file_meta.TransferSyntaxUID = uid
        return
    _require_encoder(uid, transfer_syntax)
    arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(ds.Rows, ds.Columns)
    ds.compress(uid, arr, generate_instance_uid=False)


def _require_encoder(uid: UID, name: str) -> None:
    """Raise a ValueError naming what must be installed when pydicom cannot encode `uid`."""
    from pydicom.pixels import get_encoder

    try:
        encoder = get_encoder(uid)
    except NotImplementedError:
        raise ValueError(f"write_image: pydicom has no encoder for {name!r} ({uid.name})") from None
    if not encoder.is_available:
        missing = "; ".join(encoder.missing_dependencies) or "an encoding plugin"
        raise ValueError(f"write_image: {name!r} needs an encoder that is not installed ({missing})")


def _dicom_date(study_date: str | None) -> str:
    """'YYYY-MM-DD' or 'YYYYMMDD' -> DICOM DA; '' (type 2, unknown) when None."""
    if not study_date:
        return ""
    digits = str(study_date).replace("-", "")
    try:
        _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
        if len(digits) != 8 or not digits.isdigit():
            raise ValueError
    except ValueError:
        raise ValueError(f"write_image: study_date must be YYYY-MM-DD; got {study_date!r}") from None
    return digits


def _ds_pair(values: tuple[float, float], what: str, *, positive: bool) -> list[str]:
    """Two numbers as DICOM DS strings (max 16 characters each)."""
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"write_image: {what} must be two numbers; got {values!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or (positive and not (a > 0 and b > 0)):
        raise ValueError(f"write_image: {what} must be two {'positive ' if positive else ''}finite numbers; got {values!r}")
    return [f"{a:.10g}", f"{b:.10g}"]

"""Chest image -> the image encoder's input: one film, letterboxed to a square, standardised.

`image_features(images, size)` returns `ImageFeatures(array, geometry)`:

* **Which film.** The latest *frontal* film (view PA or AP, including MIMIC-CXR's "AP AXIAL",
  "PA LLD", ...), by `time`; films without a time count as older than any dated film, and ties keep
  the list order (the later in the list wins). Frontal films are what MedFuse and most CXR models are
  trained on; a lateral is used only when the stay has no frontal film at all (`frontal_only=True`
  refuses it). `before` drops films taken after a cut-off (a prediction must not see the future).
  `select_image` exposes the choice; `ImageGeometry.index` records it.
* **Resize.** Aspect-preserving letterbox: the longer side is scaled to `size` with Pillow's
  antialiased bilinear filter (on float32 pixels, no 8-bit quantisation), the shorter side is
  centred and padded. A 2500 x 3000 film is never squashed.
* **Normalise.** Per-image standardisation over the film's own pixels (padding excluded): zero
  mean, unit variance, then the padding is set to 0 (the film's mean, i.e. neutral). Films differ
  widely in exposure, windowing and detector; per-image standardisation removes that nuisance and
  also puts grey images on roughly the scale of ImageNet-normalised inputs (so 1-channel-adapted
  pretrained weights see familiar statistics). A flat film (std < 1e-6) becomes all zeros.
* **Absent.** No usable film -> an all-zero (1, size, size) array and `geometry=None`.

`ImageGeometry.to_original(map)` maps a (size, size) map at model resolution (an attribution or
Grad-CAM map, already upsampled to `size`) back onto the original film's (rows, cols) grid: crop the
padding, then resize by the inverse scale (bilinear). `to_model(row, col)` maps a point the other way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from medfuse_core.record import ChestImage

__all__ = ["ImageFeatures", "ImageGeometry", "image_features", "prepare_pixels", "select_image", "is_frontal"]

FRONTAL_VIEWS = ("PA", "AP")


def is_frontal(image: ChestImage) -> bool:
    """True for PA/AP films (first word of `view`, or of the DICOM ViewPosition when `view` is empty)."""
    view = (image.view or image.metadata.view_position or "").strip().upper().replace("_", " ")
    first = view.split()[0] if view else ""
    return first in FRONTAL_VIEWS


def select_image(
    images: Sequence[ChestImage], before: pd.Timestamp | None = None, frontal_only: bool = False
) -> int | None:
    """Index in `images` of the film to use (see the module docstring), or None when there is none."""
    best, best_key = None, None
    for i, image in enumerate(images):
        pixels = image.pixels
        if pixels is None or np.ndim(pixels) != 2 or min(np.shape(pixels)) == 0:
            continue
        has_time = image.time is not None and not pd.isna(image.time)
        if before is not None and has_time and image.time > before:
            continue
        frontal = is_frontal(image)
        if frontal_only and not frontal:
            continue
        key = (frontal, has_time, image.time if has_time else pd.Timestamp.min, i)
        if best_key is None or key >= best_key:
            best, best_key = i, key
    return best


@dataclass(frozen=True)
class ImageGeometry:
    """Where the original film sits inside the (size, size) model input.

    Model pixel (r, c) covers original pixel ((r - top) / scale, (c - left) / scale); the film
    occupies rows [top, top + height) and columns [left, left + width) of the model input.
    """

    size: int  # model input side
    rows: int  # original film shape
    cols: int
    scale: float  # model pixels per original pixel (size / max(rows, cols))
    top: int  # padding above / left of the film, in model pixels
    left: int
    height: int  # the film's extent in the model input, in model pixels
    width: int
    index: int = 0  # which of the record's images was used

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """A (size, size) map at model resolution -> a float32 (rows, cols) map over the original film."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.size, self.size):
            raise ValueError(f"expected a ({self.size}, {self.size}) map, got shape {values.shape}")
        crop = np.ascontiguousarray(values[self.top : self.top + self.height, self.left : self.left + self.width])
        if crop.shape == (self.rows, self.cols):
            return crop.copy()
        out = Image.fromarray(crop).resize((self.cols, self.rows), Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.float32)

    def to_model(self, row: float, col: float) -> tuple[float, float]:
        """A point in original pixel coordinates -> the same point in model-input coordinates."""
        return self.top + row * self.height / self.rows, self.left + col * self.width / self.cols


class ImageFeatures(NamedTuple):
    array: np.ndarray  # float32 (1, size, size)
    geometry: ImageGeometry | None  # None when no film was used


def prepare_pixels(pixels: np.ndarray, size: int, index: int = 0) -> ImageFeatures:
    """One film's display pixels (rows, cols) -> letterboxed, standardised (1, size, size) + geometry."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 2 or min(pixels.shape) == 0:
        raise ValueError(f"expected a non-empty 2-D grey image, got shape {pixels.shape}")
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=1.0, neginf=0.0)
    rows, cols = pixels.shape
    scale = size / max(rows, cols)
    height = min(size, max(1, round(rows * scale)))
    width = min(size, max(1, round(cols * scale)))
    top, left = (size - height) // 2, (size - width) // 2
    if (height, width) == (rows, cols):
        film = pixels
    else:
        # reducing_gap: a fast box pre-reduction for big films, then the antialiased filter
        film = np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels)).resize(
                (width, height), Image.Resampling.BILINEAR, reducing_gap=3.0
            ),
            dtype=np.float32,
        )
    mean = float(film.mean(dtype=np.float64))
    std = float(film.std(dtype=np.float64))
    out = np.zeros((1, size, size), dtype=np.float32)
    if std > 1e-6:
        out[0, top : top + height, left : left + width] = (film - mean) / std
    geometry = ImageGeometry(size=size, rows=rows, cols=cols, scale=scale, top=top, left=left,
                             height=height, width=width, index=index)
    return ImageFeatures(out, geometry)


def image_features(
    images: Sequence[ChestImage], size: int, before: pd.Timestamp | None = None, frontal_only: bool = False
) -> ImageFeatures:
    """The encoder input for a stay's films: (1, size, size) float32, zeros when there is none."""
    index = select_image(images, before=before, frontal_only=frontal_only)
    if index is None:
        return ImageFeatures(np.zeros((1, size, size), dtype=np.float32), None)
    return prepare_pixels(images[index].pixels, size, index=index)

"""Image features: film choice, aspect-preserving letterbox, standardisation, geometry round trip."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from medfuse_core.features.images import image_features, is_frontal, prepare_pixels, select_image
from medfuse_core.record import ChestImage, ImageMetadata


def _film(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=(rows, cols)).astype(np.float32)


def _image(view: str, hour: float | None, pixels: np.ndarray | None = None) -> ChestImage:
    when = None if hour is None else pd.Timestamp("2130-01-01") + pd.Timedelta(hours=hour)
    return ChestImage(time=when, view=view, pixels=_film(40, 40) if pixels is None else pixels)


def test_shape_dtype_finite_and_standardised():
    array, geometry = image_features([_image("PA", 1.0, _film(96, 96))], 64)
    assert array.shape == (1, 64, 64) and array.dtype == np.float32
    assert np.isfinite(array).all()
    assert abs(float(array.mean())) < 1e-4 and abs(float(array.std()) - 1.0) < 1e-3  # square film: no padding
    assert geometry is not None and (geometry.rows, geometry.cols, geometry.top, geometry.left) == (96, 96, 0, 0)


def test_tall_film_keeps_its_aspect_and_padding_is_constant():
    array, g = image_features([_image("AP", 1.0, _film(80, 40))], 64)
    assert (g.height, g.width, g.top, g.left) == (64, 32, 0, 16)
    assert g.width / g.height == pytest.approx(40 / 80)
    pad = np.concatenate([array[0, :, : g.left], array[0, :, g.left + g.width :]], axis=1)
    assert pad.shape == (64, 32) and np.all(pad == 0.0)
    film = array[0, :, g.left : g.left + g.width]
    assert film.std() > 0.5 and abs(float(film.mean())) < 1e-4  # standardised over the film only


def test_wide_film_is_padded_above_and_below():
    array, g = image_features([_image("PA", 1.0, _film(30, 60))], 64)
    assert (g.height, g.width, g.top, g.left) == (32, 64, 16, 0)
    assert np.all(array[0, :16] == 0.0) and np.all(array[0, 48:] == 0.0)


def test_geometry_round_trip_puts_a_square_back_in_place():
    rows, cols = 150, 100
    pixels = np.full((rows, cols), 0.3, dtype=np.float32)
    r0, r1, c0, c1 = 40, 80, 20, 60
    pixels[r0:r1, c0:c1] = 0.9
    array, g = prepare_pixels(pixels, 64)
    model_map = (array[0] > 1.0).astype(np.float32)  # the square, seen at model resolution
    assert 0.05 < model_map.mean() < 0.2
    back = g.to_original(model_map)
    assert back.shape == (rows, cols) and back.dtype == np.float32
    truth = np.zeros((rows, cols), bool)
    truth[r0:r1, c0:c1] = True
    found = back > 0.5
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.8
    r, c = g.to_model(60.0, 40.0)  # centre of the square
    assert model_map[int(r), int(c)] == 1.0


def test_absent_gives_zeros_and_no_geometry():
    array, geometry = image_features([], 32)
    assert array.shape == (1, 32, 32) and array.dtype == np.float32 and not array.any()
    assert geometry is None
    empty = ChestImage(time=None, view="PA", pixels=np.zeros((0, 0), np.float32))
    assert image_features([empty], 32).geometry is None


def test_flat_film_is_zeros():
    array, geometry = image_features([_image("PA", 1.0, np.full((20, 20), 0.5, np.float32))], 16)
    assert geometry is not None and not array.any()


def test_latest_frontal_film_is_chosen():
    images = [_image("PA", 2.0), _image("AP", 10.0), _image("LATERAL", 20.0), _image("AP", None)]
    assert select_image(images) == 1  # the lateral is later but not frontal; undated counts as oldest
    assert image_features(images, 16).geometry.index == 1
    assert select_image(images, before=pd.Timestamp("2130-01-01 05:00")) == 0
    assert select_image([_image("LL", 1.0), _image("LATERAL", 3.0)]) == 1  # no frontal: latest of any view
    assert select_image([_image("LL", 1.0)], frontal_only=True) is None
    assert is_frontal(_image("AP AXIAL", 1.0)) and not is_frontal(_image("LL", 1.0))
    undated = ChestImage(time=None, view="", pixels=_film(8, 8), metadata=ImageMetadata(view_position="PA"))
    assert is_frontal(undated)


def test_fast_enough_for_512():
    pixels = _film(512, 512)
    prepare_pixels(pixels, 224)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        prepare_pixels(pixels, 224)
        times.append(time.perf_counter() - start)
    assert float(np.median(times)) < 0.010

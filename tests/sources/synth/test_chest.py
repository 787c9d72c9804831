"""The procedural chest films: shape, determinism, and planted findings where their masks say."""

from __future__ import annotations

import numpy as np
import pytest

from medfuse_core.sources.synth.chest import FINDINGS, ChestDrawing, _draw, _Frame, _heart_field, draw_chest

SIZE = 512
SEEDS = range(6)
# Finding effects have compact support: everything a finding paints (soft edges, the 1-working-px
# blur radius, the 2x upsampling) lies within this many pixels of its mask at 512 px.
HALO = 24
MIN_MEAN_ABS = 0.05  # mean |with - without| inside the mask at severity 1 (grey levels in [0, 1])
MIN_MEAN_ABS_WEAK = 0.02  # the same at severity 0.3 (weak but present evidence)


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for s in range(1, k + 1):
            out |= np.roll(src, s, axis) | np.roll(src, -s, axis)
    return out


def _pair(seed: int, finding: str, severity: float = 1.0):
    plain, anatomy, _ = _draw(np.random.default_rng(seed), (), SIZE, severity)
    with_f, anatomy2, planted = _draw(np.random.default_rng(seed), (finding,), SIZE, severity)
    assert (anatomy.ctr, anatomy.apex_y, anatomy.scale) == (anatomy2.ctr, anatomy2.apex_y, anatomy2.scale)
    return plain, with_f, anatomy, planted


def _ctr_from_drawing(anatomy, heart, size: int = SIZE) -> float:
    """Heart width over inner thorax width, both measured in pixels on the drawn geometry."""
    fr = _Frame(anatomy, size)
    heart_px = (_heart_field(fr, heart) < 1) & (fr.Y < fr.dome)
    lungs_px = fr.lung_d > 0
    cols_h = np.flatnonzero(heart_px.any(0))
    cols_l = np.flatnonzero(lungs_px.any(0))
    return (cols_h[-1] - cols_h[0] + 1) / (cols_l[-1] - cols_l[0] + 1)


def test_shape_dtype_range():
    d = draw_chest(np.random.default_rng(0), (), SIZE)
    assert isinstance(d, ChestDrawing)
    assert d.pixels.shape == (SIZE, SIZE) and d.pixels.dtype == np.float32
    assert d.pixels.min() >= 0.0 and d.pixels.max() <= 1.0
    assert d.masks == {} and d.boxes == {} and d.side == {}
    small = draw_chest(np.random.default_rng(0), FINDINGS, 128)
    assert small.pixels.shape == (128, 128)
    assert all(m.shape == (128, 128) and m.dtype == bool for m in small.masks.values())


def test_grey_levels_like_a_pa_film():
    """Outside air darkest, lungs dark, mediastinum and abdomen bright."""
    d, a, _ = _draw(np.random.default_rng(1), (), SIZE, 1.0)
    fr = _Frame(a, SIZE)
    p = d.pixels
    lungs = p[fr.lung_d > 0.05].mean()
    mediastinum = p[(np.abs(fr.X) < 0.05) & (fr.Y > -0.5) & (fr.Y < 0.0)].mean()
    abdomen = p[fr.Y > fr.dome + 0.15].mean()
    corner = p[:10, :10].mean()
    assert corner < 0.12
    assert 0.1 < lungs < 0.4
    assert mediastinum > lungs + 0.25
    assert abdomen > lungs + 0.25


def test_deterministic_and_seed_dependent():
    a = draw_chest(np.random.default_rng(7), ("effusion", "focal_opacity"))
    b = draw_chest(np.random.default_rng(7), ("effusion", "focal_opacity"))
    c = draw_chest(np.random.default_rng(8), ("effusion", "focal_opacity"))
    np.testing.assert_array_equal(a.pixels, b.pixels)
    for k in a.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
    assert a.boxes == b.boxes and a.side == b.side
    assert np.abs(a.pixels - c.pixels).mean() > 0.01


def test_unknown_finding_rejected():
    with pytest.raises(ValueError):
        draw_chest(np.random.default_rng(0), ("fracture",))


@pytest.mark.parametrize("finding", FINDINGS)
def test_mask_box_side_and_location(finding):
    for seed in SEEDS:
        d, a, _ = _draw(np.random.default_rng(seed), (finding,), SIZE, 1.0)
        assert set(d.masks) == {finding}
        m = d.masks[finding]
        assert m.dtype == bool and m.shape == (SIZE, SIZE) and m.sum() > 200
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert d.boxes[finding] == (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
        fr = _Frame(a, SIZE)
        thorax = (fr.U <= fr.lat + 0.02) & (fr.Y >= a.apex_y - 0.02) & (fr.Y <= fr.dome + 0.02)
        assert not (m & ~thorax).any()
        if finding != "cardiomegaly":  # lung findings stay inside the drawn lung fields
            assert not (m & ~(fr.lung_d > -0.011)).any()
        side = d.side[finding]
        assert side in ("left", "right", "both")
        if side != "both":  # patient's left = image right
            wrong = fr.X < 0 if side == "left" else fr.X > 0
            assert not (m & wrong).any()


@pytest.mark.parametrize("finding", FINDINGS)
def test_finding_changes_only_its_region(finding):
    """Same seed with and without the finding: a clear change inside the mask, none far from it."""
    for seed in SEEDS:
        plain, with_f, _, _ = _pair(seed, finding)
        m = with_f.masks[finding]
        diff = with_f.pixels - plain.pixels
        assert np.abs(diff[m]).mean() > MIN_MEAN_ABS
        assert np.abs(diff[~_dilate(m, HALO)]).max() < 1e-6
        if finding == "pneumothorax":
            assert diff[m].mean() < -0.03  # lucent rim
        else:
            assert diff[m].mean() > 0.03  # opacities (and the enlarged heart) are brighter


@pytest.mark.parametrize("finding", FINDINGS)
def test_severity_scales_evidence(finding):
    for seed in SEEDS[:3]:
        weak = _pair(seed, finding, 0.3)
        strong = _pair(seed, finding, 1.5)
        diffs = []
        for plain, with_f, _, _ in (weak, strong):
            m = with_f.masks[finding]
            diffs.append(np.abs(with_f.pixels - plain.pixels)[m].sum())
        weak_mean = np.abs(weak[1].pixels - weak[0].pixels)[weak[1].masks[finding]].mean()
        assert weak_mean > MIN_MEAN_ABS_WEAK
        assert diffs[1] > 1.3 * diffs[0]  # stronger finding: more total change


def test_cardiothoracic_ratio():
    for seed in SEEDS:
        for severity in (0.3, 1.0, 1.5):
            _, _, a, planted = _pair(seed, "cardiomegaly", severity)
            big = planted["cardiomegaly"]
            normal = _ctr_from_drawing(a, a.heart)
            enlarged = _ctr_from_drawing(a, big)
            assert normal < 0.52
            assert enlarged > 0.55
            assert abs(enlarged - big.width / (2 * a.half_width)) < 0.02  # pixels agree with geometry


def test_anatomy_identical_when_only_findings_differ():
    plain = draw_chest(np.random.default_rng(3), ())
    all_f = draw_chest(np.random.default_rng(3), FINDINGS)
    union = np.zeros((SIZE, SIZE), bool)
    for m in all_f.masks.values():
        union |= m
    assert set(all_f.masks) == set(FINDINGS)
    assert np.abs(all_f.pixels - plain.pixels)[~_dilate(union, HALO)].max() < 1e-6


@pytest.mark.parametrize("finding", FINDINGS)
def test_pointing_at_the_painted_change_hits_the_mask(finding):
    """The pointing game is well posed: a map of what the finding painted (the film minus its
    finding-free twin), raw or smoothed like the film maps (Gaussian, 6% of the side), has its maximum
    inside the mask. So a miss in benchmarks/faithfulness.py is the model's map, not the truth."""
    from scipy.ndimage import gaussian_filter

    for seed in SEEDS:
        plain, with_f, _, _ = _pair(seed, finding)
        m = with_f.masks[finding]
        change = np.abs(with_f.pixels - plain.pixels)
        for sigma in (0.0, 0.06 * change.shape[0]):
            heat = gaussian_filter(change, sigma) if sigma else change
            assert m[np.unravel_index(np.argmax(heat), heat.shape)], (seed, finding, sigma)

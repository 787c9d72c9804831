"""Procedural frontal (PA) chest radiographs whose findings are planted with exact region masks.

The synthetic cohort needs chest films whose image evidence is known pixel for pixel, so that image
attributions (Integrated Gradients, Grad-CAM) can be scored against where a finding was really put.
`draw_chest` paints one film from a random generator and returns the pixels plus, per planted
finding, its boolean mask, bounding box and side.

Conventions (as on a real PA film viewed in the usual orientation):
- pixels are display grey levels in [0, 1]: air black, lungs dark, soft tissue mid grey, bone and
  fluid bright (MONOCHROME2 sense; the DICOM writer may invert for MONOCHROME1).
- image left = patient's RIGHT, image right = patient's LEFT. The heart bulges to image right
  (patient's left), the aortic knob and the gastric bubble are on image right, the right
  hemidiaphragm (image left) sits higher than the left.
- `side` names the patient's side: "right" = image left half, "left" = image right half, "both".

Geometry lives in normalised thorax coordinates (x to image right, y down, the image spanning about
[-1, 1]) after a per-patient scale, shift and rotation, so masks at full resolution and the
painting at working resolution (half size) come from the same analytic shapes. The anatomy, the
film noise and every finding draw from separate child generators: drawing the same patient with or
without a finding changes pixels only in and next to that finding's mask.

Masks:
- cardiomegaly: the part of the enlarged heart outside the normal outline plus the border band of
  the normal heart (0.03 units inside it), above the diaphragm. side "both".
- congestion: the perihilar "bat wing" zones (both lungs) where the haze weight is >= 0.25.
- focal_opacity: the consolidation blob (haze weight >= 0.5) inside one lung.
- effusion: the aerated lung replaced by fluid under the meniscus, one or both bases.
- pneumothorax: the lucent rim between the chest wall and the collapsed lung edge (apex + lateral).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

FINDINGS: tuple[str, ...] = ("cardiomegaly", "congestion", "focal_opacity", "effusion", "pneumothorax")

_EDGE = 0.02  # soft-edge width of anatomical outlines, in normalised units
_N_TABLE = 512  # entries per side in the vessel direction tables


@dataclass
class ChestDrawing:
    """One drawn film and the regions where its findings were planted."""

    pixels: np.ndarray  # float32 (size, size) in [0, 1], bone/dense bright
    masks: dict[str, np.ndarray]  # finding -> bool (size, size), only planted findings
    boxes: dict[str, tuple[int, int, int, int]]  # finding -> (row0, col0, row1, col1), exclusive ends
    side: dict[str, str]  # finding -> "left" | "right" | "both" (patient's side)


# --------------------------------------------------------------------------------------------
# per-patient anatomy


@dataclass(frozen=True)
class _Heart:
    cx: float  # centre x
    cy: float  # centre y
    right: float  # half-width towards image left (patient's right)
    left: float  # half-width towards image right (patient's left)
    up: float  # half-height above the centre
    down: float  # half-height below the centre
    tilt: float  # shear: image-right half sits lower (apex down and out)

    @property
    def width(self) -> float:
        return self.right + self.left


@dataclass(frozen=True)
class _Anatomy:
    """Per-patient geometry, exposure and textures (all from the anatomy generator)."""

    scale: float
    dx: float
    dy: float
    rot: float  # radians
    half_width: float  # inner thorax half-width at the costophrenic angles (T)
    apex_y: float
    base_y: float  # costophrenic angles
    apex_u: float  # lung apex distance from the midline
    medial_u: float  # medial lung edge at the base
    dome_right: float  # top of the right hemidiaphragm (image left)
    dome_left: float
    dome_u: float  # distance of the dome tops from the midline
    heart: _Heart
    knob: tuple[float, float, float]  # aortic knob x, y, radius
    hilum_u: float
    hilum_y_right: float
    hilum_y_left: float
    trachea_x: float
    carina_y: float
    clavicle_y: float  # medial end of the clavicles
    clavicle_rise: float
    rib_spacing: float
    rib_phase: float
    rib_curve: float
    rib_peak_u: float
    bubble: tuple[float, float, float, float]  # gastric bubble x, y, rx, ry (rx = 0: none)
    tissue: float
    air: float
    vessel_amp: float
    bone_amp: float
    lo: float
    hi: float
    gamma: float
    noise_sigma: float
    blur_sigma: float  # in working pixels
    coarse_table: np.ndarray  # (2, _N_TABLE) big-vessel direction profiles, [right, left]
    fine_table: np.ndarray
    mottle: np.ndarray  # small grid of normal noise -> smooth parenchymal/soft-tissue variation
    warp: np.ndarray  # small grid -> vessel tortuosity

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio: heart width over inner thorax width."""
        return self.heart.width / (2 * self.half_width)


def _vessel_table(rng: np.random.Generator, n_peaks: int, width: float) -> np.ndarray:
    """Two circular profiles over direction, with sharp random peaks (one vessel each)."""
    grid = np.arange(_N_TABLE, dtype=np.float64) / _N_TABLE
    tables = np.zeros((2, _N_TABLE))
    for side in range(2):
        pos = rng.random(n_peaks)
        height = 0.55 + 0.45 * rng.random(n_peaks)
        d = np.abs(grid[None, :] - pos[:, None])
        d = np.minimum(d, 1 - d)
        tables[side] = (height[:, None] * np.exp(-0.5 * (d / width) ** 2)).max(0)
    return tables.astype(np.float32)


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    u = rng.uniform
    half_width = u(0.72, 0.80)
    apex_y = u(-0.80, -0.72)
    base_y = u(0.42, 0.52)
    dome_right = base_y - u(0.17, 0.24)
    dome_left = dome_right + u(0.02, 0.06)
    ctr = u(0.39, 0.48)
    width = ctr * 2 * half_width
    right = width * u(0.30, 0.37)
    heart = _Heart(
        cx=u(-0.02, 0.03),
        cy=dome_left - u(0.0, 0.05),
        right=right,
        left=width - right,
        up=u(0.30, 0.36),
        down=0.22,
        tilt=u(0.12, 0.25),
    )
    hilum_y_left = u(-0.16, -0.08)
    has_bubble = rng.random() < 0.7
    return _Anatomy(
        scale=u(0.95, 1.05),
        dx=rng.normal(0, 0.015),
        dy=u(-0.02, 0.05),
        rot=math.radians(float(np.clip(rng.normal(0, 1.5), -4, 4))),
        half_width=half_width,
        apex_y=apex_y,
        base_y=base_y,
        apex_u=u(0.30, 0.36),
        medial_u=u(0.09, 0.12),
        dome_right=dome_right,
        dome_left=dome_left,
        dome_u=u(0.30, 0.38),
        heart=heart,
        knob=(u(0.10, 0.14), apex_y + u(0.40, 0.46), u(0.05, 0.065)),
        hilum_u=u(0.17, 0.21),
        hilum_y_right=hilum_y_left + u(0.02, 0.07),
        hilum_y_left=hilum_y_left,
        trachea_x=u(-0.01, 0.02),
        carina_y=u(-0.30, -0.22),
        clavicle_y=apex_y + u(0.08, 0.15),
        clavicle_rise=u(0.10, 0.20),
        rib_spacing=u(0.105, 0.125),
        rib_phase=u(0.0, 1.0),
        rib_curve=u(0.8, 1.1),
        rib_peak_u=u(0.25, 0.33),
        bubble=(u(0.25, 0.38), dome_left + u(0.07, 0.10), u(0.06, 0.10) if has_bubble else 0.0, u(0.035, 0.05)),
        tissue=u(0.56, 0.62),
        air=u(0.38, 0.44),
        vessel_amp=u(0.09, 0.13),
        bone_amp=u(0.85, 1.15),
        lo=u(-0.04, 0.03),
        hi=u(0.95, 1.08),
        gamma=u(0.85, 1.15),
        noise_sigma=u(0.008, 0.02),
        blur_sigma=u(0.4, 1.0),
        coarse_table=_vessel_table(rng, 16, 0.006),
        fine_table=_vessel_table(rng, 60, 0.003),
        mottle=rng.standard_normal((3, 10, 10)).astype(np.float32),
        warp=rng.standard_normal((2, 7, 7)).astype(np.float32),
    )


# --------------------------------------------------------------------------------------------
# grids and cheap image operations


@cache
def _axis(n: int) -> np.ndarray:
    """Pixel-centre coordinates in [-1, 1]."""
    return ((np.arange(n, dtype=np.float32) + 0.5) * (2.0 / n) - 1.0).astype(np.float32)


@cache
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) smooth (cubic B-spline) interpolation from a coarse grid spanning the image."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
    d = np.abs(pos[:, None] - np.arange(n_in)[None, :])
    w = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
    w /= w.sum(1, keepdims=True)
    return w.astype(np.float32)


def _smooth(grid: np.ndarray, n: int) -> np.ndarray:
    """Low-frequency field on an n x n image from a small grid of random values."""
    a = _interp_matrix(n, grid.shape[0])
    b = _interp_matrix(n, grid.shape[1])
    return a @ grid @ b.T


@cache
def _gauss_kernel(sigma10: int) -> np.ndarray:
    sigma = sigma10 / 10
    r = max(1, math.ceil(2 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge replication (shifted sums, no Python per-pixel loop)."""
    k = _gauss_kernel(max(1, round(sigma * 10)))
    r = len(k) // 2
    p = np.pad(img, ((r, r), (0, 0)), mode="edge")
    out = k[0] * p[: img.shape[0]]
    for i in range(1, len(k)):
        out += k[i] * p[i : i + img.shape[0]]
    p = np.pad(out, ((0, 0), (r, r)), mode="edge")
    out = k[0] * p[:, : img.shape[1]]
    for i in range(1, len(k)):
        out += k[i] * p[:, i : i + img.shape[1]]
    return out


def _upsample2(a: np.ndarray) -> np.ndarray:
    """Pixel-centre-aligned bilinear 2x upsampling."""
    prev = np.concatenate([a[:1], a[:-1]], 0)
    nxt = np.concatenate([a[1:], a[-1:]], 0)
    rows = np.empty((2 * a.shape[0], a.shape[1]), np.float32)
    rows[0::2] = 0.75 * a + 0.25 * prev
    rows[1::2] = 0.75 * a + 0.25 * nxt
    prev = np.concatenate([rows[:, :1], rows[:, :-1]], 1)
    nxt = np.concatenate([rows[:, 1:], rows[:, -1:]], 1)
    out = np.empty((rows.shape[0], 2 * a.shape[1]), np.float32)
    out[:, 0::2] = 0.75 * rows + 0.25 * prev
    out[:, 1::2] = 0.75 * rows + 0.25 * nxt
    return out


def _resize(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[0] == n:
        return a
    if 2 * a.shape[0] == n:
        return _upsample2(a)
    return np.asarray(Image.fromarray(a, mode="F").resize((n, n), Image.BILINEAR), dtype=np.float32)


@cache
def _noise_bank(n: int) -> np.ndarray:
    """A fixed (2n, 2n) field of unit normal noise; each film reads a random window of it."""
    return np.random.default_rng(0x5EED_C4E5).standard_normal((2 * n, 2 * n), dtype=np.float32)


def _ramp(a: np.ndarray, width: float = _EDGE) -> np.ndarray:
    """0 -> 1 as a crosses 0 over `width` (a soft inside indicator of a signed distance)."""
    return np.clip(a * (1.0 / width) + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# the patient's coordinate frame at one resolution


class _Frame:
    """Patient coordinates and the anatomical outlines evaluated on an n x n pixel grid."""

    def __init__(self, a: _Anatomy, n: int):
        self.n = n
        ax = _axis(n)
        xs = ax - np.float32(a.dx)
        ys = ax - np.float32(a.dy)
        c = math.cos(a.rot) / a.scale
        s = math.sin(a.rot) / a.scale
        self.X = (np.float32(c) * xs)[None, :] + (np.float32(s) * ys)[:, None]
        self.Y = (np.float32(-s) * xs)[None, :] + (np.float32(c) * ys)[:, None]
        self.U = np.abs(self.X)
        self.is_left = self.X > 0  # patient's left = image right
        X, Y, U = self.X, self.Y, self.U
        # lung envelope: rounded apex, lateral wall, medial (mediastinal) edge, diaphragm dome
        t = np.clip((Y - a.apex_y) * (1.0 / (a.base_y - a.apex_y)), 0.0, 1.0)
        g = np.sqrt(t * (2.0 - t))
        self.t = t
        self.lat = a.apex_u + (a.half_width - a.apex_u) * g
        self.med = a.apex_u - (a.apex_u - a.medial_u) * np.sqrt(g)
        top = np.where(self.is_left, np.float32(a.dome_left), np.float32(a.dome_right))
        curv = (a.base_y - top) * (1.0 / (a.half_width - a.dome_u) ** 2)
        self.dome = top + curv * (U - a.dome_u) ** 2
        self.lung_d = np.minimum(
            np.minimum(self.lat - U, U - self.med), np.minimum(self.dome - Y, Y - a.apex_y)
        )
        self.lung = _ramp(self.lung_d)
        self.above_diaphragm = _ramp(self.dome - Y)
        self.hilum_y = np.where(self.is_left, np.float32(a.hilum_y_left), np.float32(a.hilum_y_right))

    def side(self, side: str) -> np.ndarray:
        """Float indicator of the patient's side ("both" -> ones)."""
        if side == "both":
            return np.ones_like(self.X)
        return (self.is_left if side == "left" else ~self.is_left).astype(np.float32)


def _heart_field(fr: _Frame, h: _Heart, shrink: float = 0.0) -> np.ndarray:
    """Normalised elliptic radius^2 of the heart (< 1 inside)."""
    dx = fr.X - h.cx
    ax = np.where(dx < 0, np.float32(h.right - shrink), np.float32(h.left - shrink))
    dy = fr.Y - h.cy - h.tilt * np.maximum(dx, 0.0)
    ay = np.where(dy < 0, np.float32(h.up - shrink), np.float32(h.down - shrink))
    return (dx / ax) ** 2 + (dy / ay) ** 2


def _heart_soft(fr: _Frame, h: _Heart) -> np.ndarray:
    return np.clip((1.0 - _heart_field(fr, h)) * 6.0 + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# findings: parameters from their own generator, weight fields at any resolution


def _enlarged_heart(a: _Anatomy, severity: float) -> _Heart:
    h = a.heart
    target = max(0.535 + 0.07 * severity, a.ctr + 0.05)
    extra = target * 2 * a.half_width - h.width
    grow = 1 + 0.5 * extra / h.width
    return _Heart(
        cx=h.cx,
        cy=h.cy,
        right=h.right + 0.3 * extra,
        left=h.left + 0.7 * extra,
        up=h.up * grow,
        down=h.down,
        tilt=h.tilt,
    )


def _cardiomegaly_mask(fr: _Frame, a: _Anatomy, big: _Heart) -> np.ndarray:
    inside_big = _heart_field(fr, big) < 1
    inside_core = _heart_field(fr, a.heart, shrink=0.03) < 1
    return inside_big & ~inside_core & (fr.Y < fr.dome)


@dataclass(frozen=True)
class _Congestion:
    du: float
    dy: float
    ru: float
    ry: float
    strength: float
    vessel_gain: float
    patch: np.ndarray


def _congestion_params(rng: np.random.Generator, severity: float) -> _Congestion:
    return _Congestion(
        du=rng.uniform(0.02, 0.06),
        dy=rng.uniform(0.0, 0.05),
        ru=0.20 + 0.05 * severity + rng.uniform(0, 0.04),
        ry=0.28 + 0.06 * severity + rng.uniform(0, 0.05),
        strength=0.20 + 0.25 * severity,
        vessel_gain=1.2 * severity,
        patch=rng.standard_normal((8, 8)).astype(np.float32),
    )


def _congestion_weight(fr: _Frame, a: _Anatomy, p: _Congestion) -> np.ndarray:
    rr = ((fr.U - (a.hilum_u + p.du)) / p.ru) ** 2 + ((fr.Y - (fr.hilum_y + p.dy)) / p.ry) ** 2
    return np.clip(1.0 - rr, 0.0, 1.0)


@dataclass(frozen=True)
class _Opacity:
    side: str
    cu: float
    cy: float
    ru: float
    ry: float
    strength: float
    shape: np.ndarray


def _opacity_params(rng: np.random.Generator, a: _Anatomy, severity: float) -> _Opacity:
    side = "left" if rng.random() < 0.5 else "right"
    zone = rng.integers(3)
    t = rng.uniform(*[(0.18, 0.35), (0.40, 0.60), (0.62, 0.80)][zone])
    g = math.sqrt(t * (2 - t))
    lat = a.apex_u + (a.half_width - a.apex_u) * g
    med = a.apex_u - (a.apex_u - a.medial_u) * math.sqrt(g)
    if side == "left" and zone == 2:  # keep lower-left consolidations lateral of the heart
        med = max(med, a.heart.cx + a.heart.left - 0.05)
    r = 0.07 + 0.05 * severity
    return _Opacity(
        side=side,
        cu=med + (lat - med) * rng.uniform(0.35, 0.7),
        cy=a.apex_y + t * (a.base_y - a.apex_y),
        ru=r * rng.uniform(0.8, 1.2),
        ry=r * rng.uniform(0.8, 1.3),
        strength=min(0.95, 0.45 + 0.3 * severity),
        shape=rng.standard_normal((12, 12)).astype(np.float32),
    )


def _opacity_weight(fr: _Frame, p: _Opacity) -> np.ndarray:
    rr = ((fr.U - p.cu) / p.ru) ** 2 + ((fr.Y - p.cy) / p.ry) ** 2
    rr = rr + 0.3 * _smooth(p.shape, fr.n)
    return np.clip((1.0 - rr) * 2.0, 0.0, 1.0) * fr.side(p.side)


@dataclass(frozen=True)
class _Effusion:
    side: str
    height: float


def _effusion_params(rng: np.random.Generator, severity: float) -> _Effusion:
    r = rng.random()
    side = "both" if r < 0.25 else ("left" if r < 0.625 else "right")
    return _Effusion(side=side, height=0.06 + 0.14 * severity + rng.uniform(-0.01, 0.02))


def _effusion_level(fr: _Frame, a: _Anatomy, p: _Effusion) -> np.ndarray:
    """Signed distance below the meniscus (concave up: fluid climbs the lateral wall)."""
    f = np.clip((fr.U - a.medial_u) * (1.0 / (a.half_width - a.medial_u)), 0.0, 1.0)
    level = a.base_y - p.height * (0.35 + 0.65 * f * f)
    return fr.Y - level


@dataclass(frozen=True)
class _Pneumothorax:
    side: str
    gap: float
    darkness: float


def _pneumothorax_params(rng: np.random.Generator, severity: float) -> _Pneumothorax:
    return _Pneumothorax(
        side="left" if rng.random() < 0.5 else "right",
        gap=0.045 + 0.085 * severity,
        darkness=0.06 + 0.05 * severity,
    )


def _collapsed_d(fr: _Frame, a: _Anatomy, p: _Pneumothorax) -> np.ndarray:
    """Signed distance inside the collapsed lung's apical/lateral edge (pleural line at 0)."""
    gap = p.gap * (1.0 - 0.75 * fr.t)
    return np.minimum(fr.lat - gap - fr.U, fr.Y - (a.apex_y + 1.3 * p.gap))


# --------------------------------------------------------------------------------------------
# painting


def _paint(fr: _Frame, a: _Anatomy, planted: dict[str, object]) -> np.ndarray:
    """Brightness (before exposure curve) at the frame's resolution."""
    X, Y, U, n = fr.X, fr.Y, fr.U, fr.n
    lung = fr.lung
    mottle = _smooth(a.mottle[0], n)

    # soft tissue: neck, shoulders, chest wall, abdomen
    half = 0.27 + 0.70 * np.clip((Y - (a.apex_y - 0.32)) * (1 / 0.28), 0.0, 1.0) ** 0.6
    body = _ramp(half - U, 0.03)
    tissue = (a.tissue + 0.05 * Y + 0.015 * mottle) * body

    # solid mediastinal structures that hide the lung behind them
    heart = planted.get("cardiomegaly", a.heart)
    heart_soft = _heart_soft(fr, heart) * fr.above_diaphragm
    kx, ky, kr = a.knob
    knob = _ramp(kr - np.sqrt((X - kx) ** 2 + (Y - ky) ** 2), 0.02)
    solid = np.maximum(heart_soft, knob)

    # findings that modulate aeration
    fill = np.zeros_like(X)
    vessel_gain = np.ones_like(X)
    extra = np.zeros_like(X)
    rim = None

    # vascular markings: radial streaks from each hilum, thinning and fading to the periphery
    dxh = U - a.hilum_u
    dyh = Y - fr.hilum_y
    r = np.sqrt(dxh * dxh + dyh * dyh)
    q = dyh / (np.abs(dxh) + np.abs(dyh) + 1e-4)  # pseudo-angle in [-1, 1]
    warp = _smooth(a.warp[0], n)
    base = fr.is_left * _N_TABLE
    idx_c = ((q + 0.05 * warp) * 0.495 + 0.5) * (_N_TABLE - 1)
    idx_f = ((q + 0.12 * warp * r + 0.03 * _smooth(a.warp[1], n)) * 0.495 + 0.5) * (_N_TABLE - 1)
    top = _N_TABLE - 1
    coarse = a.coarse_table.ravel()[base + np.clip(idx_c, 0, top).astype(np.int32)]
    fine = a.fine_table.ravel()[base + np.clip(idx_f, 0, top).astype(np.int32)]
    fade = np.clip(1.0 - r * (1 / 0.62), 0.0, 1.0)
    vess = np.clip((coarse - 0.25 - 0.5 * r) * 3.0, 0.0, 1.0) * fade + 0.7 * np.clip(
        (fine - 0.35 - 0.45 * r) * 3.0, 0.0, 1.0
    ) * fade * np.clip(r * 6.0, 0.0, 1.0)
    hila = np.exp(-(r * r) * (1 / 0.0045)) * 0.10

    if "congestion" in planted:
        p = planted["congestion"]
        w = _congestion_weight(fr, a, p)
        patch = 0.75 + 0.25 * np.tanh(_smooth(p.patch, n))
        fill = fill + p.strength * w * patch
        upper = np.clip((fr.hilum_y + 0.05 - Y) * 8.0, 0.0, 1.0) * 0.7 + 0.3
        vessel_gain = vessel_gain + p.vessel_gain * w * upper
        extra = extra + 0.05 * w * np.exp(-(r * r) * (1 / 0.02)) * (1 + p.vessel_gain)
    if "focal_opacity" in planted:
        p = planted["focal_opacity"]
        w = _opacity_weight(fr, p)
        bronch = np.clip((fine - 0.5) * 4.0, 0.0, 1.0)
        dens = p.strength * (0.85 + 0.15 * np.tanh(_smooth(p.shape, n) * 2)) * (1 - 0.45 * bronch)
        fill = 1.0 - (1.0 - fill) * (1.0 - w * dens)
    if "effusion" in planted:
        p = planted["effusion"]
        w = _ramp(_effusion_level(fr, a, p), 0.025) * fr.side(p.side)
        fill = 1.0 - (1.0 - fill) * (1.0 - w)
        extra = extra + 0.03 * w * lung
    if "pneumothorax" in planted:
        p = planted["pneumothorax"]
        dc = _collapsed_d(fr, a, p)
        sd = fr.side(p.side)
        rim = _ramp(-dc, 0.012) * lung * sd
        line = np.clip(1.0 - np.abs(dc - 0.008) * (1 / 0.005), 0.0, 1.0) * lung * sd
        extra = extra - p.darkness * rim + 0.09 * line

    fill = np.clip(fill, 0.0, 1.0)
    aer = lung * (1.0 - fill)
    air = (a.air - 0.06 * fr.t) * aer * (1.0 - 0.85 * solid)
    vessels = a.vessel_amp * vess * aer * vessel_gain
    if rim is not None:
        vessels = vessels * (1.0 - rim)
    parenchyma = 0.02 * _smooth(a.mottle[1], n) * aer

    # bones
    bone = a.bone_amp
    v = Y - a.rib_curve * ((U - a.rib_peak_u) ** 2 - a.rib_peak_u**2)
    z = v - (a.apex_y - 0.03 + 0.03 * a.rib_phase)
    phase = z * (1.0 / a.rib_spacing) * (1.0 - 0.12 * z)
    band = np.clip((np.cos(phase * (2 * math.pi)) - 0.15) * 3.0, 0.0, 1.0)
    cage = _ramp(a.half_width + 0.08 - np.maximum(U - 0.05, 0.0) - 0.0 * Y, 0.04) * _ramp(U - 0.06, 0.03)
    cage = cage * _ramp(z, 0.03) * _ramp(a.base_y + 0.45 - Y, 0.2)
    ribs = band * (1.0 - 0.5 * band) * 2.0 * cage * (0.55 + 0.45 * lung) * 0.11
    za = Y + 0.55 * U - 0.3 * U * U - (a.apex_y + 0.18)
    aphase = za * (1.0 / (1.35 * a.rib_spacing))
    aband = np.clip((np.cos(aphase * (2 * math.pi)) - 0.3) * 2.0, 0.0, 1.0)
    ribs = ribs + aband * cage * _ramp(za, 0.05) * _ramp(0.8 - za, 0.1) * _ramp(U - 0.22, 0.08) * lung * 0.035

    yc = a.clavicle_y - a.clavicle_rise * U + 0.12 * U * (U - 0.45)
    thick = 0.028 + 0.012 * np.clip(0.2 - U, 0.0, 0.2) * 5
    clav = _ramp(thick - np.abs(Y - yc), 0.012) * _ramp(U - 0.05, 0.02) * _ramp(a.half_width - 0.02 - U, 0.05)
    clav = clav * 0.20

    spine_w = 0.055 + 0.01 * np.clip(Y, 0, 1)
    spine = _ramp(spine_w - np.abs(X - 0.3 * a.trachea_x), 0.015)
    vert = 0.5 + 0.5 * np.cos(Y * (2 * math.pi / 0.085))
    spine = spine * (0.10 + 0.04 * vert) * _ramp(Y - (a.apex_y - 0.35), 0.1)

    hx = a.half_width + 0.25
    humerus = _ramp(0.16 - np.sqrt((U - hx) ** 2 + (Y - (a.apex_y + 0.03)) ** 2), 0.02) * body * 0.16

    # airways and gastric bubble (dark)
    trachea = _ramp(0.03 - np.abs(X - a.trachea_x), 0.012) * _ramp(a.carina_y - Y, 0.02)
    ang = np.where(fr.is_left, np.float32(0.55), np.float32(0.75))  # left main bronchus flatter
    cs, sn = np.cos(ang), np.sin(ang)
    along = U * cs + (Y - a.carina_y) * sn
    perp = np.abs(-U * sn + (Y - a.carina_y) * cs)
    bronchi = _ramp(0.02 - perp, 0.01) * _ramp(along, 0.01) * _ramp(0.12 - along, 0.03)
    airway = 0.09 * np.maximum(trachea, bronchi)
    bx, by, brx, bry = a.bubble
    bubble = 0.0
    if brx > 0:
        bubble = _ramp(1.0 - ((X - bx) / brx) ** 2 - ((Y - by) / bry) ** 2, 0.3) * _ramp(Y - fr.dome - 0.01, 0.01)
        bubble = bubble * 0.22

    out = 0.04 + tissue - air + vessels + hila * lung + parenchyma + 0.05 * heart_soft + extra
    out = out + bone * (ribs + clav + spine + humerus) - airway - bubble
    return out


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _draw(
    rng: np.random.Generator, findings: Collection[str], size: int, severity: float
) -> tuple[ChestDrawing, _Anatomy, dict[str, object]]:
    unknown = set(findings) - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown findings {sorted(unknown)}; expected some of {FINDINGS}")
    if size < 32:
        raise ValueError("size must be at least 32")
    severity = float(np.clip(severity, 0.3, 1.5))
    # fixed child streams: anatomy, film noise, one per finding (order of FINDINGS)
    seeds = rng.integers(0, 2**63, size=2 + len(FINDINGS))
    a = _sample_anatomy(np.random.default_rng(seeds[0]))
    noise_rng = np.random.default_rng(seeds[1])
    frng = {f: np.random.default_rng(s) for f, s in zip(FINDINGS, seeds[2:])}

    planted: dict[str, object] = {}
    if "cardiomegaly" in findings:
        planted["cardiomegaly"] = _enlarged_heart(a, severity)
    if "congestion" in findings:
        planted["congestion"] = _congestion_params(frng["congestion"], severity)
    if "focal_opacity" in findings:
        planted["focal_opacity"] = _opacity_params(frng["focal_opacity"], a, severity)
    if "effusion" in findings:
        planted["effusion"] = _effusion_params(frng["effusion"], severity)
    if "pneumothorax" in findings:
        planted["pneumothorax"] = _pneumothorax_params(frng["pneumothorax"], severity)

    work = size // 2 if size >= 256 else size
    fr = _Frame(a, work)
    b = _paint(fr, a, planted)
    b = _blur(b, a.blur_sigma)
    b = np.clip(b, 0.0, 1.0) ** a.gamma
    b = a.lo + (a.hi - a.lo) * b
    img = _resize(b.astype(np.float32, copy=False), size)

    bank = _noise_bank(size)
    r0, c0 = noise_rng.integers(0, size, size=2)
    noise = bank[r0 : r0 + size, c0 : c0 + size]
    if noise_rng.random() < 0.5:
        noise = noise[::-1]
    img = img + (a.noise_sigma * (0.6 + 0.6 * img)) * noise
    np.clip(img, 0.0, 1.0, out=img)

    masks: dict[str, np.ndarray] = {}
    sides: dict[str, str] = {}
    if planted:
        full = _Frame(a, size)
        in_lung = full.lung_d > 0
        for name in FINDINGS:
            if name not in planted:
                continue
            p = planted[name]
            if name == "cardiomegaly":
                m, s = _cardiomegaly_mask(full, a, p), "both"
            elif name == "congestion":
                m, s = (_congestion_weight(full, a, p) >= 0.25) & in_lung, "both"
            elif name == "focal_opacity":
                m, s = (_opacity_weight(full, p) >= 0.5) & in_lung, p.side
            elif name == "effusion":
                m = (_effusion_level(full, a, p) > 0) & in_lung & (full.side(p.side) > 0)
                s = p.side
            else:
                m = (_collapsed_d(full, a, p) < 0) & in_lung & (full.side(p.side) > 0)
                s = p.side
            if m.any():
                masks[name] = m
                sides[name] = s
    boxes = {k: _mask_box(m) for k, m in masks.items()}
    return ChestDrawing(pixels=img.astype(np.float32, copy=False), masks=masks, boxes=boxes, side=sides), a, planted


def draw_chest(
    rng: np.random.Generator, findings: Collection[str], size: int = 512, *, severity: float = 1.0
) -> ChestDrawing:
    """Draw one PA chest film with the given findings planted.

    `severity` (clipped to [0.3, 1.5]) scales how strong and large each finding is. The anatomy,
    noise and each finding use separate child streams of `rng`, so the same generator state with
    a different finding set gives the same patient. Deterministic for a given generator state.
    """
    return _draw(rng, findings, size, severity)[0]


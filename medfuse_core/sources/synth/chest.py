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

Masks (lung findings are clipped to the drawn lung field, soft edge included):
- cardiomegaly: the part of the enlarged heart outside the normal outline plus the border band of
  the normal heart (0.03 units inside it), above the diaphragm. side "both".
- congestion: the perihilar "bat wing" zones (both lungs) where the haze weight is >= 0.25.
- focal_opacity: the consolidation blob (haze weight >= 0.5) inside one lung.
- effusion: the aerated lung replaced by fluid under the meniscus, one or both bases.
- pneumothorax: the lucent rim between the chest wall and the collapsed lung edge (apex + lateral).
Everything a finding paints lies within ~20 px (at 512) of its mask; elsewhere the film is
bit-identical to the same patient drawn without it.
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
_N_Q = 256  # direction bins per side of the vessel noise tables
_N_R = 12  # radius bins of the vessel noise tables, over [0, _R_MAX]
_R_MAX = 0.8


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
    coarse_table: np.ndarray  # (2, _N_Q, _N_R) vessel noise [right, left], few thick vessels
    fine_table: np.ndarray  # many thin vessels
    mottle: np.ndarray  # small grid of normal noise -> smooth parenchymal/soft-tissue variation
    warp: np.ndarray  # small grid -> vessel tortuosity

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio: heart width over inner thorax width."""
        return self.heart.width / (2 * self.half_width)


def _vessel_noise(rng: np.random.Generator, sigma_q: float) -> np.ndarray:
    """(2, _N_Q, _N_R) unit-variance noise over (direction, radius) per side, smooth along both.

    Its zero crossings along direction are the vessels: they run radially from the hilum and
    split or merge as the radius grows, which reads as a branching vascular tree.
    """
    pad = 3 * math.ceil(sigma_q) + 2
    raw = rng.standard_normal((2, _N_Q + 2 * pad, _N_R + 4))
    kq = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma_q) ** 2)
    out = sum(w * raw[:, i : i + _N_Q] for i, w in enumerate(kq / kq.sum()))
    kr = np.array([0.25, 0.5, 0.25])
    out = sum(w * out[:, :, i : i + _N_R] for i, w in enumerate(kr))
    return (out / out.std()).astype(np.float32)


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
        clavicle_y=apex_y + u(0.14, 0.22),
        clavicle_rise=u(0.10, 0.18),
        rib_spacing=u(0.105, 0.125),
        rib_phase=u(0.0, 1.0),
        rib_curve=u(1.3, 1.7),
        rib_peak_u=u(0.18, 0.26),
        bubble=(u(0.25, 0.38), dome_left + u(0.07, 0.10), u(0.06, 0.10) if has_bubble else 0.0, u(0.035, 0.05)),
        tissue=u(0.56, 0.62),
        air=u(0.38, 0.44),
        vessel_amp=u(0.14, 0.19),
        bone_amp=u(0.85, 1.15),
        lo=u(-0.04, 0.03),
        hi=u(0.95, 1.08),
        gamma=u(0.85, 1.15),
        noise_sigma=u(0.008, 0.02),
        blur_sigma=u(0.4, 1.0),
        coarse_table=_vessel_noise(rng, 5.0),
        fine_table=_vessel_noise(rng, 1.6),
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


def _smooth(grid: np.ndarray, fr: _Frame) -> np.ndarray:
    """Low-frequency field over the frame from a small grid of random values spanning the image."""
    a = _interp_matrix(fr.n, grid.shape[0])[fr.rows]
    b = _interp_matrix(fr.n, grid.shape[1])[fr.cols]
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

    def __init__(self, a: _Anatomy, n: int, rows: slice = slice(None), cols: slice = slice(None)):
        rows = slice(*rows.indices(n)[:2])
        cols = slice(*cols.indices(n)[:2])
        self.a, self.n, self.rows, self.cols = a, n, rows, cols
        ax = _axis(n)
        xs = ax[cols] - np.float32(a.dx)
        ys = ax[rows] - np.float32(a.dy)
        c = math.cos(a.rot) / a.scale
        s = math.sin(a.rot) / a.scale
        self.X = (np.float32(c) * xs)[None, :] + (np.float32(s) * ys)[:, None]
        self.Y = (np.float32(-s) * xs)[None, :] + (np.float32(c) * ys)[:, None]
        self.U = np.abs(self.X)
        self.is_left = self.X > 0  # patient's left = image right
        Y, U = self.Y, self.U
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

    def window(self, x0: float, x1: float, y0: float, y1: float, margin: float = 0.03) -> tuple[slice, slice]:
        """Rows and columns of this frame that cover a box in patient coordinates (plus margin)."""
        a = self.a
        xs = np.array([x0, x1, x0, x1]) + np.array([-margin, margin, -margin, margin])
        ys = np.array([y0, y0, y1, y1]) + np.array([-margin, -margin, margin, margin])
        c, s = math.cos(a.rot) * a.scale, math.sin(a.rot) * a.scale
        col = (c * xs - s * ys + a.dx + 1) * (self.n / 2) - 0.5
        row = (s * xs + c * ys + a.dy + 1) * (self.n / 2) - 0.5
        h, w = self.X.shape
        r0 = min(max(math.floor(row.min()) - 1 - self.rows.start, 0), h)
        r1 = min(max(math.ceil(row.max()) + 2 - self.rows.start, r0), h)
        c0 = min(max(math.floor(col.min()) - 1 - self.cols.start, 0), w)
        c1 = min(max(math.ceil(col.max()) + 2 - self.cols.start, c0), w)
        return slice(r0, r1), slice(c0, c1)

    def crop(self, rows: slice, cols: slice) -> _Frame:
        """The same frame restricted to rows x cols (relative to this frame)."""
        sub = object.__new__(_Frame)
        for k, v in vars(self).items():
            setattr(sub, k, v[rows, cols] if isinstance(v, np.ndarray) else v)
        sub.rows = slice(self.rows.start + rows.start, self.rows.start + rows.stop)
        sub.cols = slice(self.cols.start + cols.start, self.cols.start + cols.stop)
        return sub

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


def _cardiomegaly_mask(fr: _Frame, a: _Anatomy, big: _Heart, loose: float = 0.0) -> np.ndarray:
    inside_big = _heart_field(fr, big) < 1 + 5 * loose
    inside_core = _heart_field(fr, a.heart, shrink=0.03 + loose) < 1
    return inside_big & ~inside_core & (fr.Y < fr.dome + loose)


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
        strength=0.22 + 0.30 * severity,
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
    rr = rr + 0.3 * _smooth(p.shape, fr)
    return np.clip((1.0 - rr) * 2.0, 0.0, 1.0) * fr.side(p.side)


@dataclass(frozen=True)
class _Effusion:
    side: str
    height: float


def _effusion_params(rng: np.random.Generator, severity: float) -> _Effusion:
    r = rng.random()
    side = "both" if r < 0.25 else ("left" if r < 0.625 else "right")
    return _Effusion(side=side, height=0.08 + 0.24 * severity + rng.uniform(-0.01, 0.02))


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
    """Brightness (before the exposure curve) on the frame's grid.

    Each structure is evaluated only inside the window that can hold it, to keep the film cheap.
    """
    X, Y, U = fr.X, fr.Y, fr.U
    T = a.half_width

    # soft tissue: neck, shoulders, chest wall, abdomen
    shoulder = np.clip((Y - (a.apex_y - 0.30)) * (1 / 0.30), 0.0, 1.0) ** 0.5
    half = 0.27 + (T + 0.16 - 0.27) * shoulder - 0.04 * np.clip(Y - a.apex_y, 0.0, 0.5)
    body = _ramp(half - U, 0.03)
    thickness = np.sqrt(np.clip(1.0 - (U / half) ** 2, 0.0, 1.0))  # a cylinder's path length
    out = 0.04 + (a.tissue + 0.05 * Y + 0.015 * _smooth(a.mottle[0], fr)) * body * (0.55 + 0.45 * thickness)

    # solid mediastinal structures that hide the lung behind them
    heart = planted.get("cardiomegaly", a.heart)
    kx, ky, kr = a.knob
    hw = fr.window(
        heart.cx - heart.right, max(heart.cx + heart.left, kx + kr), min(heart.cy - heart.up, ky - kr),
        heart.cy + heart.down + heart.tilt * heart.left,
    )
    H = fr.crop(*hw)
    heart_soft = np.zeros_like(X)
    heart_soft[hw] = _heart_soft(H, heart) * H.above_diaphragm
    knob = _ramp(kr - np.sqrt((H.X - kx) ** 2 + (H.Y - ky) ** 2), 0.02)
    solid = np.zeros_like(X)
    solid[hw] = np.maximum(heart_soft[hw], knob)
    out[hw] += 0.02 * heart_soft[hw]

    # lungs: air, vascular markings and the findings that change aeration
    lw = fr.window(-T, T, a.apex_y, a.base_y)
    aer = np.zeros_like(X)
    delta, aer[lw] = _paint_lungs(fr.crop(*lw), a, planted, solid[lw])
    out[lw] += delta

    # ribs: posterior arcs from the spine, curving down laterally; faint anterior ribs
    rw = fr.window(-T - 0.15, T + 0.15, a.apex_y - 0.1, a.base_y + 0.5)
    R = fr.crop(*rw)
    ru = R.U
    v = R.Y - a.rib_curve * ((ru - a.rib_peak_u) ** 2 - a.rib_peak_u**2)
    z = v - (a.apex_y - 0.03 + 0.03 * a.rib_phase)
    phase = z * (1.0 / a.rib_spacing) * (1.0 - 0.12 * z)
    band = np.clip((np.cos(phase * (2 * math.pi)) - 0.15) * 3.0, 0.0, 1.0)
    cage = _ramp(T + 0.06 - np.maximum(ru - 0.05, 0.0), 0.03) * _ramp(ru - 0.06, 0.03) * _ramp(z, 0.03)
    cage *= (0.25 + 0.75 * R.above_diaphragm) * _ramp(a.base_y + 0.4 - R.Y, 0.1)
    ribs = band * (1.0 - 0.5 * band) * cage * (0.3 + 0.7 * aer[rw]) * (1.0 - 0.6 * solid[rw]) * 0.16
    za = R.Y + 0.55 * ru - 0.3 * ru * ru - (a.apex_y + 0.18)
    aband = np.clip((np.cos(za * (2 * math.pi / (1.35 * a.rib_spacing))) - 0.3) * 2.0, 0.0, 1.0)
    ribs += aband * aer[rw] * _ramp(za, 0.05) * _ramp(ru - 0.22, 0.08) * 0.035
    out[rw] += a.bone_amp * ribs

    # clavicles
    cw = fr.window(-T, T, a.clavicle_y - a.clavicle_rise * T - 0.1, a.clavicle_y + 0.1)
    C = fr.crop(*cw)
    cu = C.U
    yc = a.clavicle_y - a.clavicle_rise * cu + 0.25 * cu * (cu - 0.3) * (cu - 0.6)
    thick = 0.022 + 0.06 * np.clip(0.2 - cu, 0.0, 0.2)
    clav = _ramp(thick - np.abs(C.Y - yc), 0.012) * _ramp(cu - 0.05, 0.02) * _ramp(T - 0.02 - cu, 0.05)
    out[cw] += (a.bone_amp * 0.14) * clav

    # spine: vertebral bodies, faint behind the heart
    sw = fr.window(-0.1, 0.1, -1.6, 1.6)
    S = fr.crop(*sw)
    spine = _ramp(0.055 + 0.01 * np.clip(S.Y, 0, 1) - np.abs(S.X - 0.3 * a.trachea_x), 0.015)
    vert = np.cos(S.Y * (2 * math.pi / 0.085))
    spine *= (0.09 + 0.015 * vert) * (1.0 - 0.5 * heart_soft[sw]) * (0.6 + 0.4 * S.above_diaphragm)
    out[sw] += a.bone_amp * spine

    # humeral heads at the upper corners
    hx = T + 0.36
    for sign in (-1.0, 1.0):
        mw = fr.window(sign * hx - 0.17, sign * hx + 0.17, a.apex_y - 0.15, a.apex_y + 0.2)
        M = fr.crop(*mw)
        head = _ramp(0.16 - np.sqrt((M.X - sign * hx) ** 2 + (M.Y - (a.apex_y + 0.03)) ** 2), 0.02)
        out[mw] += (a.bone_amp * 0.16) * head * body[mw]

    # airways and gastric bubble (dark)
    tw = fr.window(-0.2, 0.2, -1.6, a.carina_y + 0.15)
    A = fr.crop(*tw)
    trachea = _ramp(0.03 - np.abs(A.X - a.trachea_x), 0.012) * _ramp(a.carina_y - A.Y, 0.02)
    ang = np.where(A.is_left, np.float32(0.55), np.float32(0.75))  # left main bronchus flatter
    cs, sn = np.cos(ang), np.sin(ang)
    along = A.U * cs + (A.Y - a.carina_y) * sn
    perp = np.abs(-A.U * sn + (A.Y - a.carina_y) * cs)
    bronchi = _ramp(0.02 - perp, 0.01) * _ramp(along, 0.01) * _ramp(0.12 - along, 0.03)
    out[tw] -= 0.09 * np.maximum(trachea, bronchi)
    bx, by, brx, bry = a.bubble
    if brx > 0:
        bw = fr.window(bx - brx, bx + brx, by - bry, by + bry)
        B = fr.crop(*bw)
        bubble = _ramp(1.0 - ((B.X - bx) / brx) ** 2 - ((B.Y - by) / bry) ** 2, 0.3)
        out[bw] -= 0.22 * bubble * _ramp(B.Y - B.dome - 0.01, 0.01)
    return out


def _paint_lungs(
    fr: _Frame, a: _Anatomy, planted: dict[str, object], solid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Lung-field brightness change (air, vessels, hila, aeration findings) and the aeration."""
    Y, U = fr.Y, fr.U
    lung = fr.lung
    fill = np.zeros_like(Y)
    vessel_gain = 1.0
    extra = np.zeros_like(Y)
    rim = None

    # vascular markings: branching streaks from each hilum, thinning and fading to the periphery
    dxh = U - a.hilum_u
    dyh = Y - fr.hilum_y
    r = np.sqrt(dxh * dxh + dyh * dyh)
    q = dyh / (np.abs(dxh) + np.abs(dyh) + 1e-4)  # pseudo-angle in [-1, 1] (mirrored medially)
    q += 0.06 * _smooth(a.warp[0], fr) * r
    row = np.clip((q * 0.5 + 0.5) * (_N_Q - 1), 0, _N_Q - 1).astype(np.int32)
    row += fr.is_left * np.int32(_N_Q)
    rf = np.clip(r * ((_N_R - 1) / _R_MAX), 0.0, _N_R - 1.001)
    r0 = rf.astype(np.int32)
    rf -= r0
    idx = row * np.int32(_N_R) + r0
    inv_r = 1.0 / (r + 0.06)
    taper = np.clip(1.0 - r * (1 / 0.7), 0.0, 1.0)
    vess = None
    for table, sigma, width, amp in ((a.coarse_table, 5.0, 0.011, 1.0), (a.fine_table, 1.6, 0.0045, 0.6)):
        flat = table.reshape(-1)
        nz = flat[idx] * (1.0 - rf) + flat[idx + 1] * rf
        w = (width * _N_Q * 0.7 / (math.pi * sigma)) * inv_r * (0.35 + 0.65 * taper)
        ridge = np.clip(1.0 - np.abs(nz) / w, 0.0, 1.0) * amp
        vess = ridge if vess is None else np.maximum(vess, ridge)
    fine = ridge
    vess *= taper * np.clip(r * (1 / 0.07), 0.0, 1.0)
    hila = np.exp(-(r * r) * (1 / 0.006)) * 0.09

    if "congestion" in planted:
        p = planted["congestion"]
        w = _congestion_weight(fr, a, p)
        patch = 0.75 + 0.25 * np.tanh(_smooth(p.patch, fr))
        fill = fill + p.strength * w * patch
        upper = np.clip((fr.hilum_y + 0.05 - Y) * 8.0, 0.0, 1.0) * 0.7 + 0.3
        upper = upper * np.clip(r * (1 / 0.12), 0.0, 1.0)
        vessel_gain = 1.0 + p.vessel_gain * w * upper
        extra = extra + 0.04 * w * np.exp(-(r * r) * (1 / 0.015)) * p.vessel_gain * lung
    if "focal_opacity" in planted:
        p = planted["focal_opacity"]
        w = _opacity_weight(fr, p)
        bronch = np.clip(fine * 2.5 - 0.5, 0.0, 1.0)
        dens = p.strength * (0.85 + 0.15 * np.tanh(_smooth(p.shape, fr) * 2)) * (1 - 0.45 * bronch)
        fill = 1.0 - (1.0 - fill) * (1.0 - w * dens)
    if "effusion" in planted:
        p = planted["effusion"]
        w = _ramp(_effusion_level(fr, a, p) - 0.0125, 0.025) * fr.side(p.side)
        fill = 1.0 - (1.0 - fill) * (1.0 - w)
        extra = extra + 0.05 * w * lung
    if "pneumothorax" in planted:
        p = planted["pneumothorax"]
        dc = _collapsed_d(fr, a, p)
        sd = fr.side(p.side)
        rim = _ramp(-dc, 0.012) * lung * sd
        line = np.clip(1.0 - np.abs(dc - 0.008) * (1 / 0.005), 0.0, 1.0) * lung * sd
        extra = extra - p.darkness * rim + 0.09 * line

    aer = lung * (1.0 - np.clip(fill, 0.0, 1.0))
    depth = 0.8 + 0.2 * np.clip(fr.lung_d * (1 / 0.1), 0.0, 1.0)  # chest wall overlaps the rim
    air = (a.air - 0.08 * fr.t) * depth * (1.0 - 0.85 * solid)
    vessels = (a.vessel_amp * vessel_gain) * vess * (1.0 - 0.8 * solid)
    if rim is not None:
        vessels *= 1.0 - rim
    texture = vessels + 0.02 * _smooth(a.mottle[1], fr) - air
    return texture * aer + hila * lung + extra, aer


def _finding_mask(fr: _Frame, a: _Anatomy, name: str, p: object, loose: bool = False) -> tuple[np.ndarray, str]:
    """Where a planted finding is, on the frame's grid, and its patient side.

    `loose` widens every threshold a little: on the coarse grid it gives a region that surely
    contains the exact full-resolution mask, which is then evaluated only around it.
    """
    e = 0.02 if loose else 0.0
    in_lung = fr.lung_d > -(0.5 * _EDGE + e)  # wherever the lung is drawn at all
    if name == "cardiomegaly":
        return _cardiomegaly_mask(fr, a, p, e), "both"
    if name == "congestion":
        return (_congestion_weight(fr, a, p) >= 0.25 - 5 * e) & in_lung, "both"
    if name == "focal_opacity":
        return (_opacity_weight(fr, p) >= 0.5 - 10 * e) & in_lung, p.side
    if name == "effusion":
        return (_effusion_level(fr, a, p) > -e) & in_lung & (fr.side(p.side) > 0), p.side
    return (_collapsed_d(fr, a, p) < e) & in_lung & (fr.side(p.side) > 0), p.side


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
    k = size / work
    for name in FINDINGS:
        if name not in planted:
            continue
        coarse, side = _finding_mask(fr, a, name, planted[name], loose=True)
        if coarse.any():  # evaluate at full resolution only around the coarse region
            r0, c0, r1, c1 = _mask_box(coarse)
            rows = slice(max(0, int((r0 - 2) * k)), min(size, int(math.ceil((r1 + 2) * k))))
            cols = slice(max(0, int((c0 - 2) * k)), min(size, int(math.ceil((c1 + 2) * k))))
        else:
            rows = cols = slice(0, size)
        m = np.zeros((size, size), dtype=bool)
        m[rows, cols] = _finding_mask(_Frame(a, size, rows, cols), a, name, planted[name])[0]
        if m.any():
            masks[name] = m
            sides[name] = side
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


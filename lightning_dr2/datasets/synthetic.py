"""Procedural synthetic faces, so every pipeline (DDPM training, DR2, evaluation) runs without FFHQ.

The faces are cartoons, not photographs, but they have what a face model and a degradation remover must
handle: skin tones from very light to very dark, face shapes, eyes with iris/pupil/lids (some blinking),
eyebrows, nose shading, lips with varied smiles, hair styles and colours, ears, beards, glasses, clothes
and varied backgrounds, under directional light. They are aligned like FFHQ: facexlib's FFHQ 512 template
puts the eyes at (0.377, 0.469) and (0.623, 0.469) of the image, the nose tip at (0.5, 0.613) and the
mouth corners at y = 0.725; we jitter around those and add a small roll/scale/shift, as FFHQ's own
alignment leaves.

Each face is drawn with OpenCV (anti-aliased, sub-pixel) on a canvas 2-4x the output size, softly blurred
and reduced with INTER_AREA, so edges are smooth at any size. Everything random comes from
`numpy.random.default_rng(seed)`: a seed always gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lightning_dr2.files import write_json
from lightning_dr2.image_io import write_png
from lightning_dr2.outputs import check_output_location
from lightning_dr2.parallel import spawn_pool

log = logging.getLogger(__name__)

RENDERER_VERSION = 1
"""Bumped whenever `render_face` output changes, so a folder is never a mix of two renderers."""

MANIFEST = "manifest.json"

_SHIFT = 4  # cv2 sub-pixel bits: coordinates are passed as fixed point with 1/16 pixel precision


def _rgb_table(text: str) -> np.ndarray:
    """ "r g b, r g b, ..." -> (n, 3) float32: a palette written on one line."""
    return np.array([[float(v) for v in colour.split()] for colour in text.split(",")], np.float32)


# Skin anchors from very light to very dark (sRGB); a face picks a point between two neighbours.
_SKIN = _rgb_table("255 226 204, 241 198 170, 226 176 140, 200 140 104, 168 110 76, 132 86 58, 100 64 44, 70 46 34")
_HAIR = _rgb_table(
    "22 18 16, 45 30 22, 70 45 30, 110 72 45, 160 118 72, 215 180 120, 135 60 30, 165 75 40, 150 150 150, 220 218 212"
)
_HAIR_P = np.array([0.2, 0.2, 0.15, 0.12, 0.08, 0.08, 0.05, 0.04, 0.05, 0.03])
_IRIS = _rgb_table("60 35 20, 95 60 30, 120 85 45, 70 110 150, 90 140 180, 80 120 70, 110 110 105")
_IRIS_P = np.array([0.3, 0.25, 0.12, 0.12, 0.08, 0.08, 0.05])
_HAIR_STYLES = ("short", "long", "bob", "bangs", "curly", "bun", "buzz", "bald")
_HAIR_STYLE_P = np.array([0.2, 0.2, 0.14, 0.12, 0.1, 0.08, 0.08, 0.08])


def _supersample(size: int) -> int:
    """Canvas scale: 4x up to 128 px (small faces need many sub-samples per edge pixel), 2x above."""
    return 4 if size <= 128 else 2


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] (x row vector, y column vector) for an n x n canvas."""
    c = ((np.arange(n, dtype=np.float32) + 0.5) / n).astype(np.float32)
    return c[None, :], c[:, None]


class _Painter:
    """cv2 drawing in unit coordinates (0..1 of the canvas side), anti-aliased with sub-pixel precision."""

    def __init__(self, side: int):
        self.side = side
        self.scale = side * (1 << _SHIFT)

    def _pts(self, xy) -> np.ndarray:
        return np.round(np.asarray(xy, np.float64) * self.scale).astype(np.int32)

    def fill(self, img: np.ndarray, pts, color) -> None:
        cv2.fillPoly(img, [self._pts(pts)], color, cv2.LINE_AA, _SHIFT)

    def line(self, img: np.ndarray, pts, color, width: float) -> None:
        w = max(1, round(width * self.side))
        cv2.polylines(img, [self._pts(pts)], False, color, w, cv2.LINE_AA, _SHIFT)

    def ellipse(self, img: np.ndarray, center, axes, color, angle: float = 0.0) -> None:
        c = tuple(int(v) for v in self._pts(center))
        ax = tuple(max(1, int(v)) for v in self._pts(axes))
        cv2.ellipse(img, c, ax, angle, 0, 360, color, -1, cv2.LINE_AA, _SHIFT)


def _rgba(color) -> tuple[float, float, float, float]:
    r, g, b = np.clip(color, 0, 255)
    return float(r), float(g), float(b), 255.0


def _arc(cx, cy, ax, ay, t0, t1, n=32) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


class _Face:
    """One face: its sampled parameters and the drawing of each part, in draw order."""

    def __init__(self, rng: np.random.Generator, side: int):
        u = rng.uniform
        self.rng, self.side, self.p = rng, side, _Painter(side)
        # Layout around the FFHQ template (see module docstring); `yaw` slides features sideways.
        self.eye_y = 0.469 + u(-0.012, 0.012)
        self.eye_dx = 0.123 * u(0.93, 1.07)
        self.mouth_y = 0.725 + u(-0.015, 0.015)
        self.nose_y = self.eye_y + (self.mouth_y - self.eye_y) * u(0.52, 0.6)
        self.yaw = u(-0.018, 0.018)
        self.a = self.eye_dx * u(2.0, 2.35)  # face half width at the cheekbones
        self.y_mid = self.eye_y + u(0.0, 0.05)
        self.y_top = self.eye_y - u(0.25, 0.3)
        self.chin_y = self.mouth_y + u(0.12, 0.165)
        self.chin_w = u(0.02, 0.07)
        self.jaw_p = u(1.6, 2.8)  # superellipse exponent: 2 = oval, higher = square jaw
        self.nose_x = 0.5 + self.yaw * 1.6
        self.nose_w = u(0.032, 0.048)
        # Colours.
        k = u(0, len(_SKIN) - 1)
        i = min(int(k), len(_SKIN) - 2)
        self.skin = _SKIN[i] + (_SKIN[i + 1] - _SKIN[i]) * (k - i)
        self.skin = self.skin * u(0.94, 1.04) + np.array([u(-6, 10), u(-6, 4), u(-8, 6)], np.float32)
        self.hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)] * u(0.85, 1.15)
        self.style = _HAIR_STYLES[rng.choice(len(_HAIR_STYLES), p=_HAIR_STYLE_P)]
        self.light = u(-1, 1)  # horizontal light position: > 0 lights the right side of the image
        self.male_features = u() < 0.45  # beards and bald/buzz styles are drawn only on these
        if self.style in ("bald", "buzz") and not self.male_features:
            self.style = "short"
        # Hair volume: (centre y, half width, half height) of the ellipse that bounds the hair.
        grow = 1.45 if self.style == "curly" else u(1.06, 1.16)
        hair_h = (self.y_mid - self.y_top) * grow + (0.04 if self.style == "curly" else u(0.0, 0.03))
        self.outer = (self.y_mid, self.a * grow, hair_h)
        self.outline_pts = self.outline()

    # -- geometry --------------------------------------------------------------------------------
    def outline(self, n: int = 40) -> np.ndarray:
        """Face contour: an ellipse cap over the cranium, then a superellipse jaw down to the chin."""
        upper = _arc(0.5, self.y_mid, self.a, self.y_mid - self.y_top, np.pi, 2 * np.pi, n)
        s = np.linspace(0, 1, n)
        w = self.chin_w + (self.a - self.chin_w) * (1 - s**self.jaw_p) ** (1 / self.jaw_p)
        y = self.y_mid + (self.chin_y - self.y_mid) * s
        right = np.stack([0.5 + w, y], 1)
        left = np.stack([0.5 - w, y], 1)[::-1]
        return np.concatenate([upper, right[1:], left[1:-1]])

    def half_width(self, y: float) -> float:
        if y <= self.y_mid:
            t = (self.y_mid - y) / (self.y_mid - self.y_top)
            return self.a * np.sqrt(max(0.0, 1 - t * t))
        s = min(1.0, (y - self.y_mid) / (self.chin_y - self.y_mid))
        return self.chin_w + (self.a - self.chin_w) * (1 - s**self.jaw_p) ** (1 / self.jaw_p)

    # -- parts -------------------------------------------------------------------------------------
    def draw_back(self, fg: np.ndarray) -> None:
        """Hair behind the head (long styles, bun, curls), then clothes and neck."""
        u, p = self.rng.uniform, self.p
        cy, ax, ay = self.outer
        color = _rgba(self.hair * 0.8)
        if self.style in ("long", "bob"):
            bottom = u(0.9, 1.08) if self.style == "long" else self.chin_y + u(-0.06, 0.02)
            flare = u(1.1, 1.35) if self.style == "long" else u(1.05, 1.2)
            top = _arc(0.5, cy, ax, ay, np.pi, 2 * np.pi)
            pts = np.concatenate([[[0.5 - ax * flare, bottom]], top, [[0.5 + ax * flare, bottom]]])
            p.fill(fg, pts, color)
        elif self.style == "curly":
            p.ellipse(fg, (0.5, cy), (ax, ay), color)
            for t in np.linspace(np.pi * 0.85, np.pi * 2.15, 14):
                r = ax * u(0.16, 0.24)
                p.ellipse(fg, (0.5 + ax * np.cos(t), cy + ay * np.sin(t)), (r, r), color)
        elif self.style == "bun":
            r = u(0.07, 0.1)
            p.ellipse(fg, (0.5 + u(-0.03, 0.03), cy - ay - r * 0.3), (r, r * 0.9), color)

        # Clothes: a wide ellipse at the bottom; the neck (drawn after) cuts a V or round neckline.
        cloth = np.array([u(20, 235), u(20, 235), u(20, 235)], np.float32)
        p.ellipse(fg, (0.5, 1.08 + u(-0.02, 0.03)), (u(0.42, 0.58), u(0.16, 0.22)), _rgba(cloth))
        nw = self.a * u(0.5, 0.62)
        y0 = self.chin_y - 0.12
        neckline = u(0.95, 1.02)
        if u() < 0.5:  # V neck
            neck = [
                (0.5 - nw, y0),
                (0.5 + nw, y0),
                (0.5 + nw * 1.08, 0.94),
                (0.5, neckline + 0.04),
                (0.5 - nw * 1.08, 0.94),
            ]
        else:
            neck = [(0.5 - nw, y0), (0.5 + nw, y0), (0.5 + nw * 1.05, neckline), (0.5 - nw * 1.05, neckline)]
        p.fill(fg, neck, _rgba(self.skin * 0.78))

    def draw_skin(self, fg: np.ndarray, skin_mask: np.ndarray) -> None:
        """Ears, then the face itself; the skin mask is where soft shading applies."""
        u, p = self.rng.uniform, self.p
        ear_y = (self.eye_y + self.nose_y) / 2 + u(0.0, 0.015)
        ear_x = self.half_width(ear_y) - 0.006
        ear_ax = (u(0.026, 0.036), u(0.055, 0.072))
        for side in (-1, 1):
            c = (0.5 + side * ear_x, ear_y)
            tilt = side * u(0, 12)
            p.ellipse(fg, c, ear_ax, _rgba(self.skin * 0.9), tilt)
            p.ellipse(skin_mask, c, ear_ax, 255, tilt)
            p.ellipse(fg, (c[0] + side * 0.006, c[1]), (ear_ax[0] * 0.5, ear_ax[1] * 0.6), _rgba(self.skin * 0.7))
        p.fill(fg, self.outline_pts, _rgba(self.skin))
        p.fill(skin_mask, self.outline_pts, 255)

    def shading(self) -> np.ndarray:
        """Soft multiplicative shading (-/+ per channel) for the skin: contour, eye sockets, nose, cheeks,
        chin, beard. Drawn sharp, then blurred; applied before the crisp features are drawn."""
        u, rng = self.rng.uniform, self.rng
        half = self.side // 2  # smooth anyway: draw and blur at half resolution, then upsample
        p = _Painter(half)
        s = np.zeros((half, half, 3), np.float32)
        L = self.light
        shadow_side = -1.0 if L > 0 else 1.0
        p.line(s, np.concatenate([self.outline_pts, self.outline_pts[:1]]), (-0.22,) * 3, 0.035)
        p.ellipse(s, (0.5 + L * 0.06, self.eye_y - 0.16), (0.1, 0.05), (0.07,) * 3)  # forehead sheen
        for side in (-1, 1):
            ex = 0.5 + side * self.eye_dx + self.yaw
            p.ellipse(s, (ex, self.eye_y - 0.008), (0.06, 0.035), (-0.1, -0.12, -0.1))  # eye socket
        nx, nw = self.nose_x, self.nose_w
        bridge = [
            (nx + shadow_side * 0.018, self.eye_y + 0.02),
            (nx + shadow_side * nw * 0.8, self.nose_y - 0.01),
        ]
        p.line(s, bridge, (-0.13,) * 3, 0.012)
        p.ellipse(s, (nx, self.nose_y + 0.014), (nw * 0.95, 0.013), (-0.2,) * 3)  # under the nose
        p.ellipse(s, (nx + L * 0.006, self.nose_y - 0.014), (0.016, 0.014), (0.1,) * 3)  # tip highlight
        for side in (-1, 1):
            p.ellipse(s, (nx + side * nw, self.nose_y), (0.009, 0.016), (-0.14,) * 3)  # nose wings
        if u() < 0.5:  # blush
            for side in (-1, 1):
                p.ellipse(
                    s,
                    (0.5 + side * (self.eye_dx + 0.01), self.nose_y + 0.01),
                    (0.05, 0.035),
                    (0.07, -0.05, -0.04),
                )
        p.ellipse(s, (0.5 + self.yaw, self.mouth_y + 0.045), (0.05, 0.013), (-0.12,) * 3)  # under lower lip
        p.ellipse(s, (0.5 + self.yaw, self.chin_y - 0.03), (0.06, 0.025), (0.05,) * 3)  # chin highlight
        if self.male_features and self.style not in ("long", "bun") and u() < 0.4:
            # Stubble or beard: tint the jaw, chin and (sometimes) upper lip toward the hair colour.
            alpha = u(0.2, 0.6)
            tint = tuple(float(v) for v in alpha * (np.clip(self.hair / np.maximum(self.skin, 1), 0, 2) - 1))
            burn_y = self.eye_y + 0.05  # sideburn; the cheek line runs from there to below the mouth corner
            ys = np.linspace(burn_y, self.chin_y + 0.005, 10)
            right = [(0.5 + self.half_width(y) - 0.008, y) for y in ys]
            lip_y = self.nose_y + 0.03 if rng.random() < 0.6 else self.mouth_y + 0.02  # moustache or not
            top = [(0.38, self.mouth_y - 0.01), (0.47, lip_y), (0.53, lip_y), (0.62, self.mouth_y - 0.01)]
            p.fill(s, right + [(1.0 - x, y) for x, y in right[::-1]] + top, tint)
        s = cv2.GaussianBlur(s, (0, 0), 0.014 * half)
        return cv2.resize(s, (self.side, self.side), interpolation=cv2.INTER_LINEAR)

    def draw_eyes(self, fg: np.ndarray) -> None:
        u, p, rng = self.rng.uniform, self.p, self.rng
        ew = u(0.04, 0.052)
        openness = u(0.02, 0.2) if rng.random() < 0.07 else u(0.65, 1.0)
        eh = ew * u(0.42, 0.58) * openness
        tilt = u(-0.006, 0.01)  # outer corner higher (> 0) or lower
        peak = u(0.8, 1.25)
        iris = _IRIS[rng.choice(len(_IRIS), p=_IRIS_P)] * u(0.85, 1.15)
        iris_r = ew * u(0.42, 0.5)
        gaze = (u(-0.25, 0.25) * ew, u(-0.1, 0.1) * ew)
        sclera = np.array([238, 232, 226], np.float32) * u(0.85, 0.95)
        lash = (np.array([35, 25, 22], np.float32) * u(0.6, 1.2)).clip(0, 255)
        lash_w = u(0.006, 0.011)
        brow_mix = u(0.1, 0.35)
        brow_color = self.hair * u(0.55, 0.8) * (1 - brow_mix) + self.skin * brow_mix
        brow_y = self.eye_y - u(0.048, 0.068)
        brow_arch, brow_th = u(0.004, 0.02), u(0.008, 0.017)
        t = np.linspace(0, 1, 20)
        for side in (-1, 1):
            scale = 1 - side * self.yaw * 4  # the eye turned away from the viewer looks narrower
            ex = 0.5 + side * self.eye_dx + self.yaw
            inner = np.array([ex - side * ew * scale, self.eye_y + tilt / 2])
            outer = np.array([ex + side * ew * scale, self.eye_y - tilt / 2])
            base = inner + (outer - inner) * t[:, None]
            bump = np.sin(np.pi * t**peak)
            upper = base - np.stack([0 * t, eh * bump**0.8], 1)
            lower = base + np.stack([0 * t, eh * 0.6 * np.sin(np.pi * t)], 1)
            # Eyebrow: tapered, arched band above the eye.
            bx = ex - side * ew * 0.95 + side * ew * 2.25 * scale * t
            by = brow_y - brow_arch * np.sin(np.pi * t**0.8) + 0.006 * t
            th = brow_th * (1 - 0.6 * t) / 2
            p.fill(
                fg,
                np.concatenate([np.stack([bx, by - th], 1), np.stack([bx, by + th], 1)[::-1]]),
                _rgba(brow_color),
            )
            if openness < 0.3:  # closed or nearly closed: just the lash line
                p.line(fg, base + np.stack([0 * t, eh * 0.3 * np.sin(np.pi * t)], 1), _rgba(lash), lash_w)
                continue
            # Eyeball: draw sclera, iris, pupil and highlight on a copy, then keep it inside the almond.
            layer = fg.copy()
            centre = (ex + gaze[0], self.eye_y - eh * 0.15 + gaze[1])
            p.fill(layer, np.concatenate([upper, lower[::-1]]), _rgba(sclera))
            p.ellipse(layer, centre, (iris_r, iris_r), _rgba(iris * 0.5))
            p.ellipse(layer, centre, (iris_r * 0.82, iris_r * 0.82), _rgba(iris))
            p.ellipse(layer, centre, (iris_r * 0.42, iris_r * 0.42), _rgba((15, 10, 10)))
            hl = (centre[0] - 0.3 * iris_r * self.light, centre[1] - 0.35 * iris_r)
            p.ellipse(layer, hl, (iris_r * 0.2, iris_r * 0.2), _rgba((250, 250, 250)))
            p.line(layer, upper, _rgba(sclera * 0.55), eh * 0.7)  # shadow of the upper lid
            mask = np.zeros(fg.shape[:2], np.uint8)
            p.fill(mask, np.concatenate([upper, lower[::-1]]), 255)
            x0, y0 = (np.minimum(inner, outer) - [0.01, eh + 0.01]) * self.side
            x1, y1 = (np.maximum(inner, outer) + [0.01, eh + 0.01]) * self.side
            sl = (slice(max(0, int(y0)), int(y1) + 1), slice(max(0, int(x0)), int(x1) + 1))
            m = mask[sl][..., None].astype(np.float32) / 255
            fg[sl] = (fg[sl] * (1 - m) + layer[sl] * m).astype(np.uint8)
            p.line(fg, upper[3:15] - [0, eh * 0.9 + 0.006], _rgba(self.skin * 0.75), 0.004)  # crease
            p.line(fg, lower[2:19], _rgba(self.skin * 0.7), 0.004)
            p.line(fg, upper, _rgba(lash), lash_w * 0.6)
            p.line(fg, upper[9:], _rgba(lash), lash_w)

    def draw_nose_mouth(self, fg: np.ndarray) -> None:
        u, p, rng = self.rng.uniform, self.p, self.rng
        for side in (-1, 1):
            c = (self.nose_x + side * self.nose_w * 0.45, self.nose_y + 0.009)
            p.ellipse(fg, c, (0.011, 0.006), _rgba(self.skin * 0.45), side * 20)
        mx = 0.5 + self.yaw * 1.2
        mw = 0.109 * u(0.8, 1.12)
        smile = u(-0.3, 1.0)
        line_y = self.mouth_y + smile * 0.006
        corner_y = self.mouth_y - smile * 0.014
        self.mouth_corners = [(mx - mw, corner_y), (mx + mw, corner_y)]
        ul, ll = u(0.007, 0.015), u(0.011, 0.022)
        opened = u(0.008, 0.03) if smile > 0.4 and rng.random() < 0.35 else 0.0
        x = mx + mw * np.linspace(-1, 1, 25)
        v = np.abs(np.linspace(-1, 1, 25))
        mid = line_y + (corner_y - line_y) * v**2  # lip junction, bent by the smile
        lip = (self.skin * 0.72 + np.array([175, 60, 70], np.float32) * 0.28) * u(0.9, 1.05)
        bow = ul * (1 - 0.3 * np.exp(-((v / 0.12) ** 2))) * np.sin(np.pi * (1 - v) / 2) ** 0.5
        upper = np.stack([x, mid - bow], 1)
        lower_mid = mid + opened * (1 - v**2)
        lower = np.stack([x, lower_mid + ll * np.sin(np.pi * (1 - v) / 2)], 1)
        if opened:
            p.fill(
                fg,
                np.concatenate([np.stack([x, mid], 1), np.stack([x, lower_mid], 1)[::-1]]),
                _rgba((60, 22, 28)),
            )
            teeth = np.stack([x[3:-3], mid[3:-3] + opened * 0.55 * (1 - v[3:-3] ** 2)], 1)
            p.fill(fg, np.concatenate([np.stack([x[3:-3], mid[3:-3]], 1), teeth[::-1]]), _rgba((232, 226, 214)))
        p.fill(fg, np.concatenate([np.stack([x, mid], 1), upper[::-1]]), _rgba(lip * 0.88))
        p.fill(fg, np.concatenate([np.stack([x, lower_mid], 1), lower[::-1]]), _rgba(lip))
        p.ellipse(fg, (mx, lower_mid[12] + ll * 0.45), (mw * 0.3, ll * 0.22), _rgba(lip * 1.15))
        p.line(fg, np.stack([x, mid], 1), _rgba(lip * 0.45), 0.004)

    def draw_glasses(self, fg: np.ndarray) -> None:
        u, p = self.rng.uniform, self.p
        frame = _rgba(np.array([u(10, 120)] * 3, np.float32) + [u(0, 40), 0, 0])
        w, h, th = u(0.05, 0.062), u(0.035, 0.05), u(0.004, 0.008)
        ys = self.eye_y + 0.004
        for side in (-1, 1):
            cx = 0.5 + side * self.eye_dx + self.yaw
            r = _arc(cx, ys, w, h, 0, 2 * np.pi, 36)
            p.line(fg, np.concatenate([r, r[:1]]), frame, th)
            p.line(
                fg,
                [(cx + side * w, ys - 0.01), (0.5 + side * (self.half_width(ys) + 0.01), ys - 0.005)],
                frame,
                th,
            )
        p.line(
            fg,
            [
                (0.5 + self.yaw - self.eye_dx + w, ys - 0.005),
                (0.5 + self.yaw, ys - 0.012),
                (0.5 + self.yaw + self.eye_dx - w, ys - 0.005),
            ],
            frame,
            th,
        )

    def draw_front_hair(self, fg: np.ndarray) -> None:
        """Hair over the forehead and temples (and down the sides for long styles), with strands and sheen."""
        u, p = self.rng.uniform, self.p
        if self.style == "bald":
            return
        cy, ax, ay = self.outer
        temple_y = self.eye_y + u(-0.03, 0.03)
        if self.style == "bangs":
            hairline = self.eye_y - u(0.07, 0.1)
        else:
            hairline = self.y_top + (self.eye_y - self.y_top) * u(0.15, 0.35)
        part = u(-0.4, 0.4)  # > 0 raises the hairline on the right: a side parting
        q = u(1.5, 3.5)
        xs = np.linspace(1, -1, 31)
        iw = np.array([self.half_width(temple_y) * 0.96] * len(xs))
        hy = hairline + (temple_y - hairline) * np.abs(xs) ** q - part * 0.03 * xs * (1 - np.abs(xs))
        if self.style == "bangs":
            hy = hy + 0.012 * np.abs(np.sin(xs * np.pi * u(3, 6)))
        inner = np.stack([0.5 + iw * xs, hy], 1)
        outer = _arc(0.5, cy, ax, ay, np.pi, 2 * np.pi)
        left_side = [(0.5 - ax, temple_y + 0.02)]
        right_side = [(0.5 + ax, temple_y + 0.02)]
        if self.style in ("long", "bob"):  # side locks down past the ears, over the face edge
            bottom = self.chin_y + (u(0.0, 0.12) if self.style == "long" else u(-0.08, -0.01))
            ys = np.linspace(temple_y, bottom, 10)
            inset = u(0.0, 0.025)
            right_in = [(0.5 + self.half_width(y) - inset, y) for y in ys]
            inner = np.concatenate([right_in[::-1], inner, [(1 - x, y) for x, y in right_in]])
            left_side = [(0.5 - ax * 1.05, bottom)]
            right_side = [(0.5 + ax * 1.05, bottom)]
        shape = np.concatenate([left_side, outer, right_side, inner])
        color = self.hair
        if self.style == "buzz":
            color = self.hair * 0.55 + self.skin * 0.45
        mask = np.zeros(fg.shape[:2], np.uint8)
        p.fill(fg, shape, _rgba(color))
        p.fill(mask, shape, 255)
        # Strands and a sheen band around the crown, kept inside this hair shape.
        layer = fg.copy()
        for _ in range(int(u(5, 12))):
            r = u(0.55, 1.0)
            t0, t1 = u(1.0, 1.45) * np.pi, u(1.55, 2.0) * np.pi
            shade = u(0.65, 1.3)
            p.line(layer, _arc(0.5 + u(-0.03, 0.03), cy, ax * r, ay * r, t0, t1, 16), _rgba(color * shade), 0.004)
        X, Y = _grid(self.side // 4)  # smooth: compute at quarter resolution
        rr = np.sqrt(((X - 0.5) / ax) ** 2 + ((Y - cy) / ay) ** 2)
        sheen = 1 + u(0.1, 0.3) * np.exp(-(((rr - u(0.75, 0.9)) / 0.07) ** 2)) * (Y < cy)
        sheen = cv2.resize(sheen.astype(np.float32), (self.side, self.side), interpolation=cv2.INTER_LINEAR)
        lit = cv2.multiply(layer[..., :3], cv2.merge([sheen] * 3), dtype=cv2.CV_8U)
        np.copyto(fg[..., :3], lit, where=(mask > 127)[..., None])


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """Solid, gradient or blurred-blob (bokeh-like) background, rendered small and upscaled."""
    u = rng.uniform
    n = 16
    X, Y = _grid(n)

    def color():
        hsv = np.uint8([[[u(0, 180), u(0, 160), u(40, 250)]]])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)

    kind = rng.choice(3)
    c1, c2 = color(), color()
    if kind == 0:
        bg = np.broadcast_to(c1, (n, n, 3)).copy()
    else:
        ang = u(0, 2 * np.pi)
        ramp = np.clip((X - 0.5) * np.cos(ang) + (Y - 0.5) * np.sin(ang) + 0.5, 0, 1)[..., None]
        bg = c1 + (c2 - c1) * ramp
    if kind == 2:
        for _ in range(int(u(2, 6))):
            c = (int(u(0, n)), int(u(0, n)))
            cv2.circle(bg, c, int(u(1, 4)), tuple(float(v) for v in color()), -1)
        bg = cv2.GaussianBlur(bg, (0, 0), 1.2)
    return cv2.resize(bg, (side, side), interpolation=cv2.INTER_CUBIC)


def render_face(seed: int, size: int) -> np.ndarray:
    """Render one synthetic aligned face as a (size, size, 3) uint8 RGB array; same seed, same bytes."""
    return render_face_with_landmarks(seed, size)[0]


def render_face_with_landmarks(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """`render_face` and where its five FFHQ landmarks were drawn: (5, 2) float pixel (x, y) of the left and
    right eye centres, the nose tip and the left and right mouth corners (left/right as seen in the image),
    after the roll/scale/shift. The ground truth that face detection and alignment are measured against."""
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    side = size * _supersample(size)
    face = _Face(rng, side)

    fg = np.zeros((side, side, 4), np.uint8)  # premultiplied RGBA: cv2's anti-aliasing over zeros
    skin_mask = np.zeros((side, side), np.uint8)
    face.draw_back(fg)
    face.draw_skin(fg, skin_mask)
    shade = 1 + face.shading() * (skin_mask[..., None] * np.float32(1 / 255))
    fg[..., :3] = cv2.multiply(fg[..., :3], shade, dtype=cv2.CV_8U)
    face.draw_eyes(fg)
    face.draw_nose_mouth(fg)
    if rng.random() < 0.12:
        face.draw_glasses(fg)
    face.draw_front_hair(fg)

    # A small roll/scale/shift around the eyes, directional light over the figure, then the background.
    angle = float(np.clip(rng.normal(0, 3.0), -8, 8))
    m = cv2.getRotationMatrix2D((0.5 * side, face.eye_y * side), angle, rng.uniform(0.96, 1.04))
    m[:, 2] += rng.uniform(-0.015, 0.015, 2) * side
    fg = cv2.warpAffine(fg, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    landmarks = np.array(
        [
            (0.5 - face.eye_dx + face.yaw, face.eye_y),
            (0.5 + face.eye_dx + face.yaw, face.eye_y),
            (face.nose_x, face.nose_y),
            *face.mouth_corners,
        ]
    )
    # Canvas pixel-centre coordinates (unit * side) through the roll, then down to output pixels.
    landmarks = (landmarks * side) @ m[:, :2].T + m[:, 2]
    landmarks = (landmarks + 0.5) * (size / side) - 0.5
    X, _ = _grid(side)
    light = 1 + rng.uniform(0.05, 0.22) * face.light * (X - 0.5) * 2
    out = fg.astype(np.float32)
    img = out[..., :3] * light[..., None] + _background(rng, side) * (1 - out[..., 3:] * np.float32(1 / 255))
    # Area reduction averages the supersamples; a light blur then softens edges like a camera would.
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), 0.35)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), landmarks


def face_seed(seed: int, index: int) -> int:
    """Seed of image `index` in a set generated with `seed` (well mixed, so sets of nearby seeds differ)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _is_done(path: Path, size: int) -> bool:
    try:
        with Image.open(path) as img:
            return img.size == (size, size)
    except (OSError, ValueError):
        return False


def _write_face(job: tuple[int, int, str]) -> None:
    """Render and write one PNG atomically, so an interrupted run leaves no half-written image."""
    seed, size, path = job
    write_png(path, render_face(seed, size))


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; avoid oversubscription


def _write_manifest(out: Path, n: int, size: int, seed: int) -> None:
    path = out / MANIFEST
    manifest = {"generator": __name__, "version": RENDERER_VERSION, "n": n, "size": size, "seed": seed}
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("version", "size", "seed"):
            if old.get(key) != manifest[key]:
                raise ValueError(
                    f"{out} already holds synthetic faces with {key}={old.get(key)!r}, "
                    f"not {manifest[key]!r}; use another folder or delete it"
                )
        manifest["n"] = max(n, int(old.get("n", 0)))
    write_json(path, manifest)


def generate_faces(
    out_dir: str | os.PathLike,
    n: int,
    size: int,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
    flag: str = "synthetic faces folder",
) -> list[Path]:
    """Write `n` synthetic faces as `out_dir/00000.png`, ... plus `manifest.json`; return all n paths.

    Resumable: images already present at the right size are kept, so an interrupted or repeated call
    only writes what is missing. Image i is `render_face(face_seed(seed, i), size)`, independent of
    `workers` (None: one process per core, at most 8).
    """
    out = check_output_location(out_dir, flag)  # `flag`: how the user named the folder, for its errors
    _write_manifest(out, n, size, seed)
    paths = [out / f"{i:05d}.png" for i in range(n)]
    todo = [(face_seed(seed, i), size, str(p)) for i, p in enumerate(paths) if not _is_done(p, size)]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(todo), desc=f"synthetic faces -> {out}", unit="img", disable=not progress)
    with bar:
        if workers > 1 and len(todo) >= 64:
            with spawn_pool(workers, initializer=_worker_init) as pool:
                for _ in pool.map(_write_face, todo, chunksize=16):
                    bar.update()
        else:
            for job in todo:
                _write_face(job)
                bar.update()
    log.info("synthetic faces in %s: %d written, %d already present", out, len(todo), n - len(todo))
    return paths

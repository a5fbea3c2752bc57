"""Seeded synthetic clothing images in the VCP layout (flavour ``clothing``).

Writes ``classes.json``, ``images/{split}/clothing_NNNNNN.png`` and
``labels/{split}/clothing_NNNNNN.png`` (class index per pixel), the layout read by
`segfusion.datasets.vcp`, so the demo exercises the real segment -> instance conversion.
Classes: background, skin, hair (stuff) and shirt, dress, coat, pants, skirt, shoes,
belt, bag, hat (garments, things).

Design, and why (IMP Sec. 4.1-4.2, Costea Sec. 3):

* **A person on a background**, standing, 1-2 per landscape image (mostly one, as in
  VCP and ModaNet), sometimes cut by the image border (partial bodies), later persons
  occluding earlier ones. Body parts are capsules, ellipses and trapezoids in units of
  the person's height, with random pose (arm and leg angles) and proportions.
* **Layering splits garments into segments.** An *open coat* covers the sides of the
  shirt (or dress) and its sleeves: what remains of the shirt is a central strip plus
  the two cuffs that stick out of the coat sleeves, and a belt or a bag strap cuts the
  strip again. The VCP labels record only classes, so the converter's connected
  components turn one shirt into several instances: exactly the case IMP Sec. 4.1
  describes (a shirt under a blazer seen at the neck and both cuffs). Coats without a
  collar split into two panels; shoes are two instances.
* **Sub-categories share local appearance and differ globally.** Each Costea category
  has its own fabric distribution (upper-body: shirts, dresses and coats; lower-body:
  pants and skirts; footwear; accessories): colour family, pattern (plain, stripes,
  checks, dots, twill) and fold shading are drawn from the category's distribution,
  independently of the sub-category. A shirt, a dress and a coat therefore look alike
  in any small window and differ only by global shape and extent (hip-length with
  sleeves; knee-length flared; long, open, over everything). A pixel classifier with
  a small receptive field can find the category but must guess the sub-category; a
  detector seeing the whole garment need not.
* **Nuisances**: textured background with clutter that sometimes uses garment fabrics,
  a per-image illumination gradient and colour cast, Gaussian blur and sensor noise.
* **Determinism and scale**: image k of a split comes from
  ``np.random.default_rng([seed, crc32(split), k])`` and is written at once (constant
  memory; any image can be regenerated alone), like the street flavour.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from segfusion.io.atomic import atomic_path
from segfusion.io.images import write_png

CLASSES = ("background", "skin", "hair", "shirt", "dress", "coat", "pants", "skirt", "shoes", "belt", "bag", "hat")
(BACKGROUND, SKIN, HAIR, SHIRT, DRESS, COAT, PANTS, SKIRT, SHOES, BELT, BAG, HAT) = range(len(CLASSES))
CATEGORY = {SHIRT: "upper-body", DRESS: "upper-body", COAT: "upper-body", PANTS: "lower-body", SKIRT: "lower-body",
            SHOES: "footwear", BELT: "accessory", BAG: "accessory", HAT: "accessory"}

# Colour families per Costea category: the local statistics shared by its sub-categories.
FABRIC_COLOURS = {
    "upper-body": np.array([[200, 60, 60], [60, 90, 170], [235, 235, 230], [40, 40, 45], [90, 140, 80],
                            [220, 190, 90], [150, 90, 150], [120, 160, 200]], np.float32),
    "lower-body": np.array([[50, 70, 120], [30, 40, 70], [25, 25, 30], [170, 150, 110], [90, 90, 95],
                            [120, 60, 50]], np.float32),
    "footwear": np.array([[30, 25, 20], [90, 55, 30], [230, 230, 230], [140, 30, 30]], np.float32),
    "accessory": np.array([[120, 70, 30], [20, 20, 20], [190, 40, 60], [200, 170, 60], [60, 110, 110]], np.float32),
}
PATTERNS = {
    "upper-body": ("plain", "stripes", "check", "dots"),
    "lower-body": ("plain", "twill", "twill", "check"),
    "footwear": ("plain",),
    "accessory": ("plain", "stripes"),
}
SKIN_TONES = np.array([[235, 200, 175], [205, 160, 125], [160, 110, 75], [100, 65, 45]], np.float32)
HAIR_COLOURS = np.array([[25, 20, 18], [85, 55, 30], [200, 165, 100], [140, 60, 30], [130, 130, 130]], np.float32)


@dataclass
class Canvas:
    """Image being drawn and its class-index label map."""

    rgb: np.ndarray  # (H, W, 3) float32
    label: np.ndarray  # (H, W) uint8 class index
    yy: np.ndarray  # (H, W) float32 row coordinates
    xx: np.ndarray  # (H, W) float32 column coordinates

    def paint(self, mask: np.ndarray, colours: np.ndarray, label: int) -> None:
        """Give ``mask`` the per-pixel ``colours`` ((n, 3), n = mask.sum()) and the class ``label``."""
        self.rgb[mask] = colours
        self.label[mask] = label


@dataclass
class Fabric:
    """A textile drawn from a category's distribution: colours, pattern and fold shading."""

    base: np.ndarray
    second: np.ndarray
    pattern: str
    period: float
    angle: float
    fold_wavelength: float
    fold_phase: float
    grain: float

    @classmethod
    def draw(cls, category: str, unit: float, rng: np.random.Generator) -> "Fabric":
        cols = FABRIC_COLOURS[category]
        base = cols[rng.integers(len(cols))] + rng.normal(0, 12, 3).astype(np.float32)
        second = cols[rng.integers(len(cols))] * rng.uniform(0.6, 1.0)
        return cls(
            base=base,
            second=second.astype(np.float32),
            pattern=str(PATTERNS[category][rng.integers(len(PATTERNS[category]))]),
            period=max(2.5, unit * rng.uniform(0.02, 0.05)),
            angle=float(rng.choice([0.0, math.pi / 2, math.pi / 4, rng.uniform(0, math.pi)])),
            fold_wavelength=max(3.0, unit * rng.uniform(0.04, 0.1)),
            fold_phase=float(rng.uniform(0, 2 * math.pi)),
            grain=float(rng.uniform(4, 10)),
        )

    def colours(self, ys: np.ndarray, xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) colours at pixel coordinates (ys, xs): pattern, folds and grain noise."""
        u = xs * math.cos(self.angle) + ys * math.sin(self.angle)
        v = -xs * math.sin(self.angle) + ys * math.cos(self.angle)
        if self.pattern == "stripes":
            t = (np.sin(2 * math.pi * u / self.period) > 0.3).astype(np.float32)
        elif self.pattern == "check":
            t = 0.5 * ((np.sin(2 * math.pi * u / self.period) > 0) + (np.sin(2 * math.pi * v / self.period) > 0)).astype(np.float32)
        elif self.pattern == "dots":
            du = (u % self.period) - self.period / 2
            dv = (v % self.period) - self.period / 2
            t = (du * du + dv * dv < (0.25 * self.period) ** 2).astype(np.float32)
        elif self.pattern == "twill":
            t = 0.35 * (((xs + ys) % 3) < 1).astype(np.float32)
        else:
            t = np.zeros_like(xs)
        col = self.base[None, :] * (1 - t[:, None]) + self.second[None, :] * t[:, None]
        folds = 1.0 + 0.12 * np.sin(2 * math.pi * xs / self.fold_wavelength + self.fold_phase + 0.3 * ys / self.fold_wavelength)
        return col * folds[:, None] + rng.normal(0, self.grain, (len(xs), 3)).astype(np.float32)


# -- shapes (boolean masks over the canvas) ------------------------------------------------------
def _ellipse(c: Canvas, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((c.yy - cy) / max(ry, 0.5)) ** 2 + ((c.xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _capsule(c: Canvas, p0: tuple[float, float], p1: tuple[float, float], r: float) -> np.ndarray:
    """Pixels within ``r`` of the segment p0-p1 (points are (y, x)): limbs and sleeves."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    den = dy * dy + dx * dx
    t = np.clip(((c.yy - y0) * dy + (c.xx - x0) * dx) / den, 0.0, 1.0) if den > 0 else 0.0
    return (c.yy - (y0 + t * dy)) ** 2 + (c.xx - (x0 + t * dx)) ** 2 <= max(r, 0.6) ** 2


def _trapezoid(c: Canvas, y0: float, y1: float, top: tuple[float, float], bottom: tuple[float, float]) -> np.ndarray:
    """Rows y0..y1 between a left and right edge interpolated from ``top`` (xl, xr) to ``bottom``."""
    t = np.clip((c.yy - y0) / max(y1 - y0, 1e-3), 0.0, 1.0)
    left = top[0] + t * (bottom[0] - top[0])
    right = top[1] + t * (bottom[1] - top[1])
    return (c.yy >= y0) & (c.yy < y1) & (c.xx >= left) & (c.xx <= right)


def _along(p0: tuple[float, float], p1: tuple[float, float], f: float) -> tuple[float, float]:
    return (p0[0] + f * (p1[0] - p0[0]), p0[1] + f * (p1[1] - p0[1]))


def _fill(c: Canvas, mask: np.ndarray, fabric: Fabric, label: int, rng: np.random.Generator) -> None:
    if mask.any():
        c.paint(mask, fabric.colours(c.yy[mask], c.xx[mask], rng), label)


def _fill_plain(c: Canvas, mask: np.ndarray, colour: np.ndarray, label: int, noise: float, rng: np.random.Generator) -> None:
    n = int(mask.sum())
    if n:
        c.paint(mask, colour[None, :] + rng.normal(0, noise, (n, 3)).astype(np.float32), label)


# -- scene ---------------------------------------------------------------------------------------
def _draw_background(c: Canvas, rng: np.random.Generator) -> None:
    h, w = c.label.shape
    wall = np.array(rng.uniform(120, 220, 3), np.float32)
    floor_y = h * rng.uniform(0.7, 0.95)
    rgb = wall[None, None, :] * (1.0 - 0.2 * (c.yy / h))[..., None]
    floor = c.yy >= floor_y
    rgb[floor] = np.array(rng.uniform(60, 140, 3), np.float32) * 0.9
    c.rgb[:] = rgb + rng.normal(0, 5, rgb.shape).astype(np.float32)
    c.label[:] = BACKGROUND
    # Clutter (furniture, posters, racks): some textured like garments, a nuisance for pixel classifiers.
    unit = float(h)
    for _ in range(int(rng.integers(1, 5))):
        y0, x0 = rng.uniform(0, h * 0.8), rng.uniform(-0.1 * w, w)
        m = (c.yy >= y0) & (c.yy < y0 + rng.uniform(0.05, 0.3) * h) & (c.xx >= x0) & (c.xx < x0 + rng.uniform(0.05, 0.25) * w)
        cat = ("upper-body", "lower-body", "accessory")[int(rng.integers(3))]
        fabric = Fabric.draw(cat, unit, rng) if rng.random() < 0.4 else Fabric(
            base=np.array(rng.uniform(40, 230, 3), np.float32), second=np.zeros(3, np.float32), pattern="plain",
            period=4.0, angle=0.0, fold_wavelength=1e6, fold_phase=0.0, grain=6.0)
        _fill(c, m, fabric, BACKGROUND, rng)


def _draw_person(c: Canvas, foot_y: float, cx: float, ph: float, rng: np.random.Generator) -> None:
    """One standing person with layered garments (the order of painting is the layering)."""
    top = foot_y - ph
    u = ph  # every length below is a fraction of the person's height
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 8, 3).astype(np.float32)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
    sw = 0.11 * u * rng.uniform(0.9, 1.1)  # shoulder half-width
    ys = top + 0.17 * u  # shoulder line
    waist_y, hip_y, crotch_y = top + 0.45 * u, top + 0.52 * u, top + 0.56 * u
    head = (top + 0.065 * u, cx + rng.uniform(-0.01, 0.01) * u)

    # Pose: arms hang outward (angles from the vertical), legs spread.
    arms = []
    for side in (-1, 1):
        a = math.radians(rng.uniform(8, 35))
        b = a + math.radians(rng.uniform(-10, 25))
        shoulder = (ys + 0.02 * u, cx + side * sw)
        elbow = (shoulder[0] + 0.17 * u * math.cos(a), shoulder[1] + side * 0.17 * u * math.sin(a))
        wrist = (elbow[0] + 0.16 * u * math.cos(b), elbow[1] + side * 0.16 * u * math.sin(b))
        arms.append((shoulder, elbow, wrist))
    legs = []
    for side in (-1, 1):
        spread = rng.uniform(0.0, 0.06) * u
        hip = (crotch_y - 0.03 * u, cx + side * 0.05 * u)
        ankle = (foot_y - 0.03 * u, cx + side * (0.05 * u + spread))
        legs.append((hip, ankle))

    # Long hair behind the head, then the body in skin.
    if rng.random() < 0.4:
        _fill_plain(c, _trapezoid(c, head[0], ys + 0.08 * u, (head[1] - 0.06 * u, head[1] + 0.06 * u), (head[1] - 0.09 * u, head[1] + 0.09 * u)), hair, HAIR, 6, rng)
    body = _ellipse(c, *head, 0.065 * u, 0.05 * u) | _trapezoid(c, head[0] + 0.04 * u, ys + 0.01 * u, (cx - 0.02 * u, cx + 0.02 * u), (cx - 0.025 * u, cx + 0.025 * u))
    body |= _trapezoid(c, ys, hip_y, (cx - sw, cx + sw), (cx - 0.1 * u, cx + 0.1 * u))
    for hip, ankle in legs:
        body |= _capsule(c, hip, ankle, 0.045 * u)
    _fill_plain(c, body, skin, SKIN, 7, rng)
    # Hair cap on the upper half of the head.
    cap = _ellipse(c, head[0] - 0.01 * u, head[1], 0.06 * u, 0.055 * u) & (c.yy < head[0] - 0.015 * u)
    _fill_plain(c, cap, hair, HAIR, 6, rng)

    upper = rng.choice([SHIRT, SHIRT, DRESS])
    upper_fabric = Fabric.draw("upper-body", u, rng)
    # Lower garment (none under a dress).
    if upper == SHIRT:
        lower = rng.choice([PANTS, PANTS, SKIRT])
        lower_fabric = Fabric.draw("lower-body", u, rng)
        if lower == PANTS:
            m = _trapezoid(c, waist_y, crotch_y, (cx - 0.095 * u, cx + 0.095 * u), (cx - 0.1 * u, cx + 0.1 * u))
            for hip, ankle in legs:
                m |= _capsule(c, hip, _along(hip, ankle, 0.97), 0.05 * u)
        else:
            hem = top + rng.uniform(0.68, 0.8) * u
            flare = rng.uniform(0.12, 0.2) * u
            m = _trapezoid(c, waist_y, hem, (cx - 0.09 * u, cx + 0.09 * u), (cx - flare, cx + flare))
        _fill(c, m, lower_fabric, int(lower), rng)
        shirt = _trapezoid(c, ys - 0.005 * u, hip_y + 0.01 * u, (cx - sw - 0.01 * u, cx + sw + 0.01 * u), (cx - 0.105 * u, cx + 0.105 * u))
        _fill(c, shirt, upper_fabric, SHIRT, rng)
        if rng.random() < 0.5:  # a belt across the waist cuts the shirt
            belt = _trapezoid(c, waist_y - 0.012 * u, waist_y + 0.008 * u, (cx - 0.118 * u, cx + 0.118 * u), (cx - 0.118 * u, cx + 0.118 * u))
            _fill(c, belt, Fabric.draw("accessory", u, rng), BELT, rng)
    else:
        hem = top + rng.uniform(0.68, 0.85) * u
        flare = rng.uniform(0.15, 0.24) * u
        dress = _trapezoid(c, ys - 0.005 * u, waist_y, (cx - sw, cx + sw), (cx - 0.09 * u, cx + 0.09 * u))
        dress |= _trapezoid(c, waist_y, hem, (cx - 0.09 * u, cx + 0.09 * u), (cx - flare, cx + flare))
        _fill(c, dress, upper_fabric, DRESS, rng)

    coat = rng.random() < 0.5
    coat_fabric = Fabric.draw("upper-body", u, rng)
    if coat:  # open coat: two panels, joined by a collar behind the neck or not
        gap = rng.uniform(0.02, 0.045) * u
        hem = top + rng.uniform(0.58, 0.8) * u
        width = rng.uniform(0.12, 0.16) * u
        panels = _trapezoid(c, ys - 0.01 * u, hem, (cx - sw - 0.015 * u, cx - gap), (cx - width, cx - gap * 1.3))
        panels |= _trapezoid(c, ys - 0.01 * u, hem, (cx + gap, cx + sw + 0.015 * u), (cx + gap * 1.3, cx + width))
        if rng.random() < 0.6:
            panels |= _trapezoid(c, ys - 0.025 * u, ys + 0.005 * u, (cx - sw, cx + sw), (cx - sw, cx + sw))
        _fill(c, panels, coat_fabric, COAT, rng)

    # Arms over the torso layers: skin, then the shirt sleeve, then the (shorter) coat sleeve.
    long_sleeves = upper == SHIRT and (coat or rng.random() < 0.5)
    for shoulder, elbow, wrist in arms:
        arm = _capsule(c, shoulder, elbow, 0.03 * u) | _capsule(c, elbow, wrist, 0.027 * u) | _ellipse(c, *_along(elbow, wrist, 1.12), 0.028 * u, 0.022 * u)
        _fill_plain(c, arm, skin, SKIN, 7, rng)
        if upper == SHIRT or rng.random() < 0.5:
            end = _along(elbow, wrist, 0.95) if long_sleeves else _along(shoulder, elbow, rng.uniform(0.4, 0.9))
            sleeve = _capsule(c, shoulder, elbow if long_sleeves else end, 0.036 * u)
            if long_sleeves:
                sleeve |= _capsule(c, elbow, end, 0.033 * u)
            _fill(c, sleeve, upper_fabric, int(upper), rng)
        if coat:
            end = _along(elbow, wrist, rng.uniform(0.7, 0.85))  # shorter than the shirt's: cuffs show
            sleeve = _capsule(c, shoulder, elbow, 0.042 * u) | _capsule(c, elbow, end, 0.039 * u)
            _fill(c, sleeve, coat_fabric, COAT, rng)

    shoe_fabric = Fabric.draw("footwear", u, rng)
    for side, (_, ankle) in zip((-1, 1), legs):
        _fill(c, _ellipse(c, ankle[0] + 0.018 * u, ankle[1] + side * 0.015 * u, 0.024 * u, 0.045 * u), shoe_fabric, SHOES, rng)
    if rng.random() < 0.25:
        hat = _ellipse(c, head[0] - 0.045 * u, head[1], 0.035 * u, 0.05 * u) | _trapezoid(
            c, head[0] - 0.045 * u, head[0] - 0.03 * u, (head[1] - 0.08 * u, head[1] + 0.08 * u), (head[1] - 0.08 * u, head[1] + 0.08 * u))
        _fill(c, hat, Fabric.draw("accessory", u, rng), HAT, rng)
    if rng.random() < 0.35:  # bag on one hip, its strap across the torso from the other shoulder
        side = 1 if rng.random() < 0.5 else -1
        bag_c = (hip_y + 0.02 * u, cx + side * 0.16 * u)
        bag_fabric = Fabric.draw("accessory", u, rng)
        strap = _capsule(c, (ys, cx - side * sw * 0.7), (bag_c[0] - 0.03 * u, bag_c[1]), max(0.7, 0.008 * u))
        bag = _trapezoid(c, bag_c[0] - 0.05 * u, bag_c[0] + 0.05 * u, (bag_c[1] - 0.05 * u, bag_c[1] + 0.05 * u), (bag_c[1] - 0.06 * u, bag_c[1] + 0.06 * u))
        _fill(c, strap | bag, bag_fabric, BAG, rng)


def render_clothing(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One clothing image: (H, W, 3) uint8 RGB and (H, W) uint8 class index (`CLASSES`)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c = Canvas(rgb=np.zeros((height, width, 3), np.float32), label=np.zeros((height, width), np.uint8), yy=yy, xx=xx)
    _draw_background(c, rng)
    n = 1 + int(width >= 1.2 * height and rng.random() < 0.4)
    slots = np.sort(rng.uniform(0.25, 0.75, n)) if n == 1 else np.array([rng.uniform(0.2, 0.4), rng.uniform(0.6, 0.8)])
    persons = [(height * rng.uniform(0.9, 1.06), width * s, height * rng.uniform(0.7, 0.95)) for s in slots]
    persons.sort(key=lambda p: p[0])  # lower feet = nearer = drawn last (occludes)
    for foot_y, cx, ph in persons:
        _draw_person(c, foot_y, cx, ph, rng)
    # Photometric nuisances: illumination gradient and colour cast, blur, noise.
    ang = rng.uniform(0, 2 * math.pi)
    grad = (math.cos(ang) * (xx / width - 0.5) + math.sin(ang) * (yy / height - 0.5))[..., None]
    rgb = c.rgb * (1.0 + rng.uniform(0.1, 0.35) * grad + rng.uniform(-0.15, 0.15)) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    sigma = rng.uniform(0.0, 1.0)
    if sigma > 0.3:
        rgb = gaussian_filter(rgb, sigma=(sigma, sigma, 0))
    rgb = rgb + rng.normal(0, rng.uniform(2, 6), rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), c.label


def class_list() -> list[dict]:
    """``classes.json`` entries (name and Costea category; stuff keeps its name)."""
    return [{"name": n, "category": CATEGORY.get(k, n)} for k, n in enumerate(CLASSES)]


def synthesize_clothing(out: str | os.PathLike, split: str, num: int, size: tuple[int, int], seed: int) -> list[Path]:
    """Write ``num`` clothing images of ``size`` (H, W) for ``split`` in the VCP layout; return the image paths."""
    out = Path(out)
    with atomic_path(out / "classes.json") as tmp:
        tmp.write_text(json.dumps(class_list(), indent=1))
    written = []
    for k in tqdm(range(num), desc=f"synthesize clothing {split}"):
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), k])
        rgb, label = render_clothing(size[0], size[1], rng)
        stem = f"clothing_{k:06d}"
        write_png(out / "images" / split / f"{stem}.png", rgb)
        write_png(out / "labels" / split / f"{stem}.png", label)
        written.append(out / "images" / split / f"{stem}.png")
    return written

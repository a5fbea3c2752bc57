"""Seeded synthetic scenes written in a raw native layout, so the demo runs the real converters.

Flavour ``street`` writes the Cityscapes layout (leftImg8bit + gtFine labelIds/instanceIds,
real Cityscapes label ids from `cityscapesscripts.helpers.labels`).

Design, and why:

* **Perspective.** A horizon splits sky/buildings from road/sidewalk; objects stand on
  the ground and shrink toward the horizon, giving scale variation and small objects.
* **Sub-categories share local appearance and differ globally** (the claim of the
  Costea and IMP papers that object-level reasoning beats per-pixel classification on
  car/truck/bus and person/rider): every vehicle is painted from the same paint palette
  with the same window band and wheels; car, truck and bus differ only in size and
  aspect ratio (truck: tall cab + box; bus: long and tall). Person and rider use the
  same clothing/skin texture; a rider is a person whose context is a bicycle under it.
  A pixel classifier with a small receptive field must confuse them; a detector that
  sees the whole box need not.
* **Nuisances**: occlusion (objects drawn far to near), per-image illumination gradient,
  Gaussian blur, sensor noise, small distant objects, occasional crowd ("group")
  regions of persons (instanceIds < 1000, the Cityscapes convention) and void "static"
  clutter (labelId 4, ignored in evaluation).
* **Determinism and scale**: image k of a split is drawn from
  ``np.random.default_rng([seed, split_code, k])`` and written at once, so thousands of
  images need constant memory and any subset can be regenerated independently.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from segfusion.io.images import write_png

# Cityscapes labelIds used by the street flavour (checked against the official table in tests).
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, STATIC = 7, 8, 11, 21, 23, 4
PERSON, RIDER, CAR, TRUCK, BUS, BICYCLE = 24, 25, 26, 27, 28, 33

CITY = "synthtown"
VEHICLE_PAINT = np.array([[170, 30, 30], [30, 60, 160], [200, 200, 205], [40, 40, 45], [210, 170, 40], [60, 120, 70]], np.float32)
CLOTHING = np.array([[40, 50, 120], [150, 40, 40], [60, 60, 60], [200, 190, 170], [90, 130, 60]], np.float32)
SKIN = np.array([200, 160, 130], np.float32)


@dataclass
class Canvas:
    """Image being drawn plus its Cityscapes label maps (H, W)."""

    rgb: np.ndarray  # (H, W, 3) float32
    label: np.ndarray  # (H, W) uint8 labelIds
    instance: np.ndarray  # (H, W) int32 instanceIds
    yy: np.ndarray
    xx: np.ndarray

    def paint(self, mask: np.ndarray, color: np.ndarray, label: int, instance: int, rng, texture: float = 8.0) -> None:
        """Paint ``mask`` with a noisy colour and claim its pixels for ``label``/``instance``."""
        n = int(mask.sum())
        if n == 0:
            return
        self.rgb[mask] = color + rng.normal(0, texture, size=(n, 3)).astype(np.float32)
        self.label[mask] = label
        self.instance[mask] = instance


def _ellipse(c: Canvas, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((c.yy - cy) / max(ry, 0.5)) ** 2 + ((c.xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _rect(c: Canvas, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return (c.yy >= y0) & (c.yy < y1) & (c.xx >= x0) & (c.xx < x1)


def _draw_background(c: Canvas, horizon: int, rng: np.random.Generator) -> None:
    h, w = c.label.shape
    sky = c.yy < horizon
    c.paint(sky, np.array([110, 160, 215], np.float32) + rng.normal(0, 10, 3).astype(np.float32), SKY, SKY, rng, 4.0)
    c.rgb[sky] -= (c.yy[sky, None] * 30.0 / max(horizon, 1)).astype(np.float32)
    ground = ~sky
    c.paint(ground, np.array([85, 80, 90], np.float32), ROAD, ROAD, rng, 6.0)
    # Sidewalks: wedges on both sides widening toward the camera.
    t = np.clip((c.yy - horizon) / max(h - horizon, 1), 0, 1)
    left_edge = w * (0.42 - 0.40 * t)
    right_edge = w * (0.58 + 0.40 * t)
    side = ground & ((c.xx < left_edge) | (c.xx > right_edge))
    c.paint(side, np.array([175, 165, 150], np.float32), SIDEWALK, SIDEWALK, rng, 10.0)
    tiles = side & (((c.xx // 4) + (c.yy // 4)) % 2 == 0)
    c.rgb[tiles] -= 15
    # Buildings along the horizon, with window grids.
    x = 0.0
    while x < w:
        bw = rng.uniform(0.08, 0.25) * w
        top = horizon - rng.uniform(0.1, 0.35) * h
        m = _rect(c, top, x, horizon, x + bw)
        c.paint(m, np.array(rng.uniform(90, 160, 3), np.float32), BUILDING, BUILDING, rng, 8.0)
        windows = m & ((c.yy.astype(int) % 6) < 3) & ((c.xx.astype(int) % 7) < 3)
        c.rgb[windows] *= 0.55
        x += bw
    # Vegetation blobs in front of buildings.
    for _ in range(rng.integers(1, 4)):
        cy, cx = horizon - rng.uniform(0.0, 0.15) * h, rng.uniform(0, w)
        m = _ellipse(c, cy, cx, rng.uniform(0.05, 0.15) * h, rng.uniform(0.04, 0.12) * w)
        c.paint(m & (c.yy < horizon + 2), np.array([60, 120, 45], np.float32), VEGETATION, VEGETATION, rng, 18.0)
    # Void clutter ("static"), ignored in evaluation.
    if rng.random() < 0.5:
        y1 = rng.uniform(horizon + 4, h)
        x0 = rng.uniform(0, w - 8)
        s = (y1 - horizon) / max(h - horizon, 1)
        c.paint(_rect(c, y1 - 20 * s - 2, x0, y1, x0 + 6 * s + 2), np.array([120, 100, 60], np.float32), STATIC, STATIC, rng)


def _draw_vehicle(c: Canvas, kind: int, yb: float, xc: float, s: float, inst: int, rng) -> None:
    """Car, truck or bus: same paint, windows and wheels; only size and shape differ."""
    base = {CAR: (26, 12), TRUCK: (30, 26), BUS: (52, 26)}[kind]
    bw, bh = base[0] * s * rng.uniform(0.9, 1.1), base[1] * s * rng.uniform(0.9, 1.1)
    paint = VEHICLE_PAINT[rng.integers(len(VEHICLE_PAINT))]
    body = _rect(c, yb - bh, xc - bw / 2, yb - 0.12 * bh, xc + bw / 2)
    if kind == CAR:  # cabin narrower than the body
        body |= _rect(c, yb - 1.5 * bh, xc - bw / 3, yb - bh, xc + bw / 4)
    if kind == TRUCK:  # cab lower than the cargo box, in front
        body = _rect(c, yb - bh, xc - bw / 2, yb - 0.12 * bh, xc + bw / 6) | _rect(
            c, yb - 0.6 * bh, xc + bw / 6, yb - 0.12 * bh, xc + bw / 2
        )
    wheels = _ellipse(c, yb - 0.12 * bh, xc - bw / 3, 0.12 * bh + 0.6, 0.08 * bw + 0.6) | _ellipse(
        c, yb - 0.12 * bh, xc + bw / 3, 0.12 * bh + 0.6, 0.08 * bw + 0.6
    )
    label_inst = kind * 1000 + inst
    c.paint(body, paint, kind, label_inst, rng)
    top = body.any(axis=1).nonzero()[0]
    if len(top):
        band = body & (c.yy < top[0] + max(1.0, 0.3 * (yb - top[0])))
        c.rgb[band] = np.array([50, 60, 80], np.float32) + rng.normal(0, 5, (int(band.sum()), 3)).astype(np.float32)
    c.paint(wheels, np.array([25, 25, 25], np.float32), kind, label_inst, rng, 4.0)


def _draw_person(c: Canvas, yb: float, xc: float, s: float, label: int, instance: int, rng) -> None:
    """A person (or the person part of a rider): head, clothed torso and legs."""
    ph = 22 * s * rng.uniform(0.85, 1.15)
    cloth = CLOTHING[rng.integers(len(CLOTHING))]
    torso = _ellipse(c, yb - 0.55 * ph, xc, 0.25 * ph, 0.13 * ph)
    legs = _rect(c, yb - 0.35 * ph, xc - 0.09 * ph, yb, xc + 0.09 * ph)
    head = _ellipse(c, yb - 0.88 * ph, xc, 0.1 * ph + 0.5, 0.08 * ph + 0.5)
    c.paint(torso | legs, cloth, label, instance, rng)
    c.paint(head, SKIN, label, instance, rng, 6.0)


def _draw_bicycle(c: Canvas, yb: float, xc: float, s: float, instance: int, rng) -> None:
    r = 4.5 * s + 0.8
    ring = np.zeros_like(c.label, dtype=bool)
    for dx in (-1.3 * r, 1.3 * r):
        d = np.sqrt((c.yy - (yb - r)) ** 2 + (c.xx - (xc + dx)) ** 2)
        ring |= np.abs(d - r) < max(0.8, 0.25 * r)
    frame = _rect(c, yb - r - max(1, 0.25 * r), xc - 1.3 * r, yb - r + max(1, 0.25 * r), xc + 1.3 * r)
    c.paint(ring | frame, np.array([30, 30, 35], np.float32), BICYCLE, BICYCLE * 1000 + instance, rng, 4.0)


def render_street(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One street scene: (H, W, 3) uint8 image, (H, W) uint8 labelIds, (H, W) uint16 instanceIds."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c = Canvas(
        rgb=np.zeros((height, width, 3), np.float32),
        label=np.zeros((height, width), np.uint8),
        instance=np.zeros((height, width), np.int32),
        yy=yy,
        xx=xx,
    )
    horizon = int(height * rng.uniform(0.38, 0.5))
    _draw_background(c, horizon, rng)
    kinds = [CAR, CAR, CAR, TRUCK, BUS, PERSON, PERSON, RIDER, BICYCLE]
    objects = []
    for _ in range(int(rng.integers(3, 10))):
        yb = rng.uniform(horizon + 3, height + 2)
        objects.append((yb, kinds[rng.integers(len(kinds))], rng.uniform(0.05, 0.95) * width))
    objects.sort(key=lambda o: o[0])  # far to near: nearer objects occlude
    counters: dict[int, int] = {}
    unit = (width / 256.0) * 1.6
    for yb, kind, xc in objects:
        s = unit * (0.15 + (yb - horizon) / max(height - horizon, 1))
        k = counters.get(kind, 0)
        counters[kind] = k + 1
        if kind in (CAR, TRUCK, BUS):
            _draw_vehicle(c, kind, yb, xc, s, k, rng)
        elif kind == PERSON:
            crowd = rng.random() < 0.1
            for j in range(3 if crowd else 1):  # a group annotation: label id only, no instance
                _draw_person(c, yb - j, xc + j * 5 * s, s, PERSON, PERSON if crowd else PERSON * 1000 + k, rng)
        elif kind == RIDER:
            kb = counters.get(BICYCLE, 0)
            counters[BICYCLE] = kb + 1
            _draw_bicycle(c, yb, xc, s, kb, rng)
            _draw_person(c, yb - 5 * s, xc, s * 0.9, RIDER, RIDER * 1000 + k, rng)
        else:
            _draw_bicycle(c, yb, xc, s, k, rng)
    # Photometric nuisances: illumination gradient, blur, noise.
    gain = 1.0 + rng.uniform(-0.25, 0.25) * (xx / width - 0.5)[..., None] + rng.uniform(-0.15, 0.15)
    rgb = c.rgb * gain
    sigma = rng.uniform(0.0, 0.8)
    if sigma > 0.3:
        rgb = gaussian_filter(rgb, sigma=(sigma, sigma, 0))
    rgb = rgb + rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), c.label, c.instance.astype(np.uint16)


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())


def synthesize_street(out: str | os.PathLike, split: str, num: int, size: tuple[int, int], seed: int) -> list[Path]:
    """Write ``num`` street scenes of ``size`` (H, W) for ``split`` in the Cityscapes layout."""
    out = Path(out)
    img_dir = out / "leftImg8bit" / split / CITY
    gt_dir = out / "gtFine" / split / CITY
    written = []
    for k in tqdm(range(num), desc=f"synthesize {split}"):
        rng = np.random.default_rng([seed, _split_code(split), k])
        rgb, label, instance = render_street(size[0], size[1], rng)
        stem = f"{CITY}_{k // 1000:06d}_{k % 1000:06d}"
        write_png(img_dir / f"{stem}_leftImg8bit.png", rgb)
        write_png(gt_dir / f"{stem}_gtFine_labelIds.png", label)
        write_png(gt_dir / f"{stem}_gtFine_instanceIds.png", instance)
        written.append(img_dir / f"{stem}_leftImg8bit.png")
    return written


from segfusion.datasets.synthetic_clothing import synthesize_clothing  # noqa: E402  (VCP layout)

FLAVOURS = {"street": synthesize_street, "clothing": synthesize_clothing}


def synthesize(flavour: str, out: str | os.PathLike, split: str, num: int, size: tuple[int, int], seed: int) -> list[Path]:
    """Write ``num`` scenes of a flavour in its raw native layout."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown synthetic flavour {flavour!r}; available: {sorted(FLAVOURS)}")
    return FLAVOURS[flavour](out, split, num, size, seed)

"""PNG reading and writing with errors that name the file, and the COCO-panoptic id colour code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImageError(ValueError):
    """An image file that cannot be read, or has the wrong size or content."""


def read_image(path: str | os.PathLike, mode: str | None = None) -> np.ndarray:
    """Read an image as a numpy array; ``mode`` e.g. "RGB". Raises BadImageError naming the file."""
    path = Path(path)
    if not path.exists():
        raise BadImageError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            return np.array(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise BadImageError(f"{path}: corrupt or unreadable image ({err})") from None


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write uint8 (H, W) / (H, W, 3) or uint16 (H, W) arrays as PNG (atomically)."""
    from segfusion.io.atomic import atomic_path

    array = np.ascontiguousarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"{path}: write_png needs uint8 or uint16, got {array.dtype}")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) int segment ids -> (H, W, 3) uint8, id = R + 256 G + 256² B (COCO panoptic)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError("panoptic ids must be in [0, 256^3)")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 segment ids."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]

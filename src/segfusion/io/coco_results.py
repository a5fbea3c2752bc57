"""One COCO results entry (the detection-results format of pycocotools' ``loadRes``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def coco_result(image_id: int, category_id: int, mask: np.ndarray, score: float, bbox_xywh: Sequence[float]) -> dict:
    """``{image_id, category_id, segmentation, score, bbox}`` with ``mask`` (H, W) as compressed RLE.

    mask: bool or 0/1 (H, W) image-relative mask; bbox_xywh: x, y, width, height in pixels.
    """
    from pycocotools import mask as mask_utils

    return coco_result_rle(image_id, category_id, mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8)), score, bbox_xywh)


def coco_result_rle(image_id: int, category_id: int, rle: dict, score: float, bbox_xywh: Sequence[float]) -> dict:
    """`coco_result` from the mask's compressed RLE (pycocotools' ``{"size", "counts": bytes}``,
    e.g. from `segfusion.io.rle`), without the full-frame mask."""
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "score": float(score),
        "bbox": [float(v) for v in bbox_xywh],
    }

"""One COCO results entry (the detection-results format of pycocotools' ``loadRes``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def coco_result(image_id: int, category_id: int, mask: np.ndarray, score: float, bbox_xywh: Sequence[float]) -> dict:
    """``{image_id, category_id, segmentation, score, bbox}`` with ``mask`` (H, W) as compressed RLE.

    mask: bool or 0/1 (H, W) image-relative mask; bbox_xywh: x, y, width, height in pixels.
    """
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "score": float(score),
        "bbox": [float(v) for v in bbox_xywh],
    }

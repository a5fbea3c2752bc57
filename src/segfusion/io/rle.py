"""COCO RLE without full-frame masks: from a crop and its offset, or for many segments in one
pass over a segment-id map.

A COCO RLE is the column-major (Fortran-order) run lengths of the full H × W frame, starting
with a (possibly empty) run of zeros; pycocotools' ``mask.encode`` never ends with an empty
run, and an empty frame is ``[0]``. Here the run lengths are computed from the boundaries of
the runs of ones (crop runs shifted by the offset, or the runs of each id in the map), and
pycocotools compresses them (``frPyObjects`` on the uncompressed RLE, the same ``rleToString``
as ``encode``), so the bytes are ``mask.encode``'s: pycocotools stays the reference.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _counts(starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray:
    """Run lengths of a frame of ``total`` pixels whose ones are [starts[i], ends[i]) (sorted,
    disjoint, non-abutting), as pycocotools' ``rleEncode`` writes them."""
    if total == 0:
        return np.zeros(1, np.int64)
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0] = 0
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = ends
    bounds[-1] = total
    counts = np.diff(bounds)
    if len(starts) and ends[-1] == total:
        counts = counts[:-1]  # encode ends on the last run of ones, not on an empty run of zeros
    return counts


def crop_rle_counts(crop: np.ndarray, offset: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Uncompressed COCO RLE counts of the full-frame mask that is ``crop`` (bool or 0/1, (h, w))
    at ``offset`` (y0, x0) inside an ``image_size`` (H, W) frame, zero elsewhere. The crop must
    lie inside the frame."""
    height, width = (int(v) for v in image_size)
    y0, x0 = (int(v) for v in offset)
    m = np.asarray(crop) != 0
    ch, cw = m.shape
    if m.size and (y0 < 0 or x0 < 0 or y0 + ch > height or x0 + cw > width):
        raise ValueError(f"crop {m.shape} at {(y0, x0)} is outside the {height}x{width} frame")
    if not m.any():
        return _counts(np.zeros(0, np.int64), np.zeros(0, np.int64), height * width)
    pad = np.zeros((cw, ch + 2), np.int8)  # one crop column per row, padded with zeros above and below
    pad[:, 1:-1] = m.T
    d = np.diff(pad, axis=1)
    cs, rs = np.nonzero(d == 1)  # row-major over (column, row): Fortran order of the frame
    ce, re = np.nonzero(d == -1)
    starts = (x0 + cs.astype(np.int64)) * height + y0 + rs
    ends = (x0 + ce.astype(np.int64)) * height + y0 + re
    # a run reaching the bottom row continues in the next column when that one starts at row 0
    joined = ends[:-1] == starts[1:]
    if joined.any():
        starts = starts[np.concatenate(([True], ~joined))]
        ends = ends[np.concatenate((~joined, [True]))]
    return _counts(starts, ends, height * width)


def segment_rle_counts(segment_ids: np.ndarray, ids: Iterable[int]) -> dict[int, np.ndarray]:
    """Uncompressed COCO RLE counts of ``segment_ids == i`` for every ``i`` of ``ids``, in one
    pass over the (H, W) map in Fortran order (an id absent from the map gets the empty mask)."""
    seg = np.asarray(segment_ids)
    height, width = seg.shape
    total = height * width
    ids = [int(i) for i in ids]
    out: dict[int, np.ndarray] = {}
    if total and ids:
        flat = seg.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        run_start = np.concatenate(([0], change)).astype(np.int64)
        run_end = np.concatenate((change, [total])).astype(np.int64)
        run_id = flat[run_start].astype(np.int64)
        keep = np.isin(run_id, np.asarray(ids, np.int64))
        run_id, run_start, run_end = run_id[keep], run_start[keep], run_end[keep]
        order = np.argsort(run_id, kind="stable")  # runs of one id stay in frame order
        run_id, run_start, run_end = run_id[order], run_start[order], run_end[order]
        uniq, first = np.unique(run_id, return_index=True)
        last = np.append(first[1:], len(run_id))
        for i, a, b in zip(uniq.tolist(), first.tolist(), last.tolist()):
            # maximal runs of one value never abut, so no joining is needed
            out[i] = _counts(run_start[a:b], run_end[a:b], total)
    empty = _counts(np.zeros(0, np.int64), np.zeros(0, np.int64), total)
    return {i: out.get(i, empty) for i in ids}


def compress(counts: Sequence[np.ndarray], image_size: tuple[int, int]) -> list[dict]:
    """pycocotools compressed RLEs (``{"size": [H, W], "counts": bytes}``, as ``mask.encode``
    returns them) of uncompressed ``counts``."""
    if not len(counts):
        return []
    from pycocotools import mask as mask_utils

    height, width = (int(v) for v in image_size)
    return mask_utils.frPyObjects([{"size": [height, width], "counts": c} for c in counts], height, width)


def crop_rle(crop: np.ndarray, offset: tuple[int, int], image_size: tuple[int, int]) -> dict:
    """``mask.encode`` of the full-frame mask that is ``crop`` at ``offset`` (see `crop_rle_counts`)."""
    return compress([crop_rle_counts(crop, offset, image_size)], image_size)[0]


def segment_rles(segment_ids: np.ndarray, ids: Sequence[int]) -> dict[int, dict]:
    """``mask.encode(segment_ids == i)`` for every ``i`` of ``ids`` (see `segment_rle_counts`)."""
    counts = segment_rle_counts(segment_ids, ids)
    keys = list(counts)
    return dict(zip(keys, compress([counts[k] for k in keys], np.shape(segment_ids))))

"""Shards of a split: contiguous blocks of images sorted by image id (DESIGN.md paths). No torch."""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

R = TypeVar("R")


def shard_records(records: Sequence[R], index: int, count: int) -> list[R]:
    """Shard ``index`` (0-based) of ``count``: contiguous blocks of the records sorted by ``image_id``.

    Block sizes differ by at most one; with count > len(records) some shards are empty.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    ordered = sorted(records, key=lambda r: r.image_id)
    bounds = np.linspace(0, len(ordered), count + 1).round().astype(int)
    return ordered[bounds[index] : bounds[index + 1]]

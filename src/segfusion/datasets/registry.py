"""Converter registry: format name -> (find samples, load one sample, class list)."""

from __future__ import annotations

import os

from segfusion.datasets.canonical import convert_split


def convert(fmt: str, raw: str | os.PathLike, split: str, out: str | os.PathLike, workers: int = 1, skip_bad: bool = False, options: dict | None = None) -> list[dict]:
    """Convert one split of a raw dataset in format ``fmt`` into the canonical split ``out``."""
    options = dict(options or {})
    if fmt == "cityscapes":
        from segfusion.datasets import cityscapes

        if options:
            raise ValueError(f"cityscapes converter takes no options, got {sorted(options)}")
        samples = cityscapes.find_samples(raw, split)
        return convert_split(samples, cityscapes.load_sample, cityscapes.cityscapes_classes(), out, workers, skip_bad)
    raise ValueError(f"unknown or not yet available dataset format {fmt!r}")

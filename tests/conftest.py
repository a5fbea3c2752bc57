"""Shared fixtures: small synthetic data written once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def street_raw(tmp_path_factory):
    """Raw Cityscapes-layout synthetic street scenes: 6 train, 3 val, 64x128."""
    from segfusion.datasets.synthetic import synthesize_street

    raw = tmp_path_factory.mktemp("raw_street")
    synthesize_street(raw, "train", 6, (64, 128), seed=3)
    synthesize_street(raw, "val", 3, (64, 128), seed=3)
    return raw


@pytest.fixture(scope="session")
def street_canonical(street_raw, tmp_path_factory):
    """The canonical train split of ``street_raw``."""
    from segfusion.datasets.registry import convert

    out = tmp_path_factory.mktemp("canonical") / "train"
    convert("cityscapes", street_raw, "train", out)
    return out

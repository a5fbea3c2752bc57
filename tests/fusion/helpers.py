"""Builders and invariant checks shared by the fusion tests."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from segfusion.types import ClassInfo, Instances, Panoptic, SemanticPrediction

# stuff: road, sidewalk (both "flat"), sky; things: car, truck ("vehicle"), person ("human")
NAMES = ("road", "sidewalk", "sky", "car", "truck", "person")
ROAD, SIDEWALK, SKY, CAR, TRUCK, PERSON = range(6)


def street_classes() -> ClassInfo:
    return ClassInfo(
        names=NAMES,
        is_thing=(False, False, False, True, True, True),
        category=("flat", "flat", "sky", "vehicle", "vehicle", "human"),
        ids=(7, 8, 23, 26, 27, 24),
        colors=tuple((40 * i, 0, 0) for i in range(6)),
    )


def grid(picture: str) -> np.ndarray:
    """A character grid from a multi-line picture (blank lines and indentation ignored)."""
    rows = [line.strip() for line in picture.strip().splitlines() if line.strip()]
    assert len({len(r) for r in rows}) == 1, "ragged picture"
    return np.array([list(r) for r in rows])


def semantic_from(
    picture: str, legend: dict[str, dict[int, float]], num_classes: int = 6
) -> SemanticPrediction:
    """Full-resolution probabilities: each character's pixels get ``legend[char]``
    ({class: prob}); the rest of the mass is spread evenly over the other classes."""
    g = grid(picture)
    prob = np.zeros((num_classes, *g.shape), np.float32)
    for ch, dist in legend.items():
        rest = (1.0 - sum(dist.values())) / max(num_classes - len(dist), 1)
        vec = np.full(num_classes, rest, np.float32)
        for c, p in dist.items():
            vec[c] = p
        prob[:, g == ch] = vec[:, None]
    assert set(np.unique(g)) <= set(legend), "picture uses characters missing from the legend"
    return SemanticPrediction(prob, g.shape)


def masks_from(pictures: list[str], probs: list[dict[str, float]] | None = None) -> np.ndarray:
    """(N, H, W) image-relative mask probabilities; default: '#' = 1.0, anything else 0."""
    out = []
    for k, pic in enumerate(pictures):
        g = grid(pic)
        legend = {"#": 1.0} if probs is None else probs[k]
        out.append(np.vectorize(lambda ch, legend=legend: legend.get(ch, 0.0))(g).astype(np.float32))
    return np.stack(out)


def instances_from(masks: np.ndarray, labels: list[int], scores: list[float]) -> Instances:
    n = len(labels)
    return Instances(
        boxes=np.zeros((n, 4), np.float32),
        scores=np.array(scores, np.float32),
        labels=np.array(labels),
        image_size=masks.shape[1:],
        mask_image=masks,
    )


def class_map(pan: Panoptic) -> np.ndarray:
    """(H, W) class index, 255 = void, as a compact array for assertions."""
    return pan.semantic.astype(np.int64)


def check_invariants(pan: Panoptic, classes: ClassInfo, image_size: tuple[int, int]) -> None:
    """Every pixel is one segment or void; ids 1..K unique; flags match the classes."""
    assert pan.segment_ids.shape == tuple(image_size)
    ids = [s.id for s in pan.segments]
    assert ids == list(range(1, len(ids) + 1))
    present = set(np.unique(pan.segment_ids).tolist()) - {0}
    assert present == set(ids)
    assert sum(s.area for s in pan.segments) == int((pan.segment_ids > 0).sum())
    for s in pan.segments:
        assert s.area == int((pan.segment_ids == s.id).sum())
        assert s.is_thing == classes.is_thing[s.class_index]
        assert not s.iscrowd
        if not s.is_thing:
            assert s.score == 1.0


def same_panoptic(a: Panoptic, b: Panoptic) -> bool:
    if not np.array_equal(a.segment_ids, b.segment_ids):
        return False
    key = [(s.id, s.class_index, s.is_thing, s.iscrowd, s.area, s.bbox) for s in a.segments]
    other = [(s.id, s.class_index, s.is_thing, s.iscrowd, s.area, s.bbox) for s in b.segments]
    scores = np.array([s.score for s in a.segments]), np.array([s.score for s in b.segments])
    return key == other and np.allclose(*scores, rtol=1e-6, atol=1e-7)


@lru_cache(maxsize=1)
def bench_module():
    """benchmarks/bench_fusion.py, whose plain reference implementations the tests reuse."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_fusion.py"
    spec = importlib.util.spec_from_file_location("_bench_fusion", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

import csv

import numpy as np
from PIL import Image

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.datasets.stats import overlay, write_dataset_stats


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_write_dataset_stats(street_canonical, tmp_path):
    paths = write_dataset_stats(street_canonical, tmp_path / "stats", max_overlays=4)
    assert set(p.name for p in (tmp_path / "stats").iterdir()) == {"class_stats.csv", "instance_sizes.csv", "instance_sizes.png", "overlays.png"}
    split = CanonicalSplit(street_canonical)
    classes = split.classes
    rows = _rows(paths["class_stats"])
    assert [r["name"] for r in rows] == list(classes.names)
    # pixel counts equal a direct count over the semantic maps
    sem = np.concatenate([split.semantic(r).ravel() for r in split.images])
    counts = np.bincount(sem, minlength=256)
    assert [int(r["pixels"]) for r in rows] == counts[: classes.num_classes].tolist()
    assert abs(sum(float(r["pixel_fraction"]) for r in rows) - 1.0) < 1e-4
    # instance counts equal the non-crowd thing segments
    pans = [split.panoptic(r) for r in split.images]
    car = classes.names.index("car")
    n_car = sum(1 for p in pans for s in p.segments if s.class_index == car and not s.iscrowd)
    assert int(rows[car]["instances"]) == n_car and n_car > 0
    assert rows[classes.names.index("road")]["instances"] == "0"
    sizes = _rows(paths["instance_sizes"])
    assert len(sizes) == sum(1 for p in pans for s in p.segments if s.is_thing)
    assert all(int(r["area"]) > 0 and r["name"] in classes.names for r in sizes)
    for key in ("instance_sizes_plot", "overlays"):
        img = np.array(Image.open(paths[key]))
        assert img.ndim == 3 and img.shape[0] > 100 and img.std() > 0
    assert not list((tmp_path / "stats").glob(".*tmp*"))  # no temporary left behind


def test_overlay_blends_class_colours_and_marks_borders():
    image = np.full((4, 6, 3), 100, np.uint8)
    ids = np.zeros((4, 6), np.int32)
    ids[:, 3:] = 2
    sem = np.full((4, 6), 255, np.uint8)
    sem[:, 3:] = 1
    colors = np.array([[0, 0, 0], [200, 0, 0]], np.float32)
    out = overlay(image, ids, sem, colors, alpha=0.5)
    assert (out[:, 0] == 100).all()  # void untouched
    assert tuple(out[0, 5]) == (150, 50, 50)
    assert out[0, 3, 0] < 150  # border darkened

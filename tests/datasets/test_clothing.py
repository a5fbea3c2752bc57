import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.datasets.registry import convert
from segfusion.datasets.synthetic import FLAVOURS, synthesize
from segfusion.datasets.synthetic_clothing import CLASSES, COAT, PANTS, SHIRT, render_clothing
from segfusion.datasets.validate import validate_split


@pytest.fixture(scope="module")
def clothing_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw_clothing")
    synthesize("clothing", raw, "train", 6, (64, 96), seed=2)
    return raw


def test_registered_and_writes_vcp_layout(clothing_raw):
    assert "clothing" in FLAVOURS
    names = [e["name"] for e in json.loads((clothing_raw / "classes.json").read_text())]
    assert names == list(CLASSES)
    images = sorted((clothing_raw / "images" / "train").glob("*.png"))
    labels = sorted((clothing_raw / "labels" / "train").glob("*.png"))
    assert [p.name for p in images] == [p.name for p in labels] == [f"clothing_{k:06d}.png" for k in range(6)]
    lab = np.array(Image.open(labels[0]))
    img = np.array(Image.open(images[0]))
    assert lab.shape == (64, 96) and img.shape == (64, 96, 3) and lab.max() < len(CLASSES)


def test_deterministic_per_image(tmp_path):
    a = render_clothing(48, 64, np.random.default_rng([7, 1, 3]))
    b = render_clothing(48, 64, np.random.default_rng([7, 1, 3]))
    c = render_clothing(48, 64, np.random.default_rng([7, 1, 4]))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    # image k does not depend on how many images are written
    synthesize("clothing", tmp_path / "x", "val", 1, (48, 64), seed=1)
    synthesize("clothing", tmp_path / "y", "val", 3, (48, 64), seed=1)
    f = "labels/val/clothing_000000.png"
    assert np.array_equal(np.array(Image.open(tmp_path / "x" / f)), np.array(Image.open(tmp_path / "y" / f)))


def test_open_coats_split_shirts_into_several_segments():
    split_shirts, coats = 0, 0
    for k in range(20):
        _, lab = render_clothing(96, 128, np.random.default_rng([0, 0, k]))
        n_shirt = ndimage.label(lab == SHIRT, np.ones((3, 3)))[1]
        if (lab == COAT).any():
            coats += 1
            split_shirts += n_shirt >= 2
    assert coats >= 5 and split_shirts >= 3


def test_subcategories_share_category_and_local_statistics(clothing_raw):
    out = clothing_raw.parent / "clothing_canonical"
    convert("vcp", clothing_raw, "train", out)
    assert validate_split(out) == []
    classes = CanonicalSplit(out).classes
    cat = dict(zip(classes.names, classes.category))
    assert cat["shirt"] == cat["dress"] == cat["coat"] == "upper-body" and cat["pants"] == cat["skirt"] == "lower-body"
    assert classes.is_thing == tuple(n not in ("background", "skin", "hair") for n in CLASSES)
    # Colour statistics are those of the category: shirts and coats (same category) have close
    # mean colours, shirts and pants (different categories) do not.
    means = {SHIRT: [], COAT: [], PANTS: []}
    for k in range(30):
        img, lab = render_clothing(64, 96, np.random.default_rng([5, 5, k]))
        for c in means:
            if (lab == c).sum() > 30:
                means[c].append(img[lab == c].mean(axis=0))
    m = {c: np.array(v) for c, v in means.items()}
    assert all(len(v) >= 5 for v in m.values())
    same = np.linalg.norm(m[SHIRT].mean(0) - m[COAT].mean(0))
    other = np.linalg.norm(m[SHIRT].mean(0) - m[PANTS].mean(0))
    assert same < 0.5 * other and same < 0.75 * m[SHIRT].std(0).mean()

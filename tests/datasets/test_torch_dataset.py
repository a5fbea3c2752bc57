import numpy as np
import pytest
import torch

from segfusion.datasets.canonical import CanonicalSplit
from segfusion.datasets.torch_dataset import Augmentation, PanopticTrainingData, draw_params


@pytest.fixture(scope="module")
def split(street_canonical):
    return CanonicalSplit(street_canonical)


def _seed_where(aug, hw, cond):
    for seed in range(200):
        if cond(draw_params(aug, hw, np.random.default_rng(seed))):
            return seed
    raise AssertionError("no seed satisfies the condition")


def _check_targets(img, t, data):
    """Masks non-empty, boxes tight around them, mask pixels carry the label's class in the semantic map."""
    h, w = img.shape[1:]
    assert t["semantic"].shape == (h, w) and t["masks"].shape[1:] == (h, w)
    thing_of_label = {int(lab): k for k, lab in enumerate(data.class_to_label) if lab > 0}
    for m, b, lab in zip(t["masks"].numpy().astype(bool), t["boxes"].numpy(), t["labels"].numpy()):
        ys, xs = np.nonzero(m)
        assert len(ys) and tuple(b) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert (t["semantic"].numpy()[m] == thing_of_label[int(lab)]).all()


def _busiest(split):
    return max(range(len(split)), key=lambda i: sum(s.is_thing and not s.iscrowd for s in split.panoptic(split.images[i]).segments))


def test_no_rng_is_identity(split):
    data = PanopticTrainingData(split, Augmentation(hflip=True, color_jitter=0.4, crop_size=(16, 16)))
    i = _busiest(split)
    img, t = data.sample(i)
    rec = split.images[i]
    assert torch.allclose(img, torch.from_numpy(split.image(rec)).permute(2, 0, 1).float() / 255)
    assert np.array_equal(t["semantic"].numpy(), split.semantic(rec))
    pan = split.panoptic(rec)
    assert len(t["masks"]) == sum(s.is_thing and not s.iscrowd for s in pan.segments) > 0
    _check_targets(img, t, data)


def test_flip_keeps_targets_consistent(split):
    aug = Augmentation(hflip=True)
    data = PanopticTrainingData(split, aug)
    i = _busiest(split)
    base_img, base = data.sample(i)
    w = base_img.shape[2]
    seed = _seed_where(aug, base_img.shape[1:], lambda p: p.flip)
    img, t = data.sample(i, np.random.default_rng(seed))
    assert torch.equal(img, base_img.flip(-1))
    assert torch.equal(t["semantic"], base["semantic"].flip(-1))
    assert torch.equal(t["masks"], base["masks"].flip(-1)) and torch.equal(t["labels"], base["labels"])
    b = base["boxes"]
    assert torch.equal(t["boxes"], torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1))
    _check_targets(img, t, data)
    noflip = _seed_where(aug, base_img.shape[1:], lambda p: not p.flip)
    img2, t2 = data.sample(i, np.random.default_rng(noflip))
    assert torch.equal(img2, base_img) and torch.equal(t2["boxes"], base["boxes"])


def test_crop_keeps_targets_consistent(split):
    aug = Augmentation(hflip=True, crop_size=(32, 48))
    data = PanopticTrainingData(split, aug)
    i = _busiest(split)
    base_img, base = data.sample(i)
    hw = tuple(base_img.shape[1:])
    seed = _seed_where(aug, hw, lambda p: p.flip and p.crop[1] > 0 and p.crop[0] > 0)
    p = draw_params(aug, hw, np.random.default_rng(seed))
    y0, x0, ch, cw = p.crop
    img, t = data.sample(i, np.random.default_rng(seed))
    assert img.shape == (3, 32, 48)
    assert torch.equal(img, base_img[:, y0 : y0 + ch, x0 : x0 + cw].flip(-1))
    assert torch.equal(t["semantic"], base["semantic"][y0 : y0 + ch, x0 : x0 + cw].flip(-1))
    cropped = base["masks"][:, y0 : y0 + ch, x0 : x0 + cw].flip(-1)
    visible = cropped.flatten(1).bool().any(1)
    assert torch.equal(t["masks"], cropped[visible]) and torch.equal(t["labels"], base["labels"][visible])
    _check_targets(img, t, data)
    # a crop larger than the image keeps the image whole
    big = PanopticTrainingData(split, Augmentation(hflip=False, crop_size=(1000, 1000)))
    img_b, _ = big.sample(i, np.random.default_rng(0))
    assert torch.equal(img_b, base_img)


def test_colour_jitter_changes_only_the_image_and_is_deterministic(split):
    aug = Augmentation(hflip=False, color_jitter=0.4, hue_jitter=0.4)
    data = PanopticTrainingData(split, aug)
    base_img, base = data.sample(0)
    img, t = data.sample(0, np.random.default_rng(3))
    p = draw_params(aug, tuple(base_img.shape[1:]), np.random.default_rng(3))
    assert all(0.6 <= f <= 1.4 for f in (p.brightness, p.contrast, p.saturation)) and -0.4 <= p.hue <= 0.4
    assert not torch.allclose(img, base_img) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert all(torch.equal(t[k], base[k]) for k in base)
    again, t_again = data.sample(0, np.random.default_rng(3))
    assert torch.equal(img, again) and all(torch.equal(t[k], t_again[k]) for k in t)
    other, _ = data.sample(0, np.random.default_rng(4))
    assert not torch.equal(img, other)
    factors = np.array([[q.brightness, q.contrast, q.saturation] for q in (draw_params(aug, (8, 8), np.random.default_rng(s)) for s in range(300))])
    assert factors.min() < 0.65 and factors.max() > 1.35  # the full ±40 % range is used


def test_invalid_settings_fail():
    with pytest.raises(ValueError, match="color_jitter"):
        Augmentation(color_jitter=1.5)
    with pytest.raises(ValueError, match="hue_jitter"):
        Augmentation(hue_jitter=0.6)
    with pytest.raises(ValueError, match="crop_size"):
        Augmentation(crop_size=(0, 4))
    imp = Augmentation.imp_cityscapes()
    assert imp.color_jitter == 0.4 and imp.hue_jitter == 0.4 and imp.crop_size == (512, 1024)

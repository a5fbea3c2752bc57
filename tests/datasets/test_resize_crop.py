"""`resize_crop_sample`: the crop's window of a resized sample, computed without resizing the rest.

References: PyTorch itself (``torch.nn.functional.interpolate``, bilinear, align_corners=False,
for the image; "nearest" for the label maps) over the whole image, then the window cut out.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.torch_dataset import _bilinear_taps, resize_crop_sample  # noqa: E402


def torch_resize_then_crop(size, crop, image, label):
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    img = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    lab = torch.from_numpy(label.astype(np.float32))[None, None]
    lab = torch.nn.functional.interpolate(lab, size=size, mode="nearest")[0, 0].numpy().astype(label.dtype)
    y0, x0, h, w = crop
    return img[y0 : y0 + h, x0 : x0 + w], lab[y0 : y0 + h, x0 : x0 + w]


def random_case(rng):
    in_h, in_w = (int(v) for v in rng.integers(8, 160, 2))
    out_h, out_w = (int(v) for v in rng.integers(4, 320, 2))
    h, w = int(rng.integers(1, out_h + 1)), int(rng.integers(1, out_w + 1))
    crop = (int(rng.integers(0, out_h - h + 1)), int(rng.integers(0, out_w - w + 1)), h, w)
    image = rng.integers(0, 256, (in_h, in_w, 3), dtype=np.uint8)
    label = rng.integers(0, 200, (in_h, in_w)).astype(np.int32)
    return (out_h, out_w), crop, image, label


def test_window_equals_pytorch_resize_then_crop():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for _ in range(40):
        size, crop, image, label = random_case(rng)
        got_img, got_lab, got_sem = resize_crop_sample(size, crop, image, label, label.astype(np.uint8))
        ref_img, ref_lab = torch_resize_then_crop(size, crop, image, label)
        assert got_img.dtype == np.float32 and got_img.shape == (crop[2], crop[3], 3)
        np.testing.assert_array_equal(got_lab, ref_lab)  # label maps: exactly the window
        np.testing.assert_array_equal(got_sem, ref_lab.astype(np.uint8))
        # The image: the same interpolation; float32 rounding of the sums may differ in the last
        # bits (PyTorch's own result differs by as much between 1 and 2 threads: another kernel).
        np.testing.assert_allclose(got_img, ref_img, rtol=0, atol=1e-4)


def test_taps_and_weights_are_pytorchs_exactly():
    """Impulse responses of PyTorch's resize are its weights (x * 1 + 0 is exact whatever the kernel)."""
    torch.set_num_threads(1)
    for in_size, out_size in ((7, 17), (121, 391), (391, 121), (2048, 2896), (1024, 512), (5, 5), (3, 1)):
        i0, i1, w0, w1 = _bilinear_taps(in_size, out_size, 0, out_size)
        ours = np.zeros((out_size, in_size), np.float32)
        np.add.at(ours, (np.arange(out_size), i0), w0)
        np.add.at(ours, (np.arange(out_size), i1), w1)
        impulses = torch.eye(in_size)[:, None, None, :]  # one row image per source index
        theirs = torch.nn.functional.interpolate(impulses, size=(1, out_size), mode="bilinear", align_corners=False)[:, 0, 0, :].numpy().T
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{in_size} -> {out_size}")
        # a window's taps are the same rows of the full taps
        sub = _bilinear_taps(in_size, out_size, out_size // 3, out_size - out_size // 3)
        for full, part in zip((i0, i1, w0, w1), sub):
            np.testing.assert_array_equal(full[out_size // 3 :], part)


def test_same_size_is_an_exact_copy_of_the_window():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    label = rng.integers(0, 9, (40, 60)).astype(np.int32)
    img, lab = resize_crop_sample((40, 60), (5, 7, 20, 30), image, label)
    np.testing.assert_array_equal(img, image[5:25, 7:37].astype(np.float32))
    np.testing.assert_array_equal(lab, label[5:25, 7:37])
    img, lab = resize_crop_sample((80, 120), None, image, label)  # no crop: the whole resized sample
    np.testing.assert_array_equal(lab, np.repeat(np.repeat(label, 2, 0), 2, 1))
    ref_img, ref_lab = torch_resize_then_crop((80, 120), (0, 0, 80, 120), image, label)
    np.testing.assert_array_equal(img, ref_img)  # a large window is PyTorch's resize, bit for bit
    np.testing.assert_array_equal(lab, ref_lab)
    img, _ = resize_crop_sample((80, 120), (10, 20, 40, 60), image, label)  # 40 x 60 = 1/4: computed
    ref_img, _ = torch_resize_then_crop((80, 120), (10, 20, 40, 60), image, label)
    np.testing.assert_allclose(img, ref_img, rtol=0, atol=1e-4)
    img, _ = resize_crop_sample((80, 120), (10, 20, 60, 60), image, label)  # 60 x 60 = 3/8: cut from PyTorch's
    ref_img, _ = torch_resize_then_crop((80, 120), (10, 20, 60, 60), image, label)
    np.testing.assert_array_equal(img, ref_img)


def test_cityscapes_scales_match_pytorch():
    """cityscapes_imp's training input: a 1024 x 2048 image at short sides 1448 and 2048, 512 x 1024 crops."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8)
    label = rng.integers(0, 34, (1024, 2048)).astype(np.int32)
    for size, crop in (((1448, 2896), (531, 1203, 512, 1024)), ((2048, 4096), (1536, 3072, 512, 1024)), ((2048, 4096), (0, 0, 512, 1024))):
        got_img, got_lab = resize_crop_sample(size, crop, image, label)
        ref_img, ref_lab = torch_resize_then_crop(size, crop, image, label)
        np.testing.assert_array_equal(got_lab, ref_lab)
        np.testing.assert_allclose(got_img, ref_img, rtol=0, atol=1e-4)

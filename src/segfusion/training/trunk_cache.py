"""The frozen-trunk cache of stage 2: the frozen part's outputs computed once per (image, flip).

When stage 2 keeps backbone, RPN and RoI heads frozen and every augmentation is a pure function
of the image and the flip (`TrainSpec.frozen_trunk_blockers`), the FPN features and the
detections that feed the IMP canvas are a pure function of (image index, flip). Each is then
computed once (`PanopticModel.trunk`, one image at a time) and kept; a stage-2 step runs only
the semantic head. ``recompute`` mode computes the very same per-image trunk every step and
keeps nothing, so the two modes give bit-identical losses and weights (tested).

Storage: one preallocated array per field with one row per (image, flip), (K, ...) float32:
the head's FPN levels (K, C, h_l, w_l) and, for IMP, up to D detections (boxes (K, D, 4),
scores (K, D), labels (K, D), masks (K, D, 1, 28, 28), counts (K,)). It lives in memory when
it fits ``trunk_cache_mb``, else in memory-mapped files under ``run_dir/trunk_cache/``.
Nothing of it is trusted across processes: a resumed run starts an empty cache and refills
it (the values are a pure function of the frozen weights, so the weights stay bit-identical).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from segfusion.models.heads import LEVELS
from segfusion.models.panoptic import Trunk

DETECTION_FIELDS = {"boxes": ((4,), np.float32), "scores": ((), np.float32), "labels": ((), np.int64), "masks": ((1, 28, 28), np.float32)}


class TrunkCache:
    """Trunk outputs by (image index, flip); ``store=False`` recomputes them every time.

    model: a `PanopticModel` whose trunk is frozen; num_images: the training split's size;
    flips: 2 with random horizontal flips, else 1; max_detections: the detector's
    ``detections_per_img`` (the most a trunk can hold).
    """

    def __init__(self, model, num_images: int, flips: int, max_detections: int, memory_mb: int, run_dir: Path, store: bool = True):
        self.model = model
        self.rows = num_images * flips
        self.flips = flips
        self.max_detections = max_detections
        self.memory_bytes = memory_mb * 2**20
        self.directory = Path(run_dir) / "trunk_cache"
        self.store = store
        self.arrays: dict[str, np.ndarray] | None = None
        self.filled = np.zeros(self.rows, bool)
        self.hits = self.misses = 0
        self.on_disk = False

    def row(self, index: int, flip: bool) -> int:
        return index * self.flips + int(flip)

    def get(self, index: int, flip: bool, image: torch.Tensor) -> Trunk:
        """The trunk of image ``index`` (already flipped when ``flip``), computed on first use."""
        r = self.row(index, flip)
        if self.store and self.filled[r]:
            self.hits += 1
            return self._read(r, image.device)
        self.misses += 1
        trunk = self.model.trunk(image)
        if self.store:
            self._write(r, trunk)
        return trunk

    # -- storage ------------------------------------------------------------------------------
    def _layout(self, trunk: Trunk) -> dict[str, tuple[tuple[int, ...], type]]:
        layout = {f"feature_{k}": (tuple(trunk.features[k].shape), np.float32) for k in LEVELS}
        if trunk.detections is not None:
            layout.update({f"det_{k}": ((self.max_detections, *shape), dtype) for k, (shape, dtype) in DETECTION_FIELDS.items()})
            layout["det_count"] = ((), np.int64)
        return layout

    def _allocate(self, trunk: Trunk) -> None:
        layout = self._layout(trunk)
        total = sum(self.rows * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for shape, dtype in layout.values())
        self.on_disk = total > self.memory_bytes
        if self.on_disk:
            shutil.rmtree(self.directory, ignore_errors=True)  # a killed run's cache is never trusted
            self.directory.mkdir(parents=True)
            self.arrays = {
                name: np.lib.format.open_memmap(self.directory / f"{name}.npy", mode="w+", dtype=dtype, shape=(self.rows, *shape))
                for name, (shape, dtype) in layout.items()
            }
        else:
            self.arrays = {name: np.zeros((self.rows, *shape), dtype) for name, (shape, dtype) in layout.items()}
        self.sizes = (trunk.image_size, trunk.padded_size)
        self.total_bytes = total

    def _write(self, r: int, trunk: Trunk) -> None:
        if self.arrays is None:
            self._allocate(trunk)
        if (trunk.image_size, trunk.padded_size) != self.sizes:
            raise ValueError(f"frozen-trunk cache: image of transformed size {trunk.image_size}, the cache holds {self.sizes[0]}")
        for k in LEVELS:
            self.arrays[f"feature_{k}"][r] = trunk.features[k].cpu().numpy()
        if trunk.detections is not None:
            n = len(trunk.detections["scores"])
            if n > self.max_detections:
                raise ValueError(f"frozen-trunk cache: {n} detections, more than the {self.max_detections} it holds")
            for k in DETECTION_FIELDS:
                self.arrays[f"det_{k}"][r, :n] = trunk.detections[k].cpu().numpy()
            self.arrays["det_count"][r] = n
        self.filled[r] = True

    def _read(self, r: int, device) -> Trunk:
        a = self.arrays
        features = {k: torch.from_numpy(np.asarray(a[f"feature_{k}"][r])).to(device) for k in LEVELS}
        detections = None
        if "det_count" in a:
            n = int(a["det_count"][r])
            detections = {k: torch.from_numpy(np.asarray(a[f"det_{k}"][r, :n])).to(device) for k in DETECTION_FIELDS}
        return Trunk(features, *self.sizes, detections)

    def summary(self) -> str:
        where = f"memory-mapped in {self.directory}" if self.on_disk else "in memory"
        size = f"{getattr(self, 'total_bytes', 0) / 2**20:.0f} MB {where}" if self.store else "not stored (recompute)"
        return f"frozen-trunk cache: {self.rows} (image, flip) rows, {size}; {self.misses} computed, {self.hits} reused"

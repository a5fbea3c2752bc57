"""Two prediction caches read as one: the instances of one, the semantic output of the other.

A pair (config ``pairs``, DESIGN.md "Pairs") is what JSIS (Sec. 4.1) and Seamless (Sec. 5)
call independently trained networks, or an imported detector with an imported semantic
model. `PairedCacheReader` zips an instances cache and a semantic cache image by image and
yields `CachedImage` records like `CacheReader`, so ``segfusion fuse`` fuses a pair exactly as
it fuses one cache. Both caches must hold the same images (names and ids, in the same order),
with the same image sizes and the same class list; any mismatch is a `CacheError` that names
both files.
"""

from __future__ import annotations

import os
from typing import Iterator

from segfusion.inference.cache import CachedImage, CacheError, CacheReader


def _listing(names, limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(map(repr, names[:limit])) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


class PairedCacheReader:
    """Context manager over an instances cache and a semantic cache (see the module docstring).

    ``classes``, ``names``, ``image_ids``, ``len()`` and iteration as in `CacheReader`; each
    image's ``instances`` and ``proposals`` come from the instances cache, ``semantic`` from the
    semantic cache; ``forward_seconds`` is the instances network's; no canvas.
    """

    def __init__(self, instances: str | os.PathLike, semantic: str | os.PathLike):
        self.instances = CacheReader(instances)
        try:
            self.semantic = CacheReader(semantic)
        except BaseException:
            self.instances.close()
            raise
        try:
            self._check()
        except BaseException:
            self.close()
            raise
        self.classes = self.instances.classes
        self.names = list(self.instances.names)
        self.image_ids = list(self.instances.image_ids)

    @property
    def where(self) -> str:
        return f"pair of caches {self.instances.path} (instances) and {self.semantic.path} (semantic)"

    def _check(self) -> None:
        a, b = self.instances, self.semantic
        if a.classes != b.classes:
            raise CacheError(f"{self.where}: different classes: {a.classes.names} vs {b.classes.names}")
        if set(a.names) != set(b.names):
            only_a, only_b = set(a.names) - set(b.names), set(b.names) - set(a.names)
            raise CacheError(
                f"{self.where}: they cover different images: only in {a.path}: [{_listing(only_a)}]; "
                f"only in {b.path}: [{_listing(only_b)}]"
            )
        ids_a, ids_b = dict(zip(a.names, a.image_ids)), dict(zip(b.names, b.image_ids))
        differ = [n for n in a.names if ids_a[n] != ids_b[n]]
        if differ:
            n = differ[0]
            raise CacheError(f"{self.where}: image {n!r} has id {ids_a[n]} in {a.path} but {ids_b[n]} in {b.path}")

    def __len__(self) -> int:
        return len(self.names)

    def read(self, name: str) -> CachedImage:
        det = self.instances.read_detections(name)
        sem = self.semantic.read_semantic(name)
        if det.instances.image_size != sem.image_size:
            raise CacheError(
                f"{self.where}: image {name!r} is {det.instances.image_size[0]}x{det.instances.image_size[1]} in "
                f"{self.instances.path} but {sem.image_size[0]}x{sem.image_size[1]} in {self.semantic.path}"
            )
        if sem.prob.shape[0] != self.classes.num_classes:
            raise CacheError(f"{self.where}: image {name!r}: {sem.prob.shape[0]} semantic channels in {self.semantic.path}, "
                             f"{self.classes.num_classes} classes")  # fmt: skip
        return CachedImage(name, det.image_id, det.instances, sem, det.proposals, det.forward_seconds)

    def __iter__(self) -> Iterator[CachedImage]:
        for name in self.names:
            yield self.read(name)

    def close(self) -> None:
        self.instances.close()
        self.semantic.close()

    def __enter__(self) -> "PairedCacheReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

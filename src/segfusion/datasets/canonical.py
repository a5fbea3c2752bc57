"""The canonical dataset format (DESIGN.md, "Canonical dataset"): one writer, one reader.

Layout of ``{dataset}/data/{split}/``::

    panoptic.json    COCO-panoptic: images, annotations (segments_info), categories (native ids, isthing)
    panoptic/        RGB-encoded id PNGs, id = R + 256 G + 256² B
    semantic/        uint8 PNG, class index, 255 = ignore
    instances.json   COCO instances (RLE) for pycocotools
    classes.json     the ClassInfo
    skipped.csv      images left out by --skip-bad (only when there were any)

Images are referenced, not copied: ``images[].image_path`` is relative to the split folder.

Every converter supplies a list of `RawSample` and a function that loads one into a
`Panoptic`; `convert_split` does the rest (parallel over processes, per-image errors
that name the file, ``skip_bad``, atomic output).
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from segfusion.io.atomic import atomic_dir, read_json, write_json
from segfusion.io.images import BadImageError, id2rgb, read_image, rgb2id, write_png
from segfusion.types import ClassInfo, Panoptic, Segment


class DatasetError(ValueError):
    """A raw or canonical dataset file is missing, corrupt or inconsistent; the message names it."""


@dataclass(frozen=True)
class RawSample:
    """One raw image and the label files that describe it (paths as the converter needs them)."""

    name: str  # unique stem, used for output file names
    image_path: str
    label_paths: tuple[str, ...]


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    name: str
    image_path: Path  # absolute
    height: int
    width: int


Loader = Callable[[RawSample, ClassInfo], Panoptic]


def _convert_one(sample: RawSample, loader: Loader, classes: ClassInfo, out: Path, final_dir: Path) -> dict:
    """Load one sample, check it, write its PNGs into ``out``; return its JSON records (or the error).

    ``final_dir`` is where ``out`` will be renamed to; image paths are made relative to it.
    """
    try:
        image = read_image(sample.image_path)
        pan = loader(sample, classes)
        if pan.segment_ids.shape != image.shape[:2]:
            raise DatasetError(
                f"{sample.label_paths[0]}: label size {pan.segment_ids.shape} differs from image "
                f"{sample.image_path} size {image.shape[:2]}"
            )
        write_png(out / "panoptic" / f"{sample.name}.png", id2rgb(pan.segment_ids))
        write_png(out / "semantic" / f"{sample.name}.png", pan.semantic)
        return {
            "name": sample.name,
            "image_path": os.path.relpath(Path(sample.image_path).resolve(), final_dir.resolve()),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "segments": [s.coco_info(classes, with_score=False) for s in pan.segments],
            "rles": _instance_rles(pan),
        }
    except (DatasetError, BadImageError, ValueError, OSError) as err:
        return {"name": sample.name, "error": str(err), "file": sample.image_path}


def _instance_rles(pan: Panoptic) -> dict[int, dict]:
    """RLE of every thing segment (crowd included), keyed by segment id."""
    from pycocotools import mask as mask_utils

    out = {}
    for s in pan.segments:
        if not s.is_thing:
            continue
        m = np.asfortranarray((pan.segment_ids == s.id).astype(np.uint8))
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        out[int(s.id)] = rle
    return out


def convert_split(
    samples: Sequence[RawSample],
    loader: Loader,
    classes: ClassInfo,
    out_dir: str | os.PathLike,
    workers: int = 1,
    skip_bad: bool = False,
) -> list[dict]:
    """Convert ``samples`` into the canonical split at ``out_dir`` (written atomically).

    Returns the skipped records. Without ``skip_bad`` the first bad sample raises a
    DatasetError naming its file and reason, and nothing is written.
    """
    out_dir = Path(out_dir)
    if not samples:
        raise DatasetError(f"no images found for {out_dir}")
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        raise DatasetError(f"duplicate image names in raw data for {out_dir}")
    samples = sorted(samples, key=lambda s: s.name)
    with atomic_dir(out_dir) as tmp:
        # Relative image paths are computed against the final folder, not the temporary one.
        job = partial(_convert_one, loader=loader, classes=classes, out=tmp, final_dir=out_dir)
        desc = f"convert {out_dir.name}"
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = list(tqdm(pool.map(job, samples, chunksize=4), total=len(samples), desc=desc))
        else:
            results = [job(s) for s in tqdm(samples, desc=desc)]
        skipped = [r for r in results if "error" in r]
        if skipped and not skip_bad:
            first = skipped[0]
            raise DatasetError(f"{first['file']}: {first['error']} ({len(skipped)} bad image(s); use --skip-bad to skip them)")
        good = [r for r in results if "error" not in r]
        if not good:
            raise DatasetError(f"every image of {out_dir} is bad; first: {skipped[0]['error']}")
        _write_jsons(tmp, good, classes)
        if skipped:
            with open(tmp / "skipped.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["name", "file", "error"])
                writer.writeheader()
                writer.writerows(skipped)
    return skipped


def _write_jsons(out: Path, records: list[dict], classes: ClassInfo) -> None:
    categories = classes.coco_categories()
    images, annotations, instances = [], [], []
    ann_id = 1
    for image_id, r in enumerate(records):
        images.append(
            {
                "id": image_id,
                "file_name": f"{r['name']}.png",
                "image_path": r["image_path"],
                "height": r["height"],
                "width": r["width"],
            }
        )
        annotations.append({"image_id": image_id, "file_name": f"{r['name']}.png", "segments_info": r["segments"]})
        for seg in r["segments"]:
            rle = r["rles"].get(seg["id"])
            if rle is None:
                continue
            instances.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": seg["category_id"],
                    "segmentation": rle,
                    "area": seg["area"],
                    "bbox": seg["bbox"],
                    "iscrowd": seg["iscrowd"],
                }
            )
            ann_id += 1
    write_json(out / "panoptic.json", {"images": images, "annotations": annotations, "categories": categories})
    inst_images = [{k: v for k, v in im.items() if k != "image_path"} for im in images]
    thing_cats = [c for c in categories if c["isthing"]]
    write_json(out / "instances.json", {"images": inst_images, "annotations": instances, "categories": thing_cats})
    write_json(out / "classes.json", classes.to_dict(), indent=1)


class CanonicalSplit:
    """Reader of one canonical split. Opening checks the files exist; reads name the file at fault."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for name in ("panoptic.json", "classes.json"):
            if not (self.root / name).exists():
                raise DatasetError(f"{self.root}: not a canonical dataset split (missing {name})")
        self.classes = ClassInfo.from_dict(read_json(self.root / "classes.json"))
        data = read_json(self.root / "panoptic.json")
        self._cat_to_index = self.classes.index_of_id()
        self.images = [
            ImageRecord(
                image_id=int(im["id"]),
                name=Path(im["file_name"]).stem,
                image_path=(self.root / im["image_path"]).resolve(),
                height=int(im["height"]),
                width=int(im["width"]),
            )
            for im in data["images"]
        ]
        self._segments = {int(a["image_id"]): a["segments_info"] for a in data["annotations"]}
        self._by_name = {im.name: im for im in self.images}

    def __len__(self) -> int:
        return len(self.images)

    def record(self, name: str) -> ImageRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.root}: no image named {name!r}") from None

    def image(self, rec: ImageRecord) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        img = read_image(rec.image_path, mode="RGB")
        if img.shape[:2] != (rec.height, rec.width):
            raise DatasetError(f"{rec.image_path}: size {img.shape[:2]} differs from panoptic.json ({rec.height}, {rec.width})")
        return img

    def semantic(self, rec: ImageRecord) -> np.ndarray:
        """(H, W) uint8 class index, 255 = ignore."""
        return read_image(self.root / "semantic" / f"{rec.name}.png")

    def panoptic(self, rec: ImageRecord) -> Panoptic:
        """Ground-truth `Panoptic`, with ids checked against segments_info."""
        path = self.root / "panoptic" / f"{rec.name}.png"
        ids = rgb2id(read_image(path, mode="RGB"))
        segments = []
        for s in self._segments.get(rec.image_id, []):
            cat = int(s["category_id"])
            if cat not in self._cat_to_index:
                raise DatasetError(f"{path}: segment {s['id']} has category {cat} outside classes.json")
            k = self._cat_to_index[cat]
            segments.append(
                Segment(
                    id=int(s["id"]),
                    class_index=k,
                    is_thing=bool(self.classes.is_thing[k]),
                    area=int(s["area"]),
                    bbox=tuple(int(v) for v in s["bbox"]),
                    iscrowd=bool(s["iscrowd"]),
                )
            )
        present = set(np.unique(ids).tolist()) - {0}
        known = {s.id for s in segments}
        if present - known:
            raise DatasetError(f"{path}: ids {sorted(present - known)[:5]} are missing from panoptic.json segments_info")
        return Panoptic(ids, tuple(s for s in segments if s.id in present))

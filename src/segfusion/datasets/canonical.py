"""The canonical dataset format (DESIGN.md, "Canonical dataset"): one writer, one reader.

Layout of ``{dataset}/data/{split}/``::

    panoptic.json    COCO-panoptic: images, annotations (segments_info), categories (native ids, isthing)
    panoptic/        RGB-encoded id PNGs, id = R + 256 G + 256² B
    semantic/        uint8 PNG, class index, 255 = ignore
    instances.json   COCO instances (RLE) for pycocotools
    classes.json     the ClassInfo
    skipped.csv      images left out by --skip-bad (only when there were any)

Images are referenced, not copied: ``images[].image_path`` is relative to the split folder.

**Native ids** (DESIGN.md "Native ids"): ``images[].id`` is the source's image id when the
format has one (COCO-panoptic and ModaNet: the JSON's integer ids, as given), and
``images[].file_name`` the source image's file name (COCO's ``000000000139.jpg``); every
later artefact (cache index, fused ``panoptic.json``, COCO results, per-image metrics)
carries these ids, so COCO results files and the original ground truth work unchanged.
Formats without ids (Cityscapes, VCP, maps, the synthetic data) number the images
0..N-1 in the order of their sorted names, as before. ``images[].name`` is the stem of the
split's own PNGs (``panoptic/{name}.png``, ``semantic/{name}.png``); readers of older
splits without it take the stem of ``file_name``.

``instances.json`` holds, when the source has instance annotations (ModaNet, or COCO with
the ``instances_json`` option), those annotations **as given**: overlapping masks,
polygons or RLE, crowd flags, annotation boxes and areas (``info.instances`` =
``"as-given"``), so AP is pycocotools' on the original annotations. Otherwise it is derived
from the panoptic map: one RLE per thing segment, crowd segments as ``iscrowd`` 1
(``info.instances`` = ``"from-panoptic"``).

Every converter supplies a list of `RawSample` and a function that loads one into a
`Panoptic`; `convert_split` does the rest (parallel over processes, per-image errors
that name the file, ``skip_bad``, atomic output).
"""

from __future__ import annotations

import csv
import json
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


def class_list(source, names, is_thing, category, ids, colors) -> ClassInfo:
    """A converter's `ClassInfo` from parallel lists; an inconsistent list is a `DatasetError` naming ``source``."""
    try:
        return ClassInfo(names=tuple(names), is_thing=tuple(is_thing), category=tuple(category), ids=tuple(ids), colors=tuple(colors))
    except ValueError as err:
        raise DatasetError(f"{source}: {err}") from None


@dataclass(frozen=True)
class RawSample:
    """One raw image and the label files that describe it (paths as the converter needs them)."""

    name: str  # unique stem, used for output file names
    image_path: str
    label_paths: tuple[str, ...]
    image_id: int | None = None  # the source's image id (COCO ids); None: numbered by sorted name
    file_name: str | None = None  # the source's image file name; None: the image path's basename
    instances: str | None = None  # JSON {"source": file, "annotations": [...]}: the source's COCO instance annotations of this image, as given


@dataclass(frozen=True)
class ImageRecord:
    image_id: int
    name: str
    image_path: Path  # absolute
    height: int
    width: int


Loader = Callable[[RawSample, ClassInfo], Panoptic]


def image_name(im: dict) -> str:
    """The split-local name of a ``panoptic.json`` image entry (``name``, else the stem of ``file_name``)."""
    name = im.get("name")
    return str(name) if name else Path(str(im.get("file_name", ""))).stem


INSTANCE_KEYS = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd")


def source_instances(sample: RawSample, classes: ClassInfo, height: int, width: int) -> list[dict] | None:
    """The sample's source instance annotations, checked, with COCO's required fields completed.

    Kept as given: segmentation (polygons, RLE), ``bbox``, ``area``, ``iscrowd`` and ``id``;
    a missing ``area`` or ``bbox`` is measured on the mask and a missing ``iscrowd`` is 0
    (pycocotools needs all three). Errors name the source file, the image and the annotation.
    """
    if sample.instances is None:
        return None
    from pycocotools import mask as mask_utils

    inline = json.loads(sample.instances)
    index = classes.index_of_id()
    out = []
    for k, a in enumerate(inline["annotations"]):
        where = f"{inline['source']}: image {sample.file_name or sample.name}, annotation {a.get('id', f'#{k}') if isinstance(a, dict) else f'#{k}'}"
        if not isinstance(a, dict):
            raise DatasetError(f"{where}: expected an object, got {type(a).__name__}")
        cat = a.get("category_id")
        if not isinstance(cat, int) or cat not in index or not classes.is_thing[index[cat]]:
            raise DatasetError(f"{where}: category_id {cat!r} is not a thing class (ids {[classes.ids[i] for i in classes.thing_indices]})")
        seg = a.get("segmentation")
        try:
            if isinstance(seg, list):
                polys = [p for p in seg if isinstance(p, list)]
                if len(polys) != len(seg) or not polys or any(len(p) < 6 or len(p) % 2 for p in polys):
                    raise DatasetError(f"{where}: segmentation must be polygons of >= 3 points [x0, y0, x1, y1, ...] or an RLE")
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
            elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
                if [int(v) for v in seg["size"]] != [height, width]:
                    raise DatasetError(f"{where}: RLE size {seg['size']} differs from the image size [{height}, {width}]")
                counts = seg["counts"]
                rle = mask_utils.frPyObjects(seg, height, width) if isinstance(counts, list) else {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            else:
                raise DatasetError(f"{where}: segmentation must be a polygon list or an RLE {{size, counts}}, got {str(seg)[:80]}")
            area = float(mask_utils.area(rle))
            box = [float(v) for v in mask_utils.toBbox(rle)]
        except DatasetError:
            raise
        except Exception as err:  # pycocotools' C code raises bare exceptions on malformed input
            raise DatasetError(f"{where}: cannot rasterise the segmentation ({err})") from None
        entry = {key: a[key] for key in INSTANCE_KEYS if key in a}
        entry.setdefault("area", area)
        entry.setdefault("bbox", box)
        entry["iscrowd"] = int(bool(a.get("iscrowd") or 0))
        if not (isinstance(entry["bbox"], list) and len(entry["bbox"]) == 4 and all(isinstance(v, (int, float)) for v in entry["bbox"])):
            raise DatasetError(f"{where}: bbox must be [x, y, w, h], got {entry['bbox']!r}")
        if not isinstance(entry["area"], (int, float)):
            raise DatasetError(f"{where}: area must be a number, got {entry['area']!r}")
        out.append(entry)
    return out


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
        instances = source_instances(sample, classes, int(image.shape[0]), int(image.shape[1]))
        return {
            "name": sample.name,
            "image_id": sample.image_id,
            "file_name": sample.file_name or Path(sample.image_path).name,
            "instances": instances,
            "image_path": os.path.relpath(Path(sample.image_path).resolve(), final_dir.resolve()),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "segments": [s.coco_info(classes, with_score=False) for s in pan.segments],
            "rles": _instance_rles(pan),
        }
    except (DatasetError, BadImageError, ValueError, OSError) as err:
        return {"name": sample.name, "error": str(err), "file": sample.image_path}


def _instance_rles(pan: Panoptic) -> dict[int, dict]:
    """RLE of every thing segment (crowd included), keyed by segment id: one pass over the
    segment map (`segfusion.io.rle.segment_rles`), the bytes of pycocotools' ``mask.encode``."""
    from segfusion.io.rle import segment_rles

    rles = segment_rles(pan.segment_ids, [int(s.id) for s in pan.segments if s.is_thing])
    for rle in rles.values():
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


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
    _check_image_ids(samples, out_dir)
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


def _check_image_ids(samples: Sequence[RawSample], out_dir: Path) -> None:
    """Source image ids are given for every sample or for none, and are unique integers."""
    ids = [s.image_id for s in samples]
    given = [i for i in ids if i is not None]
    if not given:
        return
    if len(given) != len(ids):
        missing = next(s for s in samples if s.image_id is None)
        raise DatasetError(f"{out_dir}: image {missing.image_path} has no source image id while others have one")
    bad = next((s for s in samples if not isinstance(s.image_id, int) or isinstance(s.image_id, bool)), None)
    if bad is not None:
        raise DatasetError(f"{bad.image_path}: image id {bad.image_id!r} is not an integer")
    seen: dict[int, str] = {}
    for s in samples:
        if s.image_id in seen:
            raise DatasetError(f"{out_dir}: image id {s.image_id} is used by {seen[s.image_id]} and {s.image_path}")
        seen[s.image_id] = s.image_path


def _write_jsons(out: Path, records: list[dict], classes: ClassInfo) -> None:
    categories = classes.coco_categories()
    images, annotations, instances = [], [], []
    ann_id = 1
    as_given = any(r.get("instances") is not None for r in records)
    for k, r in enumerate(records):
        image_id = k if r.get("image_id") is None else int(r["image_id"])
        images.append(
            {
                "id": image_id,
                "file_name": r.get("file_name") or f"{r['name']}.png",
                "name": r["name"],
                "image_path": r["image_path"],
                "height": r["height"],
                "width": r["width"],
            }
        )
        annotations.append({"image_id": image_id, "file_name": f"{r['name']}.png", "segments_info": r["segments"]})
        if as_given:
            for a in r.get("instances") or []:
                instances.append({**a, "image_id": image_id})
            continue
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
    if as_given:
        ids = [a.get("id") for a in instances]
        if not all(isinstance(i, int) and i > 0 for i in ids) or len(set(ids)) != len(ids):
            for j, a in enumerate(instances, start=1):  # pycocotools needs unique ids > 0
                a["id"] = j
        instances = [{key: a[key] for key in INSTANCE_KEYS} for a in instances]
    write_json(out / "panoptic.json", {"images": images, "annotations": annotations, "categories": categories})
    inst_images = [{k: v for k, v in im.items() if k not in ("image_path", "name")} for im in images]
    thing_cats = [c for c in categories if c["isthing"]]
    info = {"instances": "as-given" if as_given else "from-panoptic"}
    write_json(out / "instances.json", {"info": info, "images": inst_images, "annotations": instances, "categories": thing_cats})
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
                name=image_name(im),
                image_path=(self.root / im["image_path"]).resolve(),
                height=int(im["height"]),
                width=int(im["width"]),
            )
            for im in data["images"]
        ]
        self._segments = {int(a["image_id"]): a["segments_info"] for a in data["annotations"]}
        self._by_name = {im.name: im for im in self.images}
        self._by_id = {im.image_id: im for im in self.images}
        self._instances: dict[int, list[dict]] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def record(self, name: str) -> ImageRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.root}: no image named {name!r}") from None

    def record_by_id(self, image_id: int) -> ImageRecord:
        try:
            return self._by_id[int(image_id)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(f"{self.root}: no image with id {image_id!r} (ids are those of {self.root / 'panoptic.json'})") from None

    @property
    def has_instances(self) -> bool:
        """True when the split has an ``instances.json`` (the ground truth of AP)."""
        return (self.root / "instances.json").exists()

    def instance_annotations(self, rec: ImageRecord) -> list[dict]:
        """The COCO instance annotations of one image from ``instances.json``, in file order, as written."""
        if self._instances is None:
            path = self.root / "instances.json"
            data = read_json(path)
            grouped: dict[int, list[dict]] = {}
            for a in data.get("annotations", []):
                try:
                    grouped.setdefault(int(a["image_id"]), []).append(a)
                except (KeyError, TypeError, ValueError):
                    raise DatasetError(f"{path}: annotation without an integer image_id: {str(a)[:200]}") from None
            self._instances = grouped
        return self._instances.get(rec.image_id, [])

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

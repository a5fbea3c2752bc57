"""Fused outputs on disk (DESIGN.md "Fused output"): COCO-panoptic PNG + JSON with native ids,
semantic PNGs, and COCO instance results (RLE, class, score) for AP after fusion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from segfusion.io.atomic import atomic_dir, read_json, write_json
from segfusion.io.coco_results import coco_result
from segfusion.io.images import id2rgb, read_image, rgb2id, write_png
from segfusion.types import ClassInfo, Panoptic, Segment


def fused_instance_results(image_id: int, pan: Panoptic, classes: ClassInfo) -> list[dict]:
    """COCO results (RLE) of every non-crowd thing segment, scored with its instance score."""
    return [
        coco_result(image_id, classes.ids[s.class_index], pan.segment_ids == s.id, s.score, s.bbox)
        for s in pan.segments
        if s.is_thing and not s.iscrowd
    ]


def write_fused(out_dir: str | os.PathLike, classes: ClassInfo, items: Iterable[tuple[str, int, Panoptic]], meta: dict) -> int:
    """Write (name, image_id, Panoptic) items atomically into ``out_dir``. Returns the count."""
    images, annotations, results = [], [], []
    with atomic_dir(out_dir) as tmp:
        for name, image_id, pan in items:
            write_png(tmp / "panoptic" / f"{name}.png", id2rgb(pan.segment_ids))
            write_png(tmp / "semantic" / f"{name}.png", pan.semantic)
            h, w = pan.segment_ids.shape
            images.append({"id": image_id, "file_name": f"{name}.png", "height": h, "width": w})
            annotations.append(
                {
                    "image_id": image_id,
                    "file_name": f"{name}.png",
                    "segments_info": [s.coco_info(classes) for s in pan.segments],
                }
            )
            results += fused_instance_results(image_id, pan, classes)
        categories = classes.coco_categories()
        write_json(tmp / "panoptic.json", {"images": images, "annotations": annotations, "categories": categories, "meta": dict(meta)})
        write_json(tmp / "instances.json", results)
        write_json(tmp / "classes.json", classes.to_dict())
    return len(images)


def read_fused(fused_dir: str | os.PathLike) -> Iterator[tuple[str, int, Panoptic]]:
    """Iterate (name, image_id, Panoptic) of a fused output folder."""
    fused_dir = Path(fused_dir)
    data = read_json(fused_dir / "panoptic.json")
    classes = ClassInfo.from_dict(read_json(fused_dir / "classes.json"))
    index = classes.index_of_id()
    for ann in data["annotations"]:
        path = fused_dir / "panoptic" / ann["file_name"]
        ids = rgb2id(read_image(path, mode="RGB"))
        segments = []
        for s in ann["segments_info"]:
            if s["category_id"] not in index:
                raise ValueError(f"{path}: segment {s['id']} has category {s['category_id']} outside the class list")
            k = index[s["category_id"]]
            segments.append(
                Segment(
                    id=int(s["id"]),
                    class_index=k,
                    is_thing=bool(classes.is_thing[k]),
                    area=int(s["area"]),
                    bbox=tuple(s["bbox"]),
                    iscrowd=bool(s["iscrowd"]),
                    score=float(s.get("score", 1.0)),
                )
            )
        yield Path(ann["file_name"]).stem, int(ann["image_id"]), Panoptic(ids, tuple(segments))

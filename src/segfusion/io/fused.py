"""Fused outputs on disk (DESIGN.md "Fused output"): COCO-panoptic PNG + JSON with native ids,
semantic PNGs, and COCO instance results (RLE, class, score) for AP after fusion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from segfusion.io.atomic import atomic_dir, read_json, write_json
from segfusion.io.coco_results import coco_result_rle
from segfusion.io.images import id2rgb, read_image, rgb2id, write_png
from segfusion.io.rle import segment_rles
from segfusion.types import ClassInfo, Panoptic, Segment, segment_stats


def fused_instance_results(image_id: int, pan: Panoptic, classes: ClassInfo) -> list[dict]:
    """COCO results (RLE) of every non-crowd thing segment, scored with its instance score.

    The RLEs come from one pass over the segment map (`segfusion.io.rle.segment_rles`), not
    from one full-frame mask per segment; the bytes are pycocotools' ``mask.encode``'s."""
    things = [s for s in pan.segments if s.is_thing and not s.iscrowd]
    rles = segment_rles(pan.segment_ids, [s.id for s in things])
    return [coco_result_rle(image_id, classes.ids[s.class_index], rles[s.id], s.score, s.bbox) for s in things]


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


def _fused_json(fused: Path) -> tuple[Path, Path]:
    """The COCO-panoptic JSON of a fused folder (or the JSON itself) and the folder it lives in."""
    if fused.is_file():
        return fused, fused.parent
    if not fused.is_dir():
        raise FileNotFoundError(f"{fused}: no such fused output folder or COCO-panoptic JSON")
    path = fused / "panoptic.json"
    if path.exists():
        return path, fused
    candidates = sorted(fused.glob("*.json"))
    panoptic = [c for c in candidates if c.name not in ("instances.json", "classes.json")]
    if len(panoptic) == 1:
        return panoptic[0], fused
    raise FileNotFoundError(f"{fused}: no panoptic.json (COCO-panoptic predictions), and {len(panoptic)} other JSON files to choose from")


def _png_path(json_path: Path, root: Path, file_name: str) -> Path:
    """Where an annotation's PNG is: ``panoptic/`` (ours, mmdetection), ``<json stem>/`` (COCO's
    convention, panopticapi), or beside the JSON (detectron2)."""
    for folder in (root / "panoptic", root / json_path.stem, root):
        if (folder / file_name).exists():
            return folder / file_name
    return root / "panoptic" / file_name


def _fused_classes(root: Path, classes: ClassInfo | None) -> ClassInfo:
    path = root / "classes.json"
    own = ClassInfo.from_dict(read_json(path)) if path.exists() else None
    if classes is None:
        if own is None:
            raise FileNotFoundError(f"{root}: no classes.json; give the class list (segfusion evaluate takes it from --data)")
        return own
    if own is not None and (own.names, own.ids, own.is_thing) != (classes.names, classes.ids, classes.is_thing):
        raise ValueError(f"{path}: classes {list(own.names)} (ids {list(own.ids)}) differ from the ground truth's {list(classes.names)} (ids {list(classes.ids)})")
    return classes


def read_fused(fused_dir: str | os.PathLike, classes: ClassInfo | None = None) -> Iterator[tuple[str, int, Panoptic]]:
    """Iterate (name, image_id, Panoptic) of a fused output folder, ours or any COCO-panoptic prediction.

    ``fused_dir``: a folder holding ``panoptic.json`` (or one other COCO-panoptic JSON) and
    the PNGs (in ``panoptic/``, in ``<json stem>/`` or beside the JSON), or the JSON itself:
    what panopticapi's ``combine_semantic_and_instance_predictions``, detectron2 and
    mmdetection write. Only ``annotations`` (``image_id``, ``file_name``, ``segments_info``
    with ``id`` and ``category_id``) is required, as panopticapi's ``pq_compute`` requires.

    ``classes``: the class list (native category ids); default the folder's ``classes.json``
    (ours); when both exist they must agree. Like panopticapi, ``area`` and ``bbox`` are
    measured on the PNG (the JSON's values, optional in COCO-panoptic, are not trusted),
    ``iscrowd`` defaults to 0 and ``score`` to 1. Errors (one line) name the file, the image
    and the segment: an unknown category id, a segment id listed twice or absent from the
    PNG, an id in the PNG absent from ``segments_info``, a missing key.
    """
    json_path, root = _fused_json(Path(fused_dir))
    data = read_json(json_path)
    classes = _fused_classes(root, classes)
    index = classes.index_of_id()
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise ValueError(f"{json_path}: missing list 'annotations' (COCO-panoptic predictions)")
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann:
            raise ValueError(f"{json_path}: annotation {k} lacks image_id or file_name")
        image_id, file_name = ann["image_id"], str(ann["file_name"])
        where = f"{json_path}: image {image_id} ({file_name})"
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise ValueError(f"{where}: image_id must be an integer (the ground truth's image id)")
        path = _png_path(json_path, root, file_name)
        ids = rgb2id(read_image(path, mode="RGB"))
        stats = segment_stats(ids)
        segments = []
        for j, s in enumerate(ann.get("segments_info", [])):
            if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
                raise ValueError(f"{where}: segment {j} of segments_info lacks id or category_id")
            sid, cat = s["id"], s["category_id"]
            if cat not in index:
                raise ValueError(f"{where}: segment {sid} has category {cat} outside the class list (category ids {list(classes.ids)})")
            if int(sid) not in stats:
                raise ValueError(f"{path}: segment {sid} of {json_path.name} (image {image_id}) has no pixel in the PNG")
            c = index[cat]
            area, bbox = stats[int(sid)]
            segments.append(
                Segment(
                    id=int(sid),
                    class_index=c,
                    is_thing=bool(classes.is_thing[c]),
                    area=area,
                    bbox=bbox,
                    iscrowd=bool(s.get("iscrowd", 0)),
                    score=float(s.get("score", 1.0)),
                )
            )
        listed = [s.id for s in segments]
        dup = sorted({i for i in listed if listed.count(i) > 1})
        if dup:
            raise ValueError(f"{where}: segment ids {dup} are listed twice in segments_info")
        unlisted = sorted(set(stats) - set(listed))
        if unlisted:
            raise ValueError(f"{path}: segment ids {unlisted[:10]} in image '{Path(file_name).stem}' have no segment info in {json_path.name} (image id {image_id})")
        yield Path(file_name).stem, int(image_id), Panoptic(ids, tuple(segments))

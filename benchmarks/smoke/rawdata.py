"""Raw data of a preset's format at its real image size, from the embedded synthetic generator.

Cityscapes and VCP are the generator's own layouts (``street`` and ``clothing`` flavours). The
COCO-panoptic and ModaNet layouts are exported from a canonical split of those scenes: the
canonical format is COCO-panoptic already (panoptic.json + id PNGs) and its instances.json holds
one RLE per thing segment, which is what a ModaNet annotation file may hold (polygons or RLE).

The class lists are padded to the real datasets' sizes, because the number of classes shapes the
network (box/mask predictors, semantic head, IMP canvas) and the prediction cache: COCO panoptic
133 categories (80 things, 53 stuff), VCP 25 garments + skin, hair, background; ModaNet's 13
garments are its own list. Padded classes never occur in the images.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from segfusion.datasets.modanet import MODANET_CATEGORIES
from segfusion.datasets.registry import convert
from segfusion.datasets.synthetic import synthesize_street
from segfusion.datasets.synthetic_clothing import synthesize_clothing

COCO_THINGS, COCO_STUFF = 80, 53
VCP_CLASSES = 28
# Synthetic street things -> COCO category ids (torchvision's COCO labels); rider has no COCO class.
COCO_THING_IDS = {"person": 1, "rider": 1, "bicycle": 2, "car": 3, "motorcycle": 4, "bus": 6, "train": 7, "truck": 8}
# Synthetic garments -> ModaNet categories; skin, hair and background stay unlabelled (ModaNet's background).
MODANET_OF = {"shirt": "top", "dress": "dress", "coat": "outer", "pants": "pants", "skirt": "skirt",
              "shoes": "footwear", "belt": "belt", "bag": "bag", "hat": "headwear"}


def write_cityscapes(root: Path, split: str, num: int, size: tuple[int, int], seed: int) -> None:
    synthesize_street(root, split, num, size, seed)


def write_vcp(root: Path, split: str, num: int, size: tuple[int, int], seed: int) -> None:
    synthesize_clothing(root, split, num, size, seed)
    classes = json.loads((root / "classes.json").read_text())
    pad = [{"name": f"garment_{k}", "category": f"garment_{k}"} for k in range(len(classes), VCP_CLASSES)]
    (root / "classes.json").write_text(json.dumps(classes + pad, indent=1))


def _canonical(flavour: str, split: str, num: int, size: tuple[int, int], seed: int, tmp: Path) -> Path:
    """A canonical split of ``num`` synthetic scenes (converted from the generator's layout)."""
    raw = tmp / "raw"
    if flavour == "street":
        synthesize_street(raw, split, num, size, seed)
        convert("cityscapes", raw, split, tmp / "canonical")
    else:
        synthesize_clothing(raw, split, num, size, seed)
        convert("vcp", raw, split, tmp / "canonical")
    return tmp / "canonical"


def _copy_images(canonical: Path, images: list[dict], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for im in images:
        shutil.copyfile(canonical / im["image_path"], dest / im["file_name"])


def coco_categories(street: list[dict]) -> tuple[list[dict], dict[int, int]]:
    """COCO's 133 categories (the street classes first, padded) and the street id -> COCO id map."""
    cats, remap = [], {}
    for c in street:
        if c["isthing"]:
            remap[c["id"]] = COCO_THING_IDS[c["name"]]
        else:
            remap[c["id"]] = 100 + len([k for k in remap.values() if k >= 100])
    used = {}
    for c in street:
        used.setdefault(remap[c["id"]], {"id": remap[c["id"]], "name": c["name"] if c["name"] != "rider" else "person",
                                         "isthing": c["isthing"], "supercategory": c.get("supercategory", c["name"])})
    cats = list(used.values())
    things = sum(c["isthing"] for c in cats)
    free = iter(k for k in range(1, 100) if k not in used)
    cats += [{"id": next(free), "name": f"thing_{k}", "isthing": 1, "supercategory": "other"} for k in range(COCO_THINGS - things)]
    stuff = len(cats) - COCO_THINGS
    cats += [{"id": 200 + k, "name": f"stuff_{k}", "isthing": 0, "supercategory": f"stuff_{k}"} for k in range(COCO_STUFF - stuff)]
    return cats, remap


def write_coco_panoptic(root: Path, split: str, num: int, size: tuple[int, int], seed: int) -> None:
    """COCO layout: panoptic_{split}.json, panoptic_{split}/*.png, {split}/*.png (street scenes)."""
    with tempfile.TemporaryDirectory() as tmp:
        can = _canonical("street", split, num, size, seed, Path(tmp))
        data = json.loads((can / "panoptic.json").read_text())
        cats, remap = coco_categories(data["categories"])
        images = [{"id": 139 + k, "file_name": f"{139 + k:012d}.png", "height": im["height"], "width": im["width"],
                   "image_path": im["image_path"]} for k, im in enumerate(data["images"])]
        by_old = {im["id"]: new for im, new in zip(data["images"], images)}
        (root / f"panoptic_{split}").mkdir(parents=True, exist_ok=True)
        annotations = []
        for ann in data["annotations"]:
            new = by_old[ann["image_id"]]
            png = f"{Path(new['file_name']).stem}.png"
            shutil.copyfile(can / "panoptic" / ann["file_name"], root / f"panoptic_{split}" / png)
            segments = [{**s, "category_id": remap[s["category_id"]]} for s in ann["segments_info"]]
            annotations.append({"image_id": new["id"], "file_name": png, "segments_info": segments})
        _copy_images(can, images, root / split)
        for im in images:
            del im["image_path"]
        (root / f"panoptic_{split}.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))


def write_modanet(root: Path, split: str, num: int, size: tuple[int, int], seed: int) -> None:
    """ModaNet layout: modanet2018_instances_{split}.json (RLE garments) + images/ (clothing scenes)."""
    ids = {name: i for i, name, _ in MODANET_CATEGORIES}
    with tempfile.TemporaryDirectory() as tmp:
        can = _canonical("clothing", split, num, size, seed, Path(tmp))
        pan = json.loads((can / "panoptic.json").read_text())
        inst = json.loads((can / "instances.json").read_text())
        names = {c["id"]: c["name"] for c in pan["categories"]}
        offset = 1_000_000 * (1 + sum(split.encode()))  # image ids unique across splits
        images = [{"id": offset + im["id"], "file_name": f"{offset + im['id']}.png", "height": im["height"], "width": im["width"],
                   "image_path": im["image_path"]} for im in pan["images"]]
        by_old = {im["id"]: new for im, new in zip(pan["images"], images)}
        annotations = [
            {"id": k + 1, "image_id": by_old[a["image_id"]]["id"], "category_id": ids[MODANET_OF[names[a["category_id"]]]],
             "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"], "iscrowd": a["iscrowd"]}
            for k, a in enumerate(inst["annotations"])
        ]
        _copy_images(can, images, root / "images")
        for im in images:
            del im["image_path"]
        categories = [{"id": i, "name": n, "supercategory": "fashion"} for i, n, _ in MODANET_CATEGORIES]
        (root / f"modanet2018_instances_{split}.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


WRITERS = {"cityscapes": write_cityscapes, "vcp": write_vcp, "coco_panoptic": write_coco_panoptic, "modanet": write_modanet}
"""Raw-format writers by the workflow's format name (segfusion.datasets.registry.FORMATS)."""


def write_raw(fmt: str, root: str | Path, split: str, num: int, size: tuple[int, int], seed: int = 0) -> None:
    """Write ``num`` images of ``size`` (H, W) for ``split`` in raw format ``fmt`` under ``root``."""
    if fmt not in WRITERS:
        raise ValueError(f"no smoke raw-data writer for format {fmt!r}; available: {sorted(WRITERS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    WRITERS[fmt](root, split, num, tuple(size), seed)

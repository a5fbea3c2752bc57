"""Export a fused output folder to the three Cityscapes result formats.

The official evaluators of ``cityscapesscripts`` read results in their own layouts; this
module writes them from a fused folder (`segfusion.io.fused`), so our outputs can be
scored by the reference code and submitted to the benchmark server. Layout of ``OUT``::

    semantic/{stem}_labelIds.png                  uint8 labelIds, void -> 0 ("unlabeled")
    panoptic/cityscapes_panoptic_{split}.json     COCO-panoptic, category ids = labelIds,
    panoptic/cityscapes_panoptic_{split}/{stem}_panoptic.png     image_id = {stem}
    instance/{stem}.txt                           "masks/{stem}_{k:03d}.png labelId score" per line
    instance/masks/{stem}_{k:03d}.png             binary mask (0 / 255)
    export.json                                   what was written, from where

``{stem}`` is the Cityscapes ``{city}_{seq}_{frame}`` prefix of the fused image name (the
fused names of a Cityscapes split *are* these stems). Each format has its own folder
because the evaluators search their result root recursively for ``{stem}*.png`` /
``{stem}*.txt`` and refuse an image with more than one match. Run them with::

    CITYSCAPES_RESULTS=OUT/semantic csEvalPixelLevelSemanticLabeling
    CITYSCAPES_RESULTS=OUT/panoptic csEvalPanopticSemanticLabeling        (split "val")
    CITYSCAPES_RESULTS=OUT/instance csEvalInstanceLevelSemanticLabeling

Rules: semantic = the panoptic class map (class index -> ``ClassInfo.ids``, void -> 0);
panoptic = every segment, crowd included, with its segment id and PNG unchanged (segments
absent from the map are dropped, map ids without a segment become void, as the evaluator
rejects either); instance = the non-crowd *thing* segments only, scored with their
instance score. The class list must be Cityscapes': every class id must be a labelId of
``cityscapesscripts.helpers.labels`` with the same name and thing flag, not ignored in
evaluation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from segfusion.io.atomic import atomic_dir, read_json, write_json
from segfusion.io.images import id2rgb, write_png
from segfusion.types import IGNORE_INDEX, ClassInfo, Panoptic

FORMATS: tuple[str, ...] = ("semantic", "panoptic", "instance")

# {city}_{seq}_{frame}: cityscapesscripts' getCsFileInfo splits file names on "_", so a city
# holds no "_"; sequence and frame numbers are the six-digit fields of every Cityscapes name.
_STEM = re.compile(r"^([A-Za-z0-9.-]+_\d{6}_\d{6})(?:_\S*)?$")


@dataclass(frozen=True)
class InstancePrediction:
    """One line of a Cityscapes instance result file, with its mask.

    mask:     (H, W) bool.
    label_id: Cityscapes labelId of the class.
    score:    confidence in [0, 1].
    """

    mask: np.ndarray
    label_id: int
    score: float


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"semantic,panoptic"`` (or a sequence) -> validated formats in canonical order."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    unknown = sorted(set(items) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown Cityscapes export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if not items:
        raise ValueError(f"no Cityscapes export format given; choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in items)


def cityscapes_stem(name: str) -> str:
    """The ``{city}_{seq}_{frame}`` stem of a fused image name (which may carry a suffix).

    Raises ValueError for names the evaluators could not match to a ground-truth file.
    """
    m = _STEM.match(name)
    if m is None:
        raise ValueError(
            f"image name {name!r} does not start with a Cityscapes stem <city>_<seq:6 digits>_<frame:6 digits>; "
            "the Cityscapes evaluators could not match it to a ground-truth file"
        )
    return m.group(1)


def check_cityscapes_classes(classes: ClassInfo) -> None:
    """Raise ValueError unless every class is an evaluated Cityscapes label (id, name and thing flag agree)."""
    from cityscapesscripts.helpers.labels import id2label

    for k, (name, cid, thing) in enumerate(zip(classes.names, classes.ids, classes.is_thing)):
        label = id2label.get(int(cid))
        if label is None or label.name != name:
            found = "no label" if label is None else f"label {label.name!r}"
            raise ValueError(f"class {k} {name!r} has id {cid}, which is {found} in cityscapesscripts; not Cityscapes classes")
        if label.ignoreInEval:
            raise ValueError(f"class {k} {name!r} (labelId {cid}) is ignored by the Cityscapes evaluators")
        if bool(label.hasInstances) != bool(thing):
            raise ValueError(f"class {k} {name!r}: is_thing={thing} but cityscapesscripts hasInstances={label.hasInstances}")


def label_id_map(pan: Panoptic, classes: ClassInfo) -> np.ndarray:
    """(H, W) uint8 Cityscapes labelIds of a panoptic output; void pixels get 0 ("unlabeled")."""
    lut = np.zeros(256, np.uint8)
    lut[: classes.num_classes] = np.asarray(classes.ids, dtype=np.uint8)
    lut[IGNORE_INDEX] = 0
    return lut[pan.semantic]


def consistent_panoptic(pan: Panoptic) -> Panoptic:
    """``pan`` with its map and segment list agreeing: listed-but-absent segments dropped, unlisted ids voided."""
    present = np.unique(pan.segment_ids)
    present = set(present[present != 0].tolist())
    listed = {s.id for s in pan.segments}
    ids = pan.segment_ids
    if present - listed:
        ids = np.where(np.isin(ids, sorted(present - listed)), 0, ids)
    return Panoptic(ids, tuple(s for s in pan.segments if s.id in present))


def panoptic_annotation(stem: str, pan: Panoptic, classes: ClassInfo) -> dict:
    """COCO-panoptic annotation of one image for ``csEvalPanopticSemanticLabeling`` (``pan`` consistent)."""
    return {
        "image_id": stem,
        "file_name": f"{stem}_panoptic.png",
        "segments_info": [s.coco_info(classes) for s in pan.segments],
    }


def instance_predictions(pan: Panoptic, classes: ClassInfo) -> list[InstancePrediction]:
    """The non-crowd thing segments of ``pan`` as Cityscapes instance predictions, in segment order."""
    return [
        InstancePrediction(mask=pan.segment_ids == s.id, label_id=int(classes.ids[s.class_index]), score=float(s.score))
        for s in pan.segments
        if s.is_thing and not s.iscrowd
    ]


def _write_instances(root: Path, stem: str, preds: Iterable[InstancePrediction]) -> int:
    """Write ``root/{stem}.txt`` and its masks under ``root/masks``; returns the number of lines."""
    lines = []
    for k, p in enumerate(preds):
        rel = f"masks/{stem}_{k:03d}.png"
        write_png(root / rel, p.mask.astype(np.uint8) * 255)
        lines.append(f"{rel} {p.label_id} {p.score:.6f}\n")
    (root / f"{stem}.txt").write_text("".join(lines))
    return len(lines)


def export_cityscapes(
    fused_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: str | Sequence[str] = FORMATS,
    split: str = "val",
) -> dict:
    """Write the Cityscapes result formats of a fused folder into ``out_dir`` (atomically).

    ``formats``: any of "semantic", "panoptic", "instance" (comma-separated or a sequence).
    ``split`` only names the panoptic JSON and PNG folder (``cityscapes_panoptic_{split}``),
    the names ``csEvalPanopticSemanticLabeling`` looks for by default.
    Returns the summary written to ``out_dir/export.json``.
    """
    from segfusion.io.fused import read_fused

    fused_dir, out_dir = Path(fused_dir), Path(out_dir)
    chosen = parse_formats(formats)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise ValueError(f"split must be a plain name such as 'val', got {split!r}")
    classes = ClassInfo.from_dict(read_json(fused_dir / "classes.json"))
    check_cityscapes_classes(classes)
    pan_base = f"cityscapes_panoptic_{split}"
    images, annotations = [], []
    seen: dict[str, str] = {}
    n_instances = 0
    with atomic_dir(out_dir) as tmp:
        for name, _image_id, pan in read_fused(fused_dir):
            stem = cityscapes_stem(name)
            if stem in seen:
                raise ValueError(f"{fused_dir}: images {seen[stem]!r} and {name!r} share the Cityscapes stem {stem!r}")
            seen[stem] = name
            pan = consistent_panoptic(pan)
            if "semantic" in chosen:
                write_png(tmp / "semantic" / f"{stem}_labelIds.png", label_id_map(pan, classes))
            if "panoptic" in chosen:
                write_png(tmp / "panoptic" / pan_base / f"{stem}_panoptic.png", id2rgb(pan.segment_ids))
                h, w = pan.segment_ids.shape
                images.append({"id": stem, "file_name": f"{stem}_leftImg8bit.png", "height": int(h), "width": int(w)})
                annotations.append(panoptic_annotation(stem, pan, classes))
            if "instance" in chosen:
                n_instances += _write_instances(tmp / "instance", stem, instance_predictions(pan, classes))
        if not seen:
            raise ValueError(f"{fused_dir}: the fused folder has no images")
        if "panoptic" in chosen:
            categories = classes.coco_categories()
            write_json(tmp / "panoptic" / f"{pan_base}.json", {"images": images, "annotations": annotations, "categories": categories})
        summary = {
            "fused": str(fused_dir),
            "formats": list(chosen),
            "split": split,
            "n_images": len(seen),
            "n_instances": n_instances if "instance" in chosen else None,
        }
        write_json(tmp / "export.json", summary, indent=1)
    return summary

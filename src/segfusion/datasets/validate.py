"""`segfusion validate-dataset`: consistency checks of a canonical split.

Every problem found is reported (one message each, naming the file), rather than
stopping at the first: a broken conversion usually breaks many images the same way, and
the list shows how. The checks read the JSON and PNG files directly instead of going
through `CanonicalSplit.panoptic`, which (rightly, for training) drops segments absent
from the PNG and stops at the first inconsistency.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from segfusion.datasets.canonical import DatasetError, image_name
from segfusion.io.atomic import read_json
from segfusion.io.images import BadImageError, read_image, rgb2id
from segfusion.types import ClassInfo, segment_stats


def _check_categories(root: Path, categories: list, classes: ClassInfo, problems: list[str]) -> None:
    where = f"{root}/panoptic.json"
    by_id = {}
    for c in categories:
        cid = int(c.get("id", -1))
        if cid in by_id:
            problems.append(f"{where}: duplicate category id {cid}")
        by_id[cid] = c
    for k, cid in enumerate(classes.ids):
        c = by_id.get(int(cid))
        if c is None:
            problems.append(f"{where}: class {classes.names[k]!r} (id {cid}) of classes.json missing from categories")
            continue
        if c.get("name") != classes.names[k] or bool(c.get("isthing")) != classes.is_thing[k]:
            problems.append(
                f"{where}: category {cid} is ({c.get('name')!r}, isthing={c.get('isthing')}), classes.json says "
                f"({classes.names[k]!r}, isthing={int(classes.is_thing[k])})"
            )
    extra = sorted(set(by_id) - {int(i) for i in classes.ids})
    if extra:
        problems.append(f"{where}: categories {extra} are not in classes.json")


def _check_image(root: Path, im: dict, segments: list, classes: ClassInfo, problems: list[str]) -> None:
    name = image_name(im)
    pan_path, sem_path = root / "panoptic" / f"{name}.png", root / "semantic" / f"{name}.png"
    size = (int(im.get("height", -1)), int(im.get("width", -1)))
    image_path = root / str(im.get("image_path", ""))
    try:
        image = read_image(image_path)
        if image.shape[:2] != size:
            problems.append(f"{image_path}: image size {image.shape[:2]} differs from panoptic.json {size}")
    except BadImageError as err:
        problems.append(f"{err} (image of {name})")
    try:
        rgb = read_image(pan_path)
        sem = read_image(sem_path)
    except BadImageError as err:
        problems.append(str(err))
        return
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        problems.append(f"{pan_path}: expected an RGB id PNG, got shape {rgb.shape}")
        return
    if sem.ndim != 2:
        problems.append(f"{sem_path}: expected a single-channel class-index PNG, got shape {sem.shape}")
        return
    ids = rgb2id(rgb)
    if ids.shape != size or sem.shape != size:
        problems.append(f"{pan_path}: sizes differ: panoptic.json {size}, panoptic PNG {ids.shape}, semantic PNG {sem.shape}")
        return
    index = classes.index_of_id()
    n = classes.num_classes
    bad = np.unique(sem[(sem != classes.ignore_index) & (sem >= n)])
    if len(bad):
        problems.append(f"{sem_path}: class indices {bad.tolist()} outside 0..{n - 1} (255 = ignore)")

    seg_ids = [int(s.get("id", 0)) for s in segments]
    dup = sorted(i for i, c in Counter(seg_ids).items() if c > 1)
    if dup:
        problems.append(f"{root}/panoptic.json: image {name}: duplicate segment ids {dup}")
    stats = segment_stats(ids)
    listed = set(seg_ids)
    unlisted = sorted(set(stats) - listed)
    if unlisted:
        problems.append(f"{pan_path}: ids {unlisted[:10]} in the PNG are missing from segments_info")
    lut_ids, lut_cls = [], []
    for s in segments:
        sid, cat = int(s.get("id", 0)), int(s.get("category_id", -1))
        if sid == 0:
            problems.append(f"{root}/panoptic.json: image {name}: segment id 0 is reserved for void")
            continue
        if cat not in index:
            problems.append(f"{root}/panoptic.json: image {name}: segment {sid} has category {cat} outside classes.json")
            continue
        k = index[cat]
        if s.get("iscrowd") and not classes.is_thing[k]:
            problems.append(f"{root}/panoptic.json: image {name}: segment {sid} is a crowd of stuff class {classes.names[k]!r}")
        if sid not in stats:
            problems.append(f"{pan_path}: segment {sid} of segments_info has no pixel")
            continue
        area, bbox = stats[sid]
        if int(s.get("area", -1)) != area:
            problems.append(f"{pan_path}: segment {sid} area {s.get('area')} in JSON, {area} in the PNG")
        if tuple(int(v) for v in s.get("bbox", ())) != bbox:
            problems.append(f"{pan_path}: segment {sid} bbox {s.get('bbox')} in JSON, {list(bbox)} in the PNG")
        lut_ids.append(sid)
        lut_cls.append(k)
    # The semantic PNG must be the panoptic map's class per pixel (255 on void and unknown ids).
    order = np.argsort(np.asarray(lut_ids, np.int64))
    keys = np.asarray(lut_ids, np.int64)[order]
    vals = np.asarray(lut_cls, np.int64)[order]
    flat = ids.ravel().astype(np.int64)
    derived = np.full(flat.shape, classes.ignore_index, np.int64)
    if len(keys):
        pos = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
        hit = keys[pos] == flat
        derived[hit] = vals[pos[hit]]
    wrong = int(np.count_nonzero(derived.reshape(sem.shape) != sem))
    if wrong:
        problems.append(f"{sem_path}: {wrong} pixels disagree with the panoptic map")


def _check_instances(root: Path, panoptic: dict, classes: ClassInfo, problems: list[str]) -> None:
    """instances.json holds one annotation per thing segment, with the same category, area and bbox."""
    path = root / "instances.json"
    try:
        inst = read_json(path)
    except (FileNotFoundError, ValueError) as err:
        problems.append(str(err))
        return
    things = {int(i) for i, t in zip(classes.ids, classes.is_thing) if t}
    if (inst.get("info") or {}).get("instances") == "as-given":
        _check_source_instances(path, inst, {im.get("id") for im in panoptic.get("images", [])}, things, problems)
        return
    expected = Counter()
    for a in panoptic.get("annotations", []):
        for s in a.get("segments_info", []):
            if int(s.get("category_id", -1)) in things:
                expected[(a.get("image_id"), int(s["category_id"]), int(s.get("area", -1)), tuple(s.get("bbox", ())))] += 1
    found = Counter(
        (a.get("image_id"), int(a.get("category_id", -1)), int(a.get("area", -1)), tuple(a.get("bbox", ())))
        for a in inst.get("annotations", [])
    )
    if expected != found:
        missing, extra = expected - found, found - expected
        problems.append(
            f"{path}: does not match the thing segments of panoptic.json ({sum(missing.values())} missing, "
            f"{sum(extra.values())} unexpected; e.g. {next(iter(missing or extra))})"
        )


def _check_source_instances(path: Path, inst: dict, image_ids: set, things: set[int], problems: list[str]) -> None:
    """Source annotations kept as given: known images, thing categories, unique ids > 0, COCO's fields."""
    ids = Counter()
    for a in inst.get("annotations", []):
        aid = a.get("id")
        ids[aid] += 1
        if a.get("image_id") not in image_ids:
            problems.append(f"{path}: annotation {aid} refers to unknown image id {a.get('image_id')}")
        if a.get("category_id") not in things:
            problems.append(f"{path}: annotation {aid} has category {a.get('category_id')}, not a thing class of classes.json")
        missing = [k for k in ("segmentation", "area", "bbox", "iscrowd") if k not in a]
        if missing:
            problems.append(f"{path}: annotation {aid} lacks {missing}")
    bad = sorted(str(i) for i, c in ids.items() if c > 1 or not isinstance(i, int) or i <= 0)
    if bad:
        problems.append(f"{path}: annotation ids {bad[:5]} are duplicated or not integers > 0")


def validate_split(path: str | os.PathLike) -> list[str]:
    """Return one message per problem (empty when the split is consistent).

    Checks: classes.json against panoptic.json categories (ids, names, isthing); image
    entries (duplicate ids or names, one annotation per image, unknown image ids);
    image/label pairing (image, panoptic and semantic PNGs exist and agree in size with
    the JSON; no stray PNGs); per segment: id not 0 and not duplicated, category known,
    crowd only for things, area and bbox equal to the PNG's; ids in the PNG all listed;
    class indices in range and the semantic PNG equal to the panoptic map's classes;
    instances.json matching the thing segments.
    """
    root = Path(path)
    for name in ("panoptic.json", "classes.json"):
        if not (root / name).exists():
            return [f"{root}: not a canonical dataset split (missing {name})"]
    try:
        classes = ClassInfo.from_dict(read_json(root / "classes.json"))
        data = read_json(root / "panoptic.json")
    except (DatasetError, ValueError, FileNotFoundError) as err:
        return [str(err)]
    problems: list[str] = []
    _check_categories(root, data.get("categories", []), classes, problems)

    images = data.get("images", [])
    id_counts = Counter(im.get("id") for im in images)
    name_counts = Counter(image_name(im) for im in images)
    for i, c in id_counts.items():
        if c > 1:
            problems.append(f"{root}/panoptic.json: image id {i} used by {c} images")
    for n, c in name_counts.items():
        if c > 1:
            problems.append(f"{root}/panoptic.json: image name {n} used by {c} images")
    anns: dict = {}
    for a in data.get("annotations", []):
        iid = a.get("image_id")
        if iid not in id_counts:
            problems.append(f"{root}/panoptic.json: annotation {a.get('file_name')} refers to unknown image id {iid}")
        elif iid in anns:
            problems.append(f"{root}/panoptic.json: image id {iid} has more than one annotation")
        anns[iid] = a
    for im in images:
        a = anns.get(im.get("id"))
        if a is None:
            problems.append(f"{root}/panoptic.json: image {im.get('file_name')} has no annotation")
            continue
        _check_image(root, im, a.get("segments_info", []), classes, problems)
    for sub in ("panoptic", "semantic"):
        present = {p.stem for p in (root / sub).glob("*.png")} if (root / sub).is_dir() else set()
        stray = sorted(present - set(name_counts))
        if stray:
            problems.append(f"{root}/{sub}: PNGs without an image entry: {stray[:5]}")
    _check_instances(root, data, classes, problems)
    return problems

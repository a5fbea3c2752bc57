"""Costea, Petrovai, Nedevschi: output fusion with category consistency (Sec. 3).

The paper's rules, and what we chose where it is vague:

1. Foreground / background (Sec. 3, first paragraph): "we divide the pixels into foreground
   and background based on the results from semantic segmentation". *Choice:* the semantic
   prediction is read at category level for things, since "semantic segmentation ...
   perform[s] well when segmenting at category level and struggle[s] at subcategory level":
   the probabilities of the thing classes of each thing category (``ClassInfo.category``)
   are summed, and each pixel takes the argmax over {every stuff class, every thing
   category}. A pixel whose winner is a stuff class is background and keeps that class
   ("in the case of background pixels we rely only on the classification from semantic
   segmentation"); otherwise it is foreground of the winning category.
2. Pixel-to-pixel matching: instances with score ``>= 0.5`` (*choice*: the paper gives no
   threshold; the Panoptic baseline's), masks binarised as ``prob >= 0.5``, are visited in
   descending score; an instance pixel keeps the instance's class and id only where it is
   foreground of the instance class's category and not already taken by a higher-scoring
   instance (*choice*: the paper does not say how overlapping masks are resolved; the
   category check comes first, so a lower-scoring instance of the right category gets the
   pixels a higher-scoring one of the wrong category loses). Other mask pixels are deleted.
   The paper also says pixels of "a different semantic subcategory are deleted"; we read
   consistency at *category* level, as its preceding sentence states, since the point of
   the method is that the instance's object-level class (e.g. truck) overrides the
   per-pixel sub-category (e.g. car) inside its category.
3. Region growing: foreground pixels not covered by a kept mask pixel join "the closest
   labeled pixel with direct semantic path", by "breadth-first-search based region
   growing": a multi-source BFS over 4-connected foreground pixels of the same category,
   run wave by wave on arrays (`grow_regions`); a pixel reached in the same wave from
   several instances joins the one with the highest score.
4. Foreground segments reached by no instance (the paper: "isolated") get "the semantic
   subcategory label from semantic segmentation" and a new id. *Choice:* a segment is a
   4-connected component of unreached foreground of one category; its class is the thing
   class of that category with the highest probability summed over the segment (one label
   per object, as the paper wants for instances), and its score is that class's mean
   probability over the segment. *Choice* (the paper states no minimum size): an isolated
   segment with fewer pixels than the stuff-area threshold (rule 6; ``stuff_area`` /
   ``stuff_area_fraction``) is not created and its pixels stay void, so that specks of
   foreground in the semantic output do not become thousands of tiny instances.
5. Void (*choice*): a pixel where the semantic input is void (all-zero probabilities, e.g.
   255 in an imported label PNG) is neither background nor foreground, so it takes no
   stuff class, no instance pixel (rule 2 needs foreground of the instance's category) and
   no region growing: it stays void.
6. Stuff area (*choice*: Costea states no area rule): as the Panoptic baseline, a stuff
   class with fewer than the area threshold (4096 px at 1024×2048) pixels becomes void.
"""

from __future__ import annotations

import numpy as np

from segfusion.fusion.common import (
    BilinearField,
    SegmentCanvas,
    binary_crop,
    ranked_instances,
    stuff_area_threshold,
)
from segfusion.types import IGNORE_INDEX, ClassInfo, Instances, Panoptic, SemanticPrediction


def costea(
    instances: Instances,
    semantic: SemanticPrediction,
    classes: ClassInfo,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    stuff_area: float | None = None,
    stuff_area_fraction: float | None = None,
) -> Panoptic:
    """Costea et al.'s fusion (module docstring, rules 1-6).

    Parameters: score_threshold=0.5 (kept if ``>=``), mask_threshold=0.5 (``prob >=``),
    and stuff_area (px) or stuff_area_fraction (of H·W, default 4096 / (1024·2048)): the area
    threshold of stuff classes (rule 6) and of isolated foreground segments (rule 4).
    """
    min_area = stuff_area_threshold("costea", semantic.image_size, stuff_area, stuff_area_fraction)
    is_thing = classes.is_thing_array
    stuff_index = classes.stuff_indices
    thing_index = classes.thing_indices
    categories = list(dict.fromkeys(classes.category[c] for c in thing_index.tolist()))
    members = [thing_index[[classes.category[c] == g for c in thing_index.tolist()]] for g in categories]
    category_of_class = np.full(classes.num_classes, -1, np.int16)
    for g, m in enumerate(members):
        category_of_class[m] = g

    # rule 1: background stuff class or foreground category per pixel
    field = BilinearField(semantic.prob, semantic.image_size)
    groups = [[int(c)] for c in stuff_index] + [m.tolist() for m in members]
    winner = field.grouped(groups).argmax()
    num_stuff = len(stuff_index)
    group = winner.astype(np.int16) - np.int16(num_stuff)  # category index, < 0 on background
    void = field.void()  # void semantic input: neither background nor foreground
    if void is not None:
        group[void] = -1
        winner[void] = len(groups)

    # rule 2: category-consistent instance pixels, by descending score
    canvas = SegmentCanvas(semantic.image_size)
    for i in ranked_instances(instances, score_threshold, inclusive=True).tolist():
        mask, (y0, x0) = binary_crop(instances, i, mask_threshold)
        window = (slice(y0, y0 + mask.shape[0]), slice(x0, x0 + mask.shape[1]))
        label = int(instances.labels[i])
        take = mask & (group[window] == category_of_class[label]) & (canvas.ids[window] == 0)
        if take.any():
            canvas.ids[window][take] = canvas.new_segment(label, True, float(instances.scores[i]))

    # rule 3: region growing through foreground of the same category
    grow_regions(canvas.ids, group)

    # rule 4: unreached foreground segments
    _unreached_segments(canvas, field, group, members, min_area)

    # rule 6: background stuff with the area rule
    stuff_of_winner = np.full(len(groups) + 1, IGNORE_INDEX, np.uint8)
    stuff_of_winner[:num_stuff] = stuff_index
    canvas.paint_classes(stuff_of_winner[winner], allowed=~is_thing, is_thing=is_thing, min_area=min_area)
    return canvas.to_panoptic()


def grow_regions(ids: np.ndarray, group: np.ndarray) -> None:
    """Breadth-first region growing, in place, with array operations.

    ids:   (H, W) int32 segment id, 0 = unlabelled.
    group: (H, W) int, the region each pixel belongs to (a Costea category), < 0 = no region.
    Every unlabelled pixel with ``group >= 0`` that is connected (4-neighbourhood) through
    pixels of its own group to a labelled pixel of that group takes the id of the nearest
    one in path length. All sources grow together one pixel per wave; a pixel reached in
    one wave from several ids takes the smallest id. Labelled pixels never change.
    """
    height, width = ids.shape
    open_ = (group >= 0) & (ids == 0)
    if not open_.any() or not ids.any():
        return
    wp = width + 2
    grp = np.full((height + 2, wp), -1, np.int16)
    grp[1:-1, 1:-1] = group
    lab = np.zeros((height + 2, wp), np.int32)
    lab[1:-1, 1:-1] = ids
    # first wave's sources: labelled pixels with an open 4-neighbour
    near = np.zeros((height + 2, wp), bool)
    near[1:-1, 1:-1] = open_
    near = near[:-2, 1:-1] | near[2:, 1:-1] | near[1:-1, :-2] | near[1:-1, 2:]
    frontier = np.flatnonzero((near & (ids > 0)).ravel())
    frontier = (frontier // width + 1) * wp + frontier % width + 1
    grp_flat, lab_flat = grp.reshape(-1), lab.reshape(-1)
    wave_of = np.zeros(lab_flat.shape, np.int32)  # wave in which a pixel was labelled
    wave = 0
    while len(frontier):
        wave += 1
        src_group, src_label = grp_flat[frontier], lab_flat[frontier]
        reached = []
        # one direction at a time: a pixel appears at most once per direction
        for step in (-wp, wp, -1, 1):
            dst = frontier + step
            current = lab_flat[dst]
            ok = (grp_flat[dst] == src_group) & ((current == 0) | (wave_of[dst] == wave))
            dst, current, new = dst[ok], current[ok], src_label[ok]
            fresh = current == 0
            lab_flat[dst] = np.where(fresh, new, np.minimum(current, new))
            wave_of[dst] = wave
            reached.append(dst[fresh])
        frontier = np.concatenate(reached)
    ids[:] = lab[1:-1, 1:-1]


def _unreached_segments(
    canvas: SegmentCanvas, field: BilinearField, group: np.ndarray, members: list[np.ndarray], min_area: float = 0.0
) -> None:
    """Rule 4: one new thing segment per 4-connected unreached component of a category with at
    least ``min_area`` pixels; smaller components stay void."""
    unreached = (group >= 0) & (canvas.ids == 0)
    if not unreached.any():
        return
    from scipy import ndimage  # lazy: keeps `segfusion fuse` start-up light

    for g, classes_g in enumerate(members):
        mask = unreached & (group == g)
        rows = np.flatnonzero(mask.any(axis=1))
        if len(rows) == 0:
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        y0, x0 = int(rows[0]), int(cols[0])
        crop = mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1]
        comp, n = ndimage.label(crop)
        ys, xs = np.nonzero(crop)
        comp_of = comp[ys, xs] - 1
        ys, xs = ys + y0, xs + x0
        prob = field.values(ys, xs)[:, classes_g]
        count = np.bincount(comp_of, minlength=n)
        sums = np.stack(
            [np.bincount(comp_of, weights=prob[:, k], minlength=n) for k in range(len(classes_g))], 1
        )
        best = sums.argmax(axis=1)
        seg_ids = np.zeros(n, np.int32)  # 0: under the area threshold, stays void
        for k in np.flatnonzero(count >= min_area).tolist():
            seg_ids[k] = canvas.new_segment(int(classes_g[best[k]]), True, float(sums[k, best[k]] / count[k]))
        canvas.ids[ys, xs] = seg_ids[comp_of]

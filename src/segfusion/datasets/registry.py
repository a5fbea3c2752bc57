"""Converter registry: format name -> (find samples, load one sample, class list).

Options (the ``options`` dict, from ``segfusion convert --params``), per format:

==============  ====================================================================
cityscapes      ``source``: ``labels`` (labelIds + instanceIds, default) | ``panoptic``
                (cityscapesscripts' createPanopticImgs export); ``train_ids``: read the
                ``--use-train-id`` export (panoptic only)
coco_panoptic   ``images_dir`` (default ``{split}``), ``annotation_json`` (default
                ``panoptic_{split}.json`` or ``annotations/panoptic_{split}.json``),
                ``panoptic_dir`` (default: the JSON path without ``.json``),
                ``instances_json`` (COCO instances file: the AP ground truth, as given)
modanet         ``images_dir`` (default ``images``), ``annotation_json`` (default
                ``modanet2018_instances_{split}.json``, also under ``annotations/``),
                ``unlabeled``: ``background`` (default) | ``ignore``
vcp             ``images_dir`` (``images``), ``labels_dir`` (``labels``), ``classes_file``
                (``classes.json``), ``stuff`` (``[background, skin, hair]``),
                ``connectivity`` (8 | 4), ``min_area`` (1)
maps            ``images_dir`` (``images``), ``semantic_dir`` (``semantic``),
                ``instance_dir`` (``instance``), ``classes_file`` (``classes.yaml``),
                ``thing_without_instance``: ``crowd`` (default) | ``void``
==============  ====================================================================

Unknown option names are an error naming the format and the allowed names. Loader
options are bound with `functools.partial` on the module-level ``load_sample`` so the
loader still pickles to worker processes.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable, Mapping, Sequence

from segfusion.datasets.canonical import Loader, RawSample, convert_split
from segfusion.types import ClassInfo


def _check(fmt: str, options: dict, allowed: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{fmt} converter: unknown options {unknown}; allowed: {sorted(allowed)}")


Prepared = tuple[list[RawSample], Loader, ClassInfo]


def _cityscapes(raw, split: str, options: dict) -> Prepared:
    from segfusion.datasets import cityscapes

    _check("cityscapes", options, cityscapes.OPTIONS)
    samples = cityscapes.find_samples(raw, split, **options)
    loader: Callable = cityscapes.load_panoptic_sample if options.get("source") == "panoptic" else cityscapes.load_sample
    return samples, loader, cityscapes.cityscapes_classes()


def _coco_panoptic(raw, split: str, options: dict) -> Prepared:
    from segfusion.datasets import coco_panoptic

    _check("coco_panoptic", options, coco_panoptic.OPTIONS)
    samples, classes = coco_panoptic.read_split(raw, split, **options)
    return samples, coco_panoptic.load_sample, classes


def _modanet(raw, split: str, options: dict) -> Prepared:
    from segfusion.datasets import modanet

    _check("modanet", options, modanet.OPTIONS)
    samples, classes = modanet.read_split(raw, split, **options)
    return samples, partial(modanet.load_sample, unlabeled=options.get("unlabeled", "background")), classes


def _maps(raw, split: str, options: dict) -> Prepared:
    from segfusion.datasets import maps

    _check("maps", options, maps.OPTIONS)
    rule = options.get("thing_without_instance", "crowd")
    if rule not in maps.THING_WITHOUT_INSTANCE:
        raise ValueError(f"maps option thing_without_instance must be one of {list(maps.THING_WITHOUT_INSTANCE)}, got {rule!r}")
    samples, classes = maps.read_split(raw, split, **options)
    return samples, partial(maps.load_sample, thing_without_instance=rule), classes


def _vcp(raw, split: str, options: dict) -> Prepared:
    from segfusion.datasets import vcp

    _check("vcp", options, vcp.OPTIONS)
    find_opts = {k: options[k] for k in ("images_dir", "labels_dir") if k in options}
    class_opts = {k: options[k] for k in ("classes_file", "stuff") if k in options}
    connectivity, min_area = options.get("connectivity", 8), options.get("min_area", 1)
    if connectivity not in (4, 8):
        raise ValueError(f"vcp option connectivity must be 4 or 8, got {connectivity!r}")
    if not isinstance(min_area, int) or min_area < 1:
        raise ValueError(f"vcp option min_area must be an integer >= 1, got {min_area!r}")
    classes = vcp.vcp_classes(raw, **class_opts)
    samples = vcp.find_samples(raw, split, **find_opts)
    return samples, partial(vcp.load_sample, connectivity=connectivity, min_area=min_area), classes


FORMATS: Mapping[str, Callable[[str | os.PathLike, str, dict], Prepared]] = {
    "cityscapes": _cityscapes,
    "coco_panoptic": _coco_panoptic,
    "modanet": _modanet,
    "vcp": _vcp,
    "maps": _maps,
}
"""The registry of raw dataset formats: name -> ``prepare(raw, split, options) -> (samples, loader, classes)``.
The config schema's ``format`` enum and ``segfusion convert --format`` come from here."""


def prepare(fmt: str, raw: str | os.PathLike, split: str, options: dict | None = None) -> Prepared:
    """The samples, the loader and the class list of one raw split (no image is read)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {fmt!r}; available: {list(FORMATS)}")
    return FORMATS[fmt](raw, split, dict(options or {}))


def convert(fmt: str, raw: str | os.PathLike, split: str, out: str | os.PathLike, workers: int = 1, skip_bad: bool = False, options: dict | None = None) -> list[dict]:
    """Convert one split of a raw dataset in format ``fmt`` into the canonical split ``out``."""
    samples, loader, classes = prepare(fmt, raw, split, options)
    return convert_split(samples, loader, classes, out, workers, skip_bad)

"""The registries are the only lists of names: the schema's enums and the CLI's choices equal them."""

from __future__ import annotations

import argparse
from pathlib import Path

from segfusion.cli import build_parser
from segfusion.config import load_schema
from segfusion.datasets.registry import FORMATS
from segfusion.datasets.synthetic import FLAVOURS
from segfusion.fusion import FUSION_METHODS
from segfusion.specs import HEADS, MODEL_PRESETS, NO_HEAD

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _choices(command: str, option: str) -> list:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return list(next(a for a in sub._actions if option in a.option_strings).choices)


def test_schema_enums_equal_the_registries():
    schema = load_schema(SCHEMA)
    props = schema["properties"]
    dataset = props["datasets"]["additionalProperties"]["properties"]
    assert dataset["format"]["enum"] == list(FORMATS)
    assert dataset["synthesize"]["properties"]["flavour"]["enum"] == list(FLAVOURS)
    assert props["custom_models"]["additionalProperties"]["properties"]["head"]["enum"] == [*HEADS, NO_HEAD]
    fusion = props["fusion"]["properties"]
    assert fusion["methods"]["items"]["enum"] == list(FUSION_METHODS)
    assert fusion["methods"]["default"] == list(FUSION_METHODS)
    assert list(fusion["params"]["properties"]) == list(FUSION_METHODS)
    assert props["sweeps"]["propertyNames"]["enum"] == list(FUSION_METHODS)
    # The YAML itself lists none of these names: they come from the registries only.
    text = SCHEMA.read_text()
    for name in ("coco_panoptic", "asp_rp", "seamless", "clothing"):
        assert name not in text, name


def test_cli_choices_equal_the_registries():
    assert _choices("convert", "--format") == list(FORMATS)
    assert _choices("synthesize", "--flavour") == list(FLAVOURS)


def test_every_head_and_preset_resolves():
    from segfusion.models.heads import SemanticHead, head_class

    for kind in HEADS:
        assert issubclass(head_class(kind), SemanticHead) and head_class(kind).kind == kind
    for name, variant in MODEL_PRESETS.items():
        assert variant.head in (*HEADS, NO_HEAD), name
    assert {f"panoptic_{kind}" for kind in HEADS} <= set(MODEL_PRESETS)

"""A model file's header read without torch equals what torch.load reads; settings mismatches are named."""

import pytest

torch = pytest.importorskip("torch")

from segfusion.datasets.canonical import CanonicalSplit  # noqa: E402
from segfusion.io.model_header import read_model_header  # noqa: E402
from segfusion.models.build import build_model  # noqa: E402
from segfusion.provenance import model_settings_mismatch  # noqa: E402
from segfusion.specs import MODEL_PRESETS, ModelSpec, Schedule, TrainSpec  # noqa: E402
from segfusion.training.checkpoint import read_model_file, save_model  # noqa: E402


def test_header_equals_torch_load_without_the_weights(street_canonical, tmp_path):
    split = CanonicalSplit(street_canonical)
    model = build_model(MODEL_PRESETS["panoptic_fpn_imp"], ModelSpec(min_size=(64,), max_size=128), split.classes)
    train = TrainSpec(Schedule(iterations=3, lr=0.01), seed=4).to_dict()
    save_model(tmp_path / "m.pt", model, split.classes, 2, extra={"train": train, "seconds": 1.5})
    full = read_model_file(tmp_path / "m.pt")
    header = read_model_header(tmp_path / "m.pt")
    assert "state_dict" not in header
    assert header == {k: v for k, v in full.items() if k != "state_dict"}
    assert model_settings_mismatch(header, train, arch=ModelSpec(min_size=(64,), max_size=128).to_dict(),
                                   variant=MODEL_PRESETS["panoptic_fpn_imp"].to_dict()) is None  # fmt: skip
    other = TrainSpec(Schedule(iterations=3, lr=0.02), seed=4).to_dict()
    assert model_settings_mismatch(header, other) == "train.schedule.lr: trained with 0.01, the config gives 0.02"
    assert model_settings_mismatch(header, train, variant=MODEL_PRESETS["panoptic_fpn"].to_dict()) == (
        "variant.imp: trained with True, the config gives False")
    arch = ModelSpec(min_size=(64, 96), max_size=128).to_dict()
    assert model_settings_mismatch(header, train, arch=arch) == "architecture.min_size: trained with [64], the config gives [64, 96]"
    assert model_settings_mismatch({"extra": {}}, train) == "train: not recorded in the model file"


def test_a_file_that_is_no_model_is_named(tmp_path):
    bad = tmp_path / "stage1.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"stage1\.pt: not a readable model file \(BadZipFile"):
        read_model_header(bad)

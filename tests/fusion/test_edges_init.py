"""Edge cases of the fusion entry points: `check_params` and `fuse` (segfusion/fusion/__init__.py)."""

from __future__ import annotations

import numpy as np
import pytest

from segfusion.fusion import check_params, fuse
from segfusion.specs import SpecError
from segfusion.types import Instances, SemanticPrediction

from .helpers import street_classes


def _inputs():
    classes = street_classes()
    sem = SemanticPrediction(np.full((classes.num_classes, 2, 2), 1 / 6, np.float32), (2, 2))
    return Instances.empty((2, 2)), sem, classes


def test_check_params_names_the_default_key_path() -> None:
    # without ``where`` the key path is fusion.params.<method>
    with pytest.raises(SpecError, match=r"^fusion\.params\.kirillov\.bogus: unknown parameter"):
        check_params("kirillov", {"bogus": 1})
    # an explicit ``where`` replaces it
    with pytest.raises(SpecError, match=r"^cfg\.x\.bogus: unknown parameter"):
        check_params("kirillov", {"bogus": 1}, where="cfg.x")


@pytest.mark.parametrize("method", ["kirillov", "seamless", "jsis", "costea"])
def test_check_params_rejects_both_stuff_area_forms(method: str) -> None:
    with pytest.raises(SpecError, match=rf"^fusion\.params\.{method}: give stuff_area or stuff_area_fraction, not both$"):
        check_params(method, {"stuff_area": 10, "stuff_area_fraction": 0.1})


@pytest.mark.parametrize("params", [{"stuff_area": 10}, {"stuff_area_fraction": 0.1}, {}, {"stuff_area": None, "stuff_area_fraction": 0.2}])
def test_check_params_accepts_either_stuff_area_form(params: dict) -> None:
    # one form (or a None placeholder for the other) is fine and is returned as given
    out = check_params("jsis", params)
    assert out == {k: (float(v) if v is not None else None) for k, v in params.items()}


def test_fuse_reports_errors_under_the_method_name() -> None:
    inst, sem, classes = _inputs()
    # fuse checks its parameters under the key path "fusion <method>" (not fusion.params....)
    with pytest.raises(SpecError, match=r"^fusion costea\.bogus: unknown parameter"):
        fuse("costea", inst, sem, classes, bogus=1)
    # the not-both rule is check_params' (its message has no quotes around the method name)
    with pytest.raises(SpecError, match=r"^fusion jsis: give stuff_area or stuff_area_fraction, not both$"):
        fuse("jsis", inst, sem, classes, stuff_area=1, stuff_area_fraction=0.5)

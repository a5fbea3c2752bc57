"""Parameter and FLOP counts (models/efficiency.py), and torch staying out of the report path."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from segfusion.models.efficiency import count_parameters, efficiency_summary, forward_flops


def test_count_parameters_counts_frozen_and_shared_once():
    lin = nn.Linear(3, 4)  # 12 + 4
    lin.bias.requires_grad_(False)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(4, 2))  # shared lin + 8 + 2
    assert count_parameters(model) == 16 + 10


def test_forward_flops_of_a_convolution():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # one multiply-add per (output pixel, output channel, input channel, kernel tap) = 2 FLOPs
    assert forward_flops(conv, (16, 20)) == 2 * 8 * 3 * 9 * 16 * 20
    assert conv.training  # mode restored


class _WithPredict(nn.Module):
    """A model with the `predict(list of images, inference)` entry point of PanopticModel."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5, bias=False)
        self.seen: list[tuple[int, ...]] = []

    def predict(self, images, inference):
        assert inference.test_min_size == 128  # the InferenceSpec defaults
        self.seen.append(tuple(images[0].shape))
        x = images[0].mean(dim=(1, 2))[None].repeat(1, 2)[:, :4]
        return self.fc(x)


def test_forward_flops_uses_predict_and_checks_the_image():
    m = _WithPredict()
    image = np.zeros((6, 7, 3), np.uint8)
    assert forward_flops(m, (6, 7), image=image) == 2 * 4 * 5
    assert m.seen == [(3, 6, 7)]
    with pytest.raises(ValueError, match=r"expected \(3, 8, 7\)"):
        forward_flops(m, (8, 7), image=torch.zeros(3, 6, 7))
    s = efficiency_summary(m, (6, 7))
    assert s == {"parameters": 20, "flops": 40, "flops_image_hw": [6, 7]}


def test_report_and_evaluation_do_not_import_torch():
    code = (
        "import sys\n"
        "import segfusion.report.aggregate, segfusion.report.qualitative, segfusion.report.workflow_inputs\n"
        "import segfusion.evaluation, segfusion.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

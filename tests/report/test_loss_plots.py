"""Loss curves of the report: a stage trained for 0 iterations (stage 1 skipped for pretrained
weights, presets/cityscapes_imp.yaml) writes an empty loss CSV; the aggregate must not fail on it."""

import pytest

from segfusion.report.plots import plot_losses, read_loss_csv
from segfusion.training.loop import write_loss_csv


def test_empty_loss_csv_of_a_zero_iteration_stage_reads_as_no_rows(tmp_path):
    path = tmp_path / "stage1_loss.csv"
    write_loss_csv(path, [])  # what `segfusion train` writes after 0 iterations
    d = read_loss_csv(path)
    assert len(d) == 0 and "iteration" in d.columns


def test_plot_losses_with_a_zero_iteration_stage_next_to_a_trained_one(tmp_path):
    empty, trained = tmp_path / "stage1_loss.csv", tmp_path / "stage2_loss.csv"
    write_loss_csv(empty, [])
    write_loss_csv(trained, [{"iteration": i, "lr": 0.01, "loss": 2.0 - 0.1 * i, "loss_semantic": 1.0} for i in range(5)])
    curves = [{"model": "maskrcnn", "seed": 0, "stage": 1, "path": str(empty)},
              {"model": "panoptic_fpn", "seed": 0, "stage": 2, "path": str(trained)}]
    out = plot_losses(curves, tmp_path / "loss.png", "losses")
    assert out is not None and (tmp_path / "loss.png").stat().st_size > 0


def test_loss_csv_without_iteration_column_still_fails_naming_the_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="bad.csv: loss CSV without an 'iteration' column"):
        read_loss_csv(path)

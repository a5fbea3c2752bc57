"""The CLI: one subcommand per rule, torch only where needed, clear one-line errors."""

import subprocess
import sys

from segfusion.cli import build_parser, main

RULE_COMMANDS = {"synthesize", "convert", "validate-dataset", "dataset-stats", "train", "predict", "import-predictions", "fuse", "evaluate", "gather", "aggregate"}


def test_every_rule_has_a_subcommand():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert RULE_COMMANDS <= set(sub.choices)


def test_light_subcommands_do_not_import_torch():
    code = (
        "import sys; from segfusion import cli; import segfusion.fusion, segfusion.metrics, segfusion.evaluation, "
        "segfusion.io.fused, segfusion.report.aggregate, segfusion.datasets.registry, segfusion.inference.cache; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_are_one_line_and_name_the_file(tmp_path, capsys):
    rc = main(["fuse", "--cache", str(tmp_path / "missing.h5"), "--method", "kirillov", "--out", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert rc == 1 and "missing.h5" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = main(["gather", str(tmp_path / "nope.json"), "--out", str(tmp_path / "m.json")])
    assert rc == 1 and "nope.json" in capsys.readouterr().err


def test_spec_errors_are_one_line_before_any_file_is_read(tmp_path, capsys):
    """Bad --params fail on the key path before the (missing) inputs are opened."""
    missing = str(tmp_path / "missing.h5")
    cases = [
        (["fuse", "--cache", missing, "--method", "kirillov", "--params", '{"overlap_treshold": 0.4}', "--out", str(tmp_path / "f")],
         "fusion.params.kirillov.overlap_treshold: unknown parameter (did you mean overlap_threshold?)"),
        (["fuse", "--cache", missing, "--method", "jsis@score_threshold=2", "--out", str(tmp_path / "f")],
         "sweeps.jsis.score_threshold: 2 is not a number in [0, 1]"),
        (["fuse", "--cache", missing, "--method", "kirillov", "--params", '{"overlap_threshold": null}', "--out", str(tmp_path / "f")],
         "fusion.params.kirillov.overlap_threshold: null is not allowed"),
        (["predict", "--model", missing, "--data", missing, "--out", str(tmp_path / "c.h5"), "--params", '{"inference": {"box_score_thresh": 3}}'],
         "inference.box_score_thresh: 3 is not a number in [0, 1]"),
        (["predict", "--model", missing, "--data", missing, "--out", str(tmp_path / "c.h5"), "--params", '{"inferense": {}}'],
         "predict --params.inferense: unknown key (did you mean inference?)"),
        (["train", "--stage", "2", "--data", missing, "--params", '{"stage": {"schedule": {"lr": -1}}}', "--out", str(tmp_path / "m.pt"), "--run-dir", str(tmp_path)],
         "stage2.schedule.lr: -1 is not a number in [0, inf]"),
    ]
    for argv, message in cases:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert "missing.h5" not in err
    assert not (tmp_path / "f").exists() and not (tmp_path / "c.h5").exists()


def test_training_errors_are_one_line(tmp_path, capsys, street_canonical):
    """An unwritable --out fails before any iteration; a diverging run stops with the iteration."""
    import json

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    stage = {"schedule": {"iterations": 4, "lr": 1e12}, "batch_size": 2, "checkpoint_every": 2}
    params = json.dumps({"stage": stage, "architecture": {"min_size": [64], "max_size": 128}})
    argv = ["train", "--stage", "1", "--data", str(street_canonical), "--params", params, "--run-dir", str(tmp_path / "runs"), "--no-progress"]
    rc = main([*argv, "--out", str(blocker / "m.pt")])
    err = capsys.readouterr().err
    assert rc == 1 and f"{blocker}: --out is not writable" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # nothing ran
    rc = main([*argv, "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert rc == 1 and "non-finite loss at iteration" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.pt").exists()

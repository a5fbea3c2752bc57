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

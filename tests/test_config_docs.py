from pathlib import Path

from segfusion.config_docs import END, START, render, replace_block

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_reference_is_current():
    text = README.read_text()
    assert replace_block(text, render()) == text, "run: python -m segfusion.config_docs --write README.md"


def test_reference_lists_nested_keys():
    block = render()
    for key in ("`stage2.schedule.lr`", "`datasets.<name>.synthesize.flavour`", "`fusion.methods`", "`sweeps`"):
        assert key in block
    assert START not in block and END not in block

# segfusion: fuse semantic and instance segmentation, reproducibly.
# `snakemake --cores all` runs the whole chain on config.yaml (the embedded synthetic default).
from snakemake.utils import min_version

min_version("8.20")


# A preset given with --configfile replaces config.yaml entirely (no merge with the demo's datasets).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    split="[A-Za-z0-9_]+",
    model="[A-Za-z0-9_]+",
    seed="[0-9]+",
    fusion=sweeps.WILDCARD_PATTERN,
    i="[0-9]+",
    k="[0-9]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/fuse.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/integrity.smk"


rule all:
    default_target: True
    input:
        "results/summary/tables.md",
        all_dataset_stats(),
        # Every intermediate is a target, so a missing one is regenerated (integrity.smk).
        all_intermediates(),

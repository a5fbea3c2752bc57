# Aggregation: tidy metrics.csv, paper-style tables, the papers' claims (claims.md, claims.csv,
# plots/claims-*.png), plots and provenance.
# Besides the gathered metrics, the report reads the declared loss CSVs and, for the
# qualitative grid and the worst-images gallery, the canonical eval splits and fused shards.
from segfusion.report import workflow_inputs as report_inputs

REPORT_INPUTS = report_inputs.report_inputs(
    config, fusions_for, lambda m: MODEL_VARIANTS[m].trains_stage2
)
REPORT_PATHS = report_inputs.report_paths(
    config, fusions_for, lambda m: MODEL_VARIANTS[m].trains_stage2
)


rule aggregate:
    input:
        metrics=all_gathered_metrics(),
        losses=REPORT_PATHS["losses"],
        data=REPORT_PATHS["data"],
        fused=REPORT_PATHS["fused"],
    output:
        table=report(
            "results/summary/tables.md",
            category="Tables",
            caption="../report/tables.rst",
        ),
        csv=report(
            "results/summary/metrics.csv",
            category="Tables",
            caption="../report/metrics_csv.rst",
        ),
        per_image=report(
            "results/summary/per_image.csv",
            category="Tables",
            caption="../report/per_image.rst",
        ),
        plots=report(
            directory("results/summary/plots"),
            patterns=["{kind,[a-z_]+}-{name}.png", "{name,metrics_bars}.png"],
            category="Plots",
            subcategory=report_inputs.plot_subcategory,
            caption="../report/plots.rst",
        ),
        claims=report(
            "results/summary/claims.md",
            category="Claims",
            caption="../report/claims.rst",
        ),
        claims_csv=report(
            "results/summary/claims.csv",
            category="Claims",
            caption="../report/claims_csv.rst",
        ),
        provenance=report(
            "results/summary/provenance.json",
            category="Provenance",
            caption="../report/provenance.rst",
        ),
    log:
        "results/logs/aggregate.log",
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        p=lambda w: as_json({"config": config, "inputs": REPORT_INPUTS}),
    shell:
        "segfusion aggregate {input.metrics} --params {params.p:q} --out results/summary > {log} 2>&1"

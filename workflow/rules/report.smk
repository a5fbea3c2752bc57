# Aggregation: tidy metrics.csv, paper-style tables, plots and provenance.


rule aggregate:
    input:
        all_gathered_metrics(),
    output:
        table=report(
            "results/summary/tables.md",
            category="Tables",
            caption="../report/tables.rst",
        ),
        csv="results/summary/metrics.csv",
        plot=report(
            "results/summary/plots/metrics_bars.png",
            category="Plots",
            caption="../report/bars.rst",
        ),
        provenance="results/summary/provenance.json",
    log:
        "results/logs/aggregate.log",
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        p=lambda w: as_json({"config": config}),
    shell:
        "segfusion aggregate {input} --params {params.p:q} --out results/summary > {log} 2>&1"

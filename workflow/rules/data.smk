# Dataset generation (embedded synthetic data) and conversion to the canonical format.


rule synthesize:
    output:
        marker="results/raw/{dataset}/{split}.synthesized",
    log:
        "results/logs/synthesize/{dataset}/{split}.log",
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
        gpu=0,
    params:
        # Only this split's image count: another split's count never reruns this one.
        spec=lambda w: as_json(
            {
                **config["datasets"][w.dataset]["synthesize"],
                "num": config["datasets"][w.dataset]["synthesize"]["num"][w.split],
            }
        ),
        raw=lambda w: config["datasets"][w.dataset]["raw"],
        num=lambda w: config["datasets"][w.dataset]["synthesize"]["num"][w.split],
        size=lambda w: "x".join(
            map(str, config["datasets"][w.dataset]["synthesize"]["size"])
        ),
        flavour=lambda w: config["datasets"][w.dataset]["synthesize"]["flavour"],
        seed=lambda w: config["datasets"][w.dataset]["synthesize"]["seed"],
    shell:
        "segfusion synthesize --flavour {params.flavour} --out {params.raw} --split {wildcards.split}"
        " --num {params.num} --size {params.size} --seed {params.seed} > {log} 2>&1 && touch {output.marker}"


rule convert:
    input:
        raw_inputs,
    output:
        directory("results/{dataset}/data/{split}"),
    log:
        "results/logs/convert/{dataset}/{split}.log",
    conda:
        "../../envs/segfusion.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=120,
        gpu=0,
    params:
        fmt=lambda w: config["datasets"][w.dataset]["format"],
        raw=lambda w: config["datasets"][w.dataset]["raw"],
        options=lambda w: as_json(config["datasets"][w.dataset]["convert_options"]),
        skip_bad=lambda w: (
            "--skip-bad" if config["datasets"][w.dataset]["skip_bad"] else ""
        ),
    shell:
        "segfusion convert --format {params.fmt} --raw {params.raw} --split {wildcards.split} --out {output}"
        " --threads {threads} --params {params.options:q} {params.skip_bad} > {log} 2>&1"


rule dataset_stats:
    input:
        "results/{dataset}/data/{split}",
    output:
        directory("results/{dataset}/stats/{split}"),
    log:
        "results/logs/dataset_stats/{dataset}/{split}.log",
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    shell:
        "segfusion dataset-stats {input} --out {output} > {log} 2>&1"

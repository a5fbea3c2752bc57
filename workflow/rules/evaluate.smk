# Per-shard metric states, then one gathered metrics JSON per (model, seed, fusion, split).


rule evaluate:
    input:
        data="results/{dataset}/data/{split}",
        fused="results/{dataset}/fused/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}",
        cache=evaluate_cache,
        code=METRIC_SOURCES,
    output:
        "results/{dataset}/metrics/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.json",
    log:
        "results/logs/evaluate/{dataset}/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.tsv"
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=0,
    params:
        p=lambda w: as_json(config["evaluate"]),
    shell:
        "segfusion evaluate --data {input.data} --fused {input.fused} --cache {input.cache}"
        " --params {params.p:q} --out {output} > {log} 2>&1"


rule gather:
    input:
        lambda w: expand(
            "results/{{dataset}}/metrics/{{model}}/seed{{seed}}/{{fusion}}/{{split}}/shard-{i}-of-{k}.json",
            i=range(SHARDS),
            k=SHARDS,
        ),
    output:
        "results/{dataset}/metrics/{model}/seed{seed}/{fusion}/{split}.json",
    log:
        "results/logs/gather/{dataset}/{model}/seed{seed}/{fusion}/{split}.log",
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=0,
    params:
        meta=lambda w: as_json(
            {
                "dataset": w.dataset,
                "model": w.model,
                "seed": int(w.seed),
                "fusion": w.fusion,
                "split": w.split,
            }
        ),
    shell:
        "segfusion gather {input} --meta {params.meta:q} --out {output} > {log} 2>&1"

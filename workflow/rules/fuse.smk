# Every fusion method on the cached predictions (no torch, no retraining).


rule fuse:
    input:
        cache="results/{dataset}/predictions/{model}/seed{seed}/{split}/shard-{i}-of-{k}.h5",
        code=FUSION_SOURCES,
    output:
        directory(
            "results/{dataset}/fused/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}"
        ),
    log:
        "results/logs/fuse/{dataset}/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.log",
    benchmark:
        "results/benchmarks/fuse/{dataset}/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.tsv"
    conda:
        "../../envs/segfusion.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
        gpu=0,
    params:
        p=fusion_params,
    shell:
        "segfusion fuse --cache {input.cache} --method {wildcards.fusion:q} --params {params.p:q} --out {output} > {log} 2>&1"

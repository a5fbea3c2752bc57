# Every fusion method on the cached predictions (no torch, no retraining); a pair (config
# `pairs`) fuses the instances of one model's cache with the semantic output of another's.


rule fuse:
    input:
        unpack(fuse_inputs),
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
        # A pair: the instances of --cache with the semantic output of --semantic-cache.
        semantic=lambda w, input: (
            f"--semantic-cache {input.semantic_cache}"
            if "semantic_cache" in input.keys()
            else ""
        ),
    shell:
        "segfusion fuse --cache {input.cache} {params.semantic} --method {wildcards.fusion:q} --params {params.p:q}"
        " --out {output} > {log} 2>&1"

# Every fusion method on the cached predictions (no torch, no retraining).


def fusion_params(w):
    p = dict(config["fusion"]["params"].get(w.fusion, {}))
    if w.fusion == "semantic" and MODEL_VARIANTS[w.model].head == "none":
        # maskrcnn_imp: the canvas is not a distribution; low maxima are background (void).
        p.setdefault("background_threshold", config["fusion"]["canvas_background_threshold"])
    return as_json(p)


rule fuse:
    input:
        "results/{dataset}/predictions/{model}/seed{seed}/{split}/shard-{i}-of-{k}.h5",
    output:
        directory("results/{dataset}/fused/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}"),
    params:
        p=fusion_params,
    log:
        "results/logs/fuse/{dataset}/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.log",
    benchmark:
        "results/benchmarks/fuse/{dataset}/{model}/seed{seed}/{fusion}/{split}/shard-{i}-of-{k}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "segfusion fuse --cache {input} --method {wildcards.fusion} --params {params.p:q} --out {output} > {log} 2>&1"

# Inference into the HDF5 prediction cache, one job per shard (scatter).


rule predict:
    input:
        model=model_file,
        data="results/{dataset}/data/{split}",
    output:
        "results/{dataset}/predictions/{model}/seed{seed}/{split}/shard-{i}-of-{k}.h5",
    log:
        "results/logs/predict/{dataset}/{model}/seed{seed}/{split}/shard-{i}-of-{k}.log",
    benchmark:
        "results/benchmarks/predict/{dataset}/{model}/seed{seed}/{split}/shard-{i}-of-{k}.tsv"
    conda:
        "../../envs/segfusion.yaml"
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    params:
        p=as_json({"predict": config["predict"], "inference": config["inference"]}),
        shard=lambda w: f"{w.i}/{w.k}",
    shell:
        "segfusion predict --model {input.model} --data {input.data} --out {output} --shard {params.shard}"
        " --params {params.p:q} --threads {threads} > {log} 2>&1"

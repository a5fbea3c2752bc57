# Stage 1 (Mask R-CNN, shared by every variant with a detector) and stage 2 (semantic / IMP heads).
# Run directories (checkpoints, loss.csv, loss.png) are NOT declared outputs: Snakemake never
# deletes them, so a killed job resumes from its last checkpoint when the workflow restarts.


rule train_stage1:
    input:
        data=lambda w: f"results/{w.dataset}/data/{config['datasets'][w.dataset]['train_split']}",
    output:
        model="results/{dataset}/models/maskrcnn/seed{seed}/stage1.pt",
        loss="results/{dataset}/models/maskrcnn/seed{seed}/stage1_loss.csv",
    log:
        "results/logs/train/{dataset}/maskrcnn/seed{seed}/stage1.log",
    benchmark:
        "results/benchmarks/train/{dataset}/maskrcnn/seed{seed}/stage1.tsv"
    conda:
        "../../envs/segfusion.yaml"
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=0,
    params:
        p=lambda w: stage_params("stage1", seed=w.seed),
        run_dir="results/{dataset}/runs/maskrcnn/seed{seed}",
    shell:
        "segfusion train --stage 1 --data {input.data} --params {params.p:q} --out {output.model} --loss-csv {output.loss}"
        " --run-dir {params.run_dir} --threads {threads} > {log} 2>&1"


rule train_stage2:
    input:
        data=lambda w: f"results/{w.dataset}/data/{config['datasets'][w.dataset]['train_split']}",
        init="results/{dataset}/models/maskrcnn/seed{seed}/stage1.pt",
    output:
        model="results/{dataset}/models/{model}/seed{seed}/stage2.pt",
        loss="results/{dataset}/models/{model}/seed{seed}/stage2_loss.csv",
    log:
        "results/logs/train/{dataset}/{model}/seed{seed}/stage2.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}/seed{seed}/stage2.tsv"
    conda:
        "../../envs/segfusion.yaml"
    threads: config["threads"]
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=0,
    params:
        p=lambda w: stage_params("stage2", MODEL_VARIANTS[w.model], seed=w.seed),
        run_dir="results/{dataset}/runs/{model}/seed{seed}",
    shell:
        "segfusion train --stage 2 --data {input.data} --init {input.init} --params {params.p:q} --out {output.model} --loss-csv {output.loss}"
        " --run-dir {params.run_dir} --threads {threads} > {log} 2>&1"

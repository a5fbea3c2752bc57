# Stage 1 (Mask R-CNN, shared by every variant with a detector) and stage 2 (semantic / IMP heads).
# With `shared_stage1: true` only the first seed's stage 1 is trained and every seed's stage 2
# (and maskrcnn_imp) starts from it (`stage1_file` in common.smk); otherwise one per seed.
# Run directories (checkpoints, loss.csv, loss.png, val.csv, val.png, best.pt) are NOT declared
# outputs: Snakemake never deletes them, so a killed job resumes from its last checkpoint when
# the workflow restarts.
#
# Launcher (config `train`): one process, or torchrun with nproc_per_node data-parallel
# processes (DDP); with nnodes > 1, srun starts one torchrun per node of the SLURM job and they
# meet at the first node (c10d rendezvous). The launcher is not part of the run hash.
TRAIN = config["train"]
if TRAIN["launcher"] == "none":
    TRAIN_LAUNCH = "segfusion"
elif TRAIN["nnodes"] == 1:
    TRAIN_LAUNCH = (
        f"torchrun --standalone --nproc_per_node {TRAIN['nproc_per_node']}"
        " -m segfusion.cli"
    )
else:
    TRAIN_LAUNCH = (
        f"srun --nodes {TRAIN['nnodes']} --ntasks-per-node 1"
        f" torchrun --nnodes {TRAIN['nnodes']} --nproc_per_node {TRAIN['nproc_per_node']}"
        " --rdzv_backend c10d --rdzv_id $SLURM_JOB_ID --rdzv_endpoint"
        f" $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):{TRAIN['rdzv_port']}"
        " -m segfusion.cli"
    )
TRAIN_FLAGS = (
    f"--backend {TRAIN['backend']} --device {TRAIN['device']}"
    + (
        ""
        if TRAIN["data_workers"] is None
        else f" --data-workers {TRAIN['data_workers']}"
    )
    + (" --find-unused-parameters" if TRAIN["find_unused_parameters"] else "")
)


rule train_stage1:
    input:
        data=lambda w: f"results/{w.dataset}/data/{config['datasets'][w.dataset]['train_split']}",
        val=lambda w: (
            f"results/{w.dataset}/data/{validation_split(config['datasets'][w.dataset])}"
            if config["stage1"]["validate_every"] is not None
            else []
        ),
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
        launch=TRAIN_LAUNCH,
        flags=TRAIN_FLAGS,
        val=lambda w, input: f"--val-data {input.val}" if input.val else "",
        rank_threads=lambda w, threads: max(1, threads // TRAIN["nproc_per_node"]),
    shell:
        "{params.launch} train --stage 1 --data {input.data} {params.val} --params {params.p:q} --out {output.model}"
        " --loss-csv {output.loss} --run-dir {params.run_dir} --threads {params.rank_threads} {params.flags}"
        " > {log} 2>&1"


rule train_stage2:
    input:
        data=lambda w: f"results/{w.dataset}/data/{config['datasets'][w.dataset]['train_split']}",
        init=lambda w: stage1_file(w.dataset, w.seed),
        val=lambda w: (
            f"results/{w.dataset}/data/{validation_split(config['datasets'][w.dataset])}"
            if config["stage2"]["validate_every"] is not None
            else []
        ),
    output:
        model="results/{dataset}/models/{model}/seed{seed}/stage2.pt",
        loss="results/{dataset}/models/{model}/seed{seed}/stage2_loss.csv",
    log:
        "results/logs/train/{dataset}/{model}/seed{seed}/stage2.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{model}/seed{seed}/stage2.tsv"
    conda:
        "../../envs/segfusion.yaml"
    threads: TRAIN["stage2_threads"] or config["threads"]
    resources:
        mem_mb=4000,
        runtime=600,
        gpu=0,
    params:
        p=lambda w: stage_params("stage2", w.model, seed=w.seed),
        run_dir="results/{dataset}/runs/{model}/seed{seed}",
        launch=TRAIN_LAUNCH,
        flags=TRAIN_FLAGS,
        val=lambda w, input: f"--val-data {input.val}" if input.val else "",
        rank_threads=lambda w, threads: max(1, threads // TRAIN["nproc_per_node"]),
    shell:
        "{params.launch} train --stage 2 --data {input.data} --init {input.init} {params.val} --params {params.p:q}"
        " --out {output.model} --loss-csv {output.loss} --run-dir {params.run_dir} --threads {params.rank_threads}"
        " {params.flags} > {log} 2>&1"

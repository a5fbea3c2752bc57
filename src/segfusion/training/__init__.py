"""Two-stage training: loop and schedule (`loop`), checkpoints and model files (`checkpoint`),
data-parallel training under torchrun (`distributed`), validation with keep-best
(`validation`) and local pretrained weights (`pretrained`)."""

"""Short names of the run-config keys a run is most often given: the CLI's ``finetune`` / ``pretrain`` flags and
``robustft.finetune``'s keywords. Free of torch, so building the CLI parser (``robustft --help``) stays fast."""

__all__ = ["SHORTCUTS"]

SHORTCUTS = {"method": "method", "data": "data.name", "arch": "model.arch", "checkpoint": "model.checkpoint",
             "init_head": "model.init_head", "peft": "method_args.peft", "module": "method_args.module",
             "epochs": "train.epochs", "seed": "train.seed", "device": "train.device", "name": "train.name",
             "out_dir": "train.out_dir", "lr": "optim.lr", "batch_size": "data.batch_size", "eps": "attack.eps"}

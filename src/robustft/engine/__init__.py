"""The training engine: config, the one loop, checkpoint/resume, DDP, and whole runs."""

from .config import (
                     AttackConfig,
                     DataConfig,
                     EvalConfig,
                     ModelConfig,
                     RunConfig,
                     TrainConfig,
                     apply_overrides,
                     from_dict,
                     load_config,
                     to_dict,
)
from .distributed import DistInfo, init_distributed
from .optim import OptimConfig, build_optimizer, build_scheduler, lr_factor
from .run import (
                  build_source_model,
                  default_run_dir,
                  export_model,
                  load_run_model,
                  run,
                  source_config,
)
from .train import FitResult, fit

__all__ = ["RunConfig", "DataConfig", "ModelConfig", "AttackConfig", "EvalConfig", "TrainConfig", "OptimConfig",
           "load_config", "apply_overrides", "from_dict", "to_dict", "build_optimizer", "build_scheduler", "lr_factor",
           "DistInfo", "init_distributed", "fit", "FitResult", "run", "default_run_dir", "build_source_model",
           "source_config", "export_model", "load_run_model"]

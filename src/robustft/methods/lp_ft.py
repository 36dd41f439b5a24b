"""LP-FT (Kumar et al. 2022): linear probe first, then fine-tune everything from the probed head."""

from dataclasses import dataclass, field

from .base import Method, MethodConfig, Stage, register_method
from .linear_probe import LinearProbe

__all__ = ["LpFt", "LpFtConfig"]


@dataclass
class LpFtConfig(MethodConfig):
    """The fine-tuning stage's objective is ``objective``; the probe stage has its own and its own budget."""

    lp_objective: str = field(default="pgd", metadata={"help": "probe objective: clean | pgd | trades"})
    lp_epochs: int = field(default=5, metadata={"help": "epochs of the linear-probe stage", "ge": 1})
    lp_lr: float = field(default=0.01, metadata={"help": "learning rate of the linear-probe stage", "gt": 0})


class LpFt(Method):
    """Two stages: ``lp`` (head only) then ``ft`` (everything), the second starting from the first's best head."""

    config_cls = LpFtConfig

    def stages(self) -> list[Stage]:
        """Probe, then fine-tune."""
        probe_cfg = MethodConfig(objective=self.cfg.lp_objective, beta=self.cfg.beta)
        return [Stage("lp", LinearProbe(probe_cfg, self.attack),
                      {"train.epochs": self.cfg.lp_epochs, "optim.lr": self.cfg.lp_lr},
                      epochs_key="method_args.lp_epochs"),
                Stage("ft", Method(MethodConfig(objective=self.cfg.objective, beta=self.cfg.beta), self.attack))]


register_method("lp_ft", LpFt, objective="pgd")

"""RoLI (Hua et al., CVPR 2024, "Initialization Matters for Adversarial Transfer Learning") and its RanLI baselines.

Stage ``lp`` is adversarial linear probing: the backbone is frozen and stays in eval mode (fixed BN statistics), a
fresh head trains on PGD examples attacked through the whole model, and the engine keeps the epoch with the best
validation robust accuracy. Stage ``ft`` is adversarial fine-tuning that starts from that head, with one of four
parameter sets (``peft``): ``full`` (everything), ``bias`` (every module's ``bias`` + the head), ``lora`` (rank-r
updates of attention q/v, or of every conv of a CNN, + the head) or ``adapter`` (bottleneck adapters after every MLP or
residual block + the head). LoRA and adapters start as the identity, so stage ``ft`` begins with exactly the
function stage ``lp`` selected. ``lora_init: official`` / ``adapter_init: official`` reproduce the official
initializations (every LoRA matrix zero; every adapter weight and bias zero), under which only the head (and the
adapters' up-projection bias) ever learns: the variants behind the published RoLI-LoRA / RoLI-Adapter numbers. ``init: random`` (registered as ``ranli``) skips the probe: the RanLI baseline
fine-tunes from a random head. A head given by the run's ``model.init_head`` (e.g. an earlier probe, ``RUN_DIR:lp``)
replaces the probe stage. ``lp_ft`` (Kumar et al. 2022) is this method with ``peft: full`` and its own probe
defaults: the one implementation of probe-then-fine-tune.

Modes in stage ``ft``, as the official code (which calls ``enc.eval()`` for every transfer type but end-to-end):
``full`` trains in train mode (BN statistics adapt, stochastic depth and dropout act); ``bias``, ``lora`` and
``adapter`` keep everything but the head in eval mode (source BN statistics, no stochastic depth, no dropout — so no
LoRA dropout either, which never acts in the official code). ``head_init: official`` re-initializes the head as the
official code builds it (Kaiming-normal fan-out weight, bias −log 99). Export: LoRA is merged into the weights (a
plain model of the source architecture); adapters cannot be merged (a nonlinearity sits between their projections), so
the exported state dict keeps them (``...base_layer...`` / ``...adapter.{down,up}...`` keys) and
``export_architecture`` rebuilds that structure.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from torch import nn

from ..attacks import PGD
from ..errors import UserError
from .base import Method, Objective, ObjectiveConfig, RunContext, Stage, register_method
from .linear_probe import LinearProbe
from .peft import (adapter_modules, add_adapters, add_lora, bias_parameters, lora_layers, lora_parameters,
                   merge_lora)

__all__ = ["RoLI", "RoLIConfig", "PEFT_VARIANTS", "official_head_init"]

Peft = Literal["full", "bias", "lora", "adapter"]
PEFT_VARIANTS: tuple[str, ...] = get_args(Peft)
HEAD_PRIOR = 0.01  # the official head's bias starts at the logit of this class probability (a focal-loss prior)


def official_head_init(head: nn.Linear) -> None:
    """The official RoLI head init: Kaiming-normal weight (fan-out, std sqrt(2 / out)), bias −log((1 − π) / π)."""
    nn.init.kaiming_normal_(head.weight, mode="fan_out")
    nn.init.constant_(head.bias, -math.log((1 - HEAD_PRIOR) / HEAD_PRIOR))


@dataclass
class RoLIConfig(ObjectiveConfig):
    """RoLI options. The probe stage has its own optimizer settings; the fine-tuning stage uses the run's ``optim``."""

    peft: Peft = field(default="full", metadata={
        "help": "what stage ft trains: everything, every bias, LoRA updates or adapters (the last three + the head)"})
    init: Literal["roli", "random"] = field(default="roli", metadata={
        "help": "roli: stage 2 starts from the adversarially probed head; random: RanLI (no probe stage)"})
    head_init: Literal["default", "official"] = field(default="default", metadata={
        "help": "the head training starts from (stage lp; RanLI: stage ft): default: the one the engine built (a "
                "fresh nn.Linear, or the source's kept head); official: re-initialized as the official code does "
                "(Kaiming-normal fan-out weight, bias -log 99)"})
    lp_objective: Objective | None = field(default=None, metadata={
        "help": "objective of the probing stage (default: the run's objective, as RoLI probes adversarially)"})
    lp_epochs: int = field(default=20, metadata={
        "help": "epochs of the adversarial linear-probing stage lp (train.epochs / --epochs sets stage ft)", "ge": 1})
    lp_lr: float = field(default=0.05, metadata={
        "help": "peak learning rate of the probing stage (scaled by optim.lr_scale_batch like optim.lr)", "gt": 0})
    lp_optimizer: Literal["sgd", "adamw"] | None = field(default="sgd", metadata={
        "help": "optimizer of the probing stage (paper: sgd; null: the run's optim.name)"})
    lp_weight_decay: float | None = field(default=0.01, metadata={
        "help": "weight decay of the probing stage (head weight only; its bias is not decayed, as in the official "
                "code; null: the run's optim.weight_decay)", "ge": 0})
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank r", "ge": 1})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA α (updates are scaled by α / r)", "gt": 0})
    adapter_reduction: int = field(default=8, metadata={"help": "adapter bottleneck width = width // reduction",
                                                        "ge": 1})
    lora_init: Literal["kaiming", "official"] = field(default="kaiming", metadata={
        "help": "kaiming: A Kaiming-uniform, B zero (a LoRA that learns; recommended); official: A and B zero, as the "
                "official ZEROINIT: True, so their gradients stay zero and only the head trains (reproduces the "
                "published RoLI-LoRA numbers)"})
    adapter_init: Literal["standard", "official"] = field(default="standard", metadata={
        "help": "standard: down-projection Kaiming-uniform, up-projection zero (an adapter that learns; recommended); "
                "official: every adapter weight and bias zero, as the official code, so only up.bias (and the head) "
                "ever changes (reproduces the published RoLI-Adapter numbers)"})


class RoLI(Method):
    """Adversarial linear probing (stage ``lp``), then adversarial fine-tuning of the chosen parameters (``ft``)."""

    config_cls = RoLIConfig
    needs_structure = ("it probes and trains the classifier, found by get_classifier(), and puts LoRA / adapters "
                       "where pretrained_cfg declares")

    def __init__(self, cfg: RoLIConfig, attack: PGD | None = None) -> None:
        super().__init__(cfg, attack)
        self.head_given = False  # set by setup: model.init_head already holds a probed head, so no probe stage

    # -- stages ------------------------------------------------------------------------------------------------
    def setup(self, model: nn.Module, ctx: RunContext) -> None:
        """A head given by ``model.init_head`` (e.g. an earlier probe, ``RUN_DIR:lp``) replaces the probe stage;
        ``head_init: official`` re-initializes the engine's head."""
        self.head_given = ctx.cfg.model.init_head is not None
        if self.head_given and self.cfg.init == "random":
            raise UserError("ranli (RanLI) fine-tunes from a random head, but model.init_head gives it one: use "
                            "roli, or drop model.init_head")
        if self.head_given and self.cfg.head_init == "official":
            raise UserError("method_args.head_init=official re-initializes the head, but model.init_head gives one: "
                            "drop one of them")
        if self.head_given:
            ctx.log(f"roli: stage ft starts from the head of {ctx.cfg.model.init_head} (no probe stage)")
        if self.cfg.head_init == "official":
            official_head_init(model.get_classifier())
            ctx.log("roli: head re-initialized as the official code does (Kaiming-normal fan-out weight, bias "
                    "-log 99)")

    def probe(self) -> LinearProbe:
        """The stage-1 method: head only, backbone in eval mode, the probe objective (default: stage 2's)."""
        return LinearProbe(ObjectiveConfig(objective=self.cfg.lp_objective or self.cfg.objective, beta=self.cfg.beta),
                           self.attack)

    def stages(self) -> list[Stage]:
        """``lp`` then ``ft``; only ``ft`` for RanLI or when the probed head comes from an earlier run."""
        finetune = Stage("ft", self)
        if self.cfg.init == "random" or self.head_given:
            return [finetune]
        overrides: dict[str, Any] = {"optim.name": self.cfg.lp_optimizer, "optim.lr": self.cfg.lp_lr,
                                     "optim.weight_decay": self.cfg.lp_weight_decay,
                                     "train.epochs": self.cfg.lp_epochs,
                                     # only the head trains: this exempts its bias from weight decay, as the
                                     # official SGD path does
                                     "optim.no_decay_norm_bias": True}
        overrides = {k: v for k, v in overrides.items() if v is not None}  # None: the run's own value
        return [Stage("lp", self.probe(), overrides, epochs_key="method_args.lp_epochs"), finetune]

    # -- stage 2 -----------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Attach the PEFT layers (identity at first) and set which parameters train; the head always trains."""
        peft = self.cfg.peft
        if peft == "full":
            return model.requires_grad_(True)
        if peft == "lora":
            add_lora(model, self.cfg.lora_rank, self.cfg.lora_alpha)
            if self.cfg.lora_init == "official":
                for p in lora_parameters(model):
                    nn.init.zeros_(p)
        elif peft == "adapter":
            add_adapters(model, self.cfg.adapter_reduction)
            if self.cfg.adapter_init == "official":
                for p in (p for m in adapter_modules(model) for p in m.parameters()):
                    nn.init.zeros_(p)
        model.requires_grad_(False)
        if peft == "bias":
            trained = bias_parameters(model)
            if not trained:
                raise UserError(f"bias tuning: {type(model).__name__} has no bias parameters")
            for p in trained:
                p.requires_grad_(True)
        for m in lora_layers(model):
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
        for m in adapter_modules(model):
            m.requires_grad_(True)
        model.get_classifier().requires_grad_(True)
        return model

    def train_mode(self, model: nn.Module) -> None:
        """``full``: train mode (end-to-end); the frozen-encoder variants: all but the head in eval, as official."""
        model.train(self.cfg.peft == "full")
        model.get_classifier().train()

    def finalize(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """LoRA merged into the weights (plain source architecture); adapters stay (they cannot be merged)."""
        return merge_lora(model) if self.cfg.peft == "lora" else model

    def export_architecture(self, model: nn.Module) -> nn.Module:
        """Give a freshly built source-architecture model the structure ``finalize`` exports, so the exported state
        dict loads strictly into it (adapters; nothing for the other variants)."""
        if self.cfg.peft == "adapter":
            add_adapters(model, self.cfg.adapter_reduction)
        return model


register_method("roli", RoLI, init="roli")
register_method("ranli", RoLI, init="random")
# LP-FT: probe (objective pgd by default, the run's optimizer), then fine-tune everything
register_method("lp_ft", RoLI, init="roli", peft="full", lp_objective="pgd", lp_epochs=5, lp_lr=0.01,
                lp_optimizer=None, lp_weight_decay=None)

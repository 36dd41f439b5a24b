"""AutoLoRa (Xu, Zhang, Kankanhalli, ICLR 2024): adversarial full fine-tuning with a low-rank branch for the natural
objective, automatic loss weights and an automatic learning-rate schedule.

The model gets a LoRA branch (W + s·BA on every convolution inside the residual blocks of a CNN, or on the q/v rows
of every fused qkv of a transformer) that is **on only in the natural forward**. One step:

    x_adv = PGD(plain backbone + head, x)                       (CE attack, branch off)
    z_nat = f_{W+sBA}(x),  z_adv = f_W(x_adv)
    L = λ1·CE(z_nat, y) + (1 − λ1)·CE(z_adv, y) + λ2·KL(p_nat ‖ p_adv)     (KL summed, divided by the batch size)

with gradient routing: the natural forward sees only the LoRA matrices and the head as trainable, the adversarial
forward everything but the LoRA matrices (backbone weights, BN affine, head). So CE(z_nat) and the p_nat side of the
KL train LoRA + head; CE(z_adv) and the p_adv side train backbone + BN + head. Both forwards run in train mode (BN
statistics follow both). λ1 = 1 − acc and λ2 = β·acc (β = 6), with acc the clean accuracy of the branch-on model on
the training split, measured at the start of every epoch. The automatic schedule (Auto-PGD's step-size rule on the
SGD lr, monitored on validation robust accuracy) halves the lr at a checkpoint epoch when fewer than ρ = 75 % of the
epoch-over-epoch changes since the previous checkpoint improved, or when the best value did not improve since it; on
each halving the engine continues from the best validation weights, and the stage ends once the lr falls below a
floor. Validation, test and the export use the plain backbone + head: the branch is dropped, not merged.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD
from ..data import ArrayDataset
from ..errors import UserError
from ..eval import evaluate
from .base import EpochDecision, Method, MethodConfig, Objective, RunContext, Stage, register_method
from .peft import (LoRAConv2d, _declared, _like, _replace, add_lora, lora_enabled, lora_layers, lora_parameters,
                   remove_lora)

__all__ = ["AutoLoRa", "AutoLoRaConfig", "LoRALibConv2d", "add_official_lora", "loss_weights", "lr_decays",
           "auto_lr_decision"]


@dataclass
class AutoLoRaConfig(MethodConfig):
    """AutoLoRa options: the LoRA branch, the automatic loss weights and the automatic lr schedule (defaults: the
    official high-resolution pipeline)."""

    # fixed: the training attack is cross-entropy PGD on the plain backbone (the loss is AutoLoRa's own)
    objective: ClassVar[Objective] = "pgd"
    beta: float = field(default=6.0, metadata={
        "help": "λ2 = beta × the branch's clean training accuracy: the KL weight's scale (official: 6)", "ge": 0})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r (official r_nat: 8)", "ge": 1})
    lora_alpha: float = field(default=1.0, metadata={
        "help": "LoRA α: the update is scaled by α / r (official: 1, i.e. 1/8)", "gt": 0})
    lora_init: Literal["official", "kaiming"] = field(default="official", metadata={
        "help": "LoRA A init (B starts at zero either way): official: N(0, 1) (loralib's conv init, as the official "
                "code); kaiming: Kaiming-uniform (peft's, as RoLI)"})
    attach: Literal["blocks", "all"] = field(default="blocks", metadata={
        "help": "CNNs: blocks: every conv inside the model's declared residual blocks (block convs and projection "
                "shortcuts, not the stem; the official 32-px placement); all: every conv. Transformers: the q and v "
                "rows of every fused qkv either way"})
    lora_layout: Literal["standard", "official"] = field(default="standard", metadata={
        "help": "standard: rank-r conv LoRA where attach says (recommended); official: the official high-resolution "
                "code's branch, which reproduces its numbers: only the convs of the last residual block of each "
                "stage (12 in a ResNet-50), each with loralib's factorization (A [r·k, in·k], B [out·k, r·k], "
                "kernel update of rank up to r·k² as an [out, in·k²] matrix); CNNs only"})
    acc_n: int | None = field(default=None, metadata={
        "help": "training images (evenly spaced) whose clean accuracy sets λ each epoch (null: the whole split)",
        "ge": 1})
    auto_lr: bool = field(default=True, metadata={
        "help": "the automatic lr schedule (it replaces optim.schedule and warm-up); false: the run's schedule"})
    lr: float | None = field(default=None, metadata={
        "help": "initial lr (official: 0.01 at 224 px, 0.1 at 32 px; scaled by optim.lr_scale_batch like optim.lr; "
                "null: the run's optim.lr)", "gt": 0})
    lr_window: int = field(default=4, metadata={
        "help": "epochs between schedule checkpoints: they fall after epochs window+1, 2·window+1, ... (official: 4)",
        "ge": 1})
    lr_checkpoints: list[int] | None = field(default=None, metadata={
        "help": "explicit checkpoints instead of lr_window: 0-based epoch indices starting at 0, increasing (the "
                "official 32-px list is [0, 16, 24, 28, 36, 40, 42, 44, 46, 48, 50])", "ge": 0})
    lr_rho: float = field(default=0.75, metadata={
        "help": "ρ: the lr decays at a checkpoint when fewer than ρ × window epoch-over-epoch changes of validation "
                "robust accuracy since the previous checkpoint were improvements (official: 0.75)", "gt": 0, "le": 1})
    lr_decay: float = field(default=0.5, metadata={"help": "factor of each decay (official: 1/2)", "gt": 0, "lt": 1})
    lr_floor: float = field(default=1e-5, metadata={
        "help": "the stage stops once the lr falls below this (official 224 px: 1e-5; 0: never)", "ge": 0})

    def __post_init__(self) -> None:
        if self.lora_layout == "official" and self.attach != "blocks":
            raise UserError("method_args.lora_layout=official places the branch itself (the last residual block of "
                            "each stage): drop method_args.attach")
        points = self.lr_checkpoints
        if points is not None and (not points or points[0] != 0 or sorted(set(points)) != points):
            raise UserError(f"method_args.lr_checkpoints must start at 0 and increase, got {points}")


class LoRALibConv2d(LoRAConv2d):
    """The official AutoLoRa conv LoRA (loralib's ``ConvLoRA``): A ``[r·k, in·k]``, B ``[out·k, r·k]``, and the
    kernel update ``(B·A)`` reshaped to ``[out, in, k, k]``, times α/r. As an ``[out, in·k²]`` matrix the update has
    rank up to r·k² (72 for a 3x3 conv at r = 8), against r for ``LoRAConv2d``; 1x1 convs get ordinary LoRA."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__(base, rank, alpha)
        k = base.kernel_size[0]
        if base.kernel_size != (k, k):
            raise UserError(f"loralib conv LoRA needs a square kernel, got {base.kernel_size}")
        self.lora_A = _like(nn.Linear(base.in_channels * k, rank * k, bias=False), base.weight)
        self.lora_B = _like(nn.Linear(rank * k, base.out_channels * k, bias=False), base.weight)
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> torch.Tensor:
        """The kernel update: (B [out·k, r·k] @ A [r·k, in·k]) viewed as the base kernel, times α/r."""
        w = self.base_layer.weight
        return (self.lora_B.weight @ self.lora_A.weight).view(w.shape) * self.scaling


def add_official_lora(model: nn.Module, rank: int, alpha: float) -> list[nn.Module]:
    """The official high-resolution branch: ``LoRALibConv2d`` on every conv of the last residual block of each stage
    (the official ``SequentialWithArgs`` passes the branch switch to a stage's last block only; that block has no
    projection shortcut). Stages are the parents of the model's declared residual blocks."""
    if existing := lora_layers(model):
        return existing
    last: dict[str, tuple[str, nn.Module]] = {}
    for name, block, point in _declared(model, model.pretrained_cfg.adapter_points):
        if point.channels:
            last[name.rpartition(".")[0]] = (name, block)
    if not last:
        raise UserError(f"method_args.lora_layout=official is the official ResNet placement (the last residual block "
                        f"of each stage), but {type(model).__name__} declares no residual block")
    _replace(model, [(f"{name}.{n}", LoRALibConv2d(m, rank, alpha)) for name, block in last.values()
                     for n, m in block.named_modules() if type(m) is nn.Conv2d])
    return lora_layers(model)


def loss_weights(natural_acc: float, beta: float) -> tuple[float, float]:
    """(λ1, λ2) = (1 − acc, β·acc): a weak natural branch weighs its own CE more, a strong one the KL term."""
    return 1.0 - natural_acc, beta * natural_acc


def _previous_checkpoint(i: int, window: int, checkpoints: Sequence[int] | None) -> int | None:
    """The checkpoint before epoch index ``i`` when ``i`` is a checkpoint other than the first, else None."""
    if checkpoints is None:
        return i - window if i > 0 and i % window == 0 else None
    k = checkpoints.index(i) if i in checkpoints else 0
    return checkpoints[k - 1] if k > 0 else None


def lr_decays(accs: Sequence[float], window: int = 4, rho: float = 0.75,
              checkpoints: Sequence[int] | None = None) -> bool:
    """Whether the lr decays after the epoch of 0-based index ``len(accs) - 1``, ``accs`` being the validation robust
    accuracy after each epoch so far (Auto-PGD's rule, as the official code applies it).

    At a checkpoint c_k (k ≥ 1; every ``window`` epochs, or the explicit ``checkpoints``) it decays when
    - fewer than ρ·(c_k − c_{k−1}) of the changes accs[j] → accs[j+1], c_{k−1} ≤ j < c_k, were increases, or
    - (from the second checkpoint on) no epoch after c_{k−1} reached a new best.
    Auto-PGD's second condition also asks that the previous checkpoint did not decay; the official code's bookkeeping
    makes that always true (after the first checkpoint), so it is left out here as there.
    """
    i = len(accs) - 1
    prev = _previous_checkpoint(i, window, checkpoints)
    if prev is None:
        return False
    increases = sum(accs[j + 1] > accs[j] for j in range(prev, i))
    if increases < rho * (i - prev):
        return True
    first = _previous_checkpoint(prev, window, checkpoints) is None
    return not first and max(accs[prev + 1:i + 1]) <= max(accs[:prev + 1])


def auto_lr_decision(accs: Sequence[float], lr: float, cfg: AutoLoRaConfig) -> EpochDecision:
    """After an epoch trained at ``lr``: on a decay, scale the lr and continue from the best validation weights; stop
    once the lr is below the floor."""
    decay = lr_decays(accs, cfg.lr_window, cfg.lr_rho, cfg.lr_checkpoints)
    scale = cfg.lr_decay if decay else 1.0
    return EpochDecision(lr_scale=scale, reload_best=decay, stop=lr * scale < cfg.lr_floor)


@contextmanager
def _trainable_only(params: Sequence[nn.Parameter], trainable: set[int]) -> Iterator[None]:
    """Within the block, of ``params`` only those in ``trainable`` (ids) require grad: a forward run here builds a
    graph to those alone (the official routing, by flags rather than detach); afterwards the flags are restored."""
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(id(p) in trainable)
    try:
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


class AutoLoRa(Method):
    """AutoLoRa: adversarial full fine-tuning plus a LoRA branch for the natural term, automatic λ and lr."""

    config_cls = AutoLoRaConfig
    needs_structure = ("it routes gradients to the classifier found by get_classifier() and puts the LoRA branch "
                       "where pretrained_cfg declares")

    def __init__(self, cfg: AutoLoRaConfig, attack: PGD | None = None) -> None:
        super().__init__(cfg, attack)
        self.train_data: ArrayDataset | None = None  # set by setup: the split whose clean accuracy sets λ
        self.eval_batch_size, self.channels_last = 256, False
        self.natural_acc: float | None = None  # measured by epoch_start at the start of every epoch
        self.params: list[nn.Parameter] = []  # set by prepare: every parameter, and the two routes' trainable ids
        self.natural_ids: set[int] = set()
        self.adversarial_ids: set[int] = set()

    # -- run structure -----------------------------------------------------------------------------------------
    def setup(self, model: nn.Module, ctx: RunContext) -> None:
        """Keep the training split (λ's accuracy) and say what the automatic schedule replaces."""
        n = self.cfg.acc_n
        train = ctx.train
        if n is not None and n < len(train):
            train = train.subset(torch.arange(n, device=train.y.device) * len(train) // n)
        self.train_data = train
        self.eval_batch_size, self.channels_last = ctx.cfg.data.eval_batch_size, ctx.cfg.train.channels_last
        if self.cfg.auto_lr:
            optim = ctx.cfg.optim
            ctx.log(f"autolora: automatic lr schedule from lr {self.cfg.lr or optim.lr:g}, x{self.cfg.lr_decay:g} "
                    f"at checkpoints ({self._describe_checkpoints()}) with rho {self.cfg.lr_rho:g}, stop below "
                    f"{self.cfg.lr_floor:g}; it replaces optim.schedule ({optim.schedule}) and warm-up")
            if ctx.cfg.eval.select not in ("auto", "robust_acc"):
                ctx.log(f"autolora: each decay continues from the epoch eval.select={ctx.cfg.eval.select} keeps "
                        f"(the official code: the best validation robust accuracy, eval.select auto)")
        ctx.log(f"autolora: λ from the clean accuracy of the LoRA branch on {len(train)} training images, each epoch")

    def _describe_checkpoints(self) -> str:
        """The schedule's checkpoints in words."""
        if self.cfg.lr_checkpoints is not None:
            return "after epochs " + ", ".join(str(c + 1) for c in self.cfg.lr_checkpoints[1:])
        w = self.cfg.lr_window
        return f"after epochs {w + 1}, {2 * w + 1}, ..."

    def stages(self) -> list[Stage]:
        """One stage; the automatic schedule needs a constant base schedule, and ``lr`` sets its start."""
        overrides: dict[str, Any] = {}
        if self.cfg.auto_lr:
            overrides.update({"optim.schedule": "constant", "optim.warmup_epochs": 0.0})
        if self.cfg.lr is not None:
            overrides["optim.lr"] = self.cfg.lr
        return [Stage("main", self, overrides)]

    def prepare(self, model: nn.Module) -> nn.Module:
        """Attach the (switched-off) LoRA branch; every parameter trains, each through its route."""
        if self.cfg.lora_layout == "official":
            add_official_lora(model, self.cfg.lora_rank, self.cfg.lora_alpha)
        else:
            add_lora(model, self.cfg.lora_rank, self.cfg.lora_alpha, convs=self.cfg.attach)
        for m in lora_layers(model):
            m.active = False
            if self.cfg.lora_init == "official":
                for layer in m.lora_A.modules():
                    if isinstance(layer, (nn.Linear, nn.Conv2d)):
                        nn.init.normal_(layer.weight)
        model.requires_grad_(True)
        lora = {id(p) for p in lora_parameters(model)}
        head = {id(p) for p in model.get_classifier().parameters()}
        self.params = list(model.parameters())
        self.natural_ids = lora | head
        self.adversarial_ids = {id(p) for p in self.params} - lora
        return model

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Measure the branch's clean training accuracy: λ for this epoch."""
        self.natural_acc = self.natural_accuracy(model)

    def natural_accuracy(self, model: nn.Module) -> float:
        """Clean accuracy of the branch-on model on the kept training images (eval mode, fp32, no augmentation)."""
        if self.train_data is None:
            raise UserError("autolora measures λ on the training split that setup(model, ctx) gives it")
        with lora_enabled(model):
            return evaluate(model, self.train_data, batch_size=self.eval_batch_size,
                            channels_last=self.channels_last, progress=False).clean_acc

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """The accuracy and loss weights this epoch trained with."""
        lam1, lam2 = loss_weights(self.natural_acc, self.cfg.beta)
        return {"natural_train_acc": self.natural_acc, "lambda1": lam1, "lambda2": lam2}

    def epoch_end(self, model: nn.Module, history: list[dict[str, Any]]) -> EpochDecision:
        """The automatic schedule's decision from the validation robust accuracies so far (none without it)."""
        if not self.cfg.auto_lr:
            return EpochDecision()
        return auto_lr_decision([h["val_robust_acc"] for h in history], history[-1]["lr"], self.cfg)

    def finalize(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Drop the branch: the plain backbone + head that validation selected (the source architecture)."""
        return remove_lora(model)

    # -- objective ---------------------------------------------------------------------------------------------
    def forward_paths(self, model: nn.Module, x: torch.Tensor,
                      x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(natural logits: branch on, clean x, graph to LoRA + head; adversarial logits: branch off, x_adv, graph to
        everything but LoRA)."""
        with _trainable_only(self.params, self.natural_ids), lora_enabled(model):
            logits_nat = model(x)
        with _trainable_only(self.params, self.adversarial_ids):
            logits_adv = model(x_adv)
        return logits_nat, logits_adv

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """λ1·CE(natural) + (1 − λ1)·CE(adversarial) + λ2·KL(p_nat ‖ p_adv), the KL's target not detached."""
        if self.natural_acc is None:
            raise UserError("autolora: epoch_start(model, epoch) measures the accuracy λ needs before the first loss")
        x_adv = self.attack.perturb(model, x, y, generator=generator)
        logits_nat, logits_adv = self.forward_paths(model, x, x_adv)
        lam1, lam2 = loss_weights(self.natural_acc, self.cfg.beta)
        natural, adversarial = F.cross_entropy(logits_nat, y), F.cross_entropy(logits_adv, y)
        kl = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits_nat.float(), 1), reduction="batchmean")
        loss = lam1 * natural + (1 - lam1) * adversarial + lam2 * kl
        return loss, {"loss": loss.detach(), "acc": (logits_nat.argmax(1) == y).float().mean(),
                      "adv_acc": (logits_adv.argmax(1) == y).float().mean()}


register_method("autolora", AutoLoRa)

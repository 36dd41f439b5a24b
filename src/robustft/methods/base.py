"""The method interface every fine-tuning method implements, the shared training objectives, and the registry.

A method only says what differs: how the model is prepared (frozen parts, converted layers, heads), which modules
train, the loss of one batch, and how the trained model is finalized. The engine owns everything else.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD
from ..data import ArrayDataset
from ..errors import UserError
from ..models.base import ImageClassifier
from ..schema import from_dict

__all__ = ["Method", "MethodConfig", "ObjectiveConfig", "TradesConfig", "Stage", "RunContext", "EpochDecision", "register_method",
           "create_method", "method_config", "list_methods", "check_structure", "Objective", "OBJECTIVES"]

Objective = Literal["clean", "pgd", "trades"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)


@dataclass
class MethodConfig:
    """Base of every method's options; it has none. A method whose training loss is fixed names it as a class
    attribute (``objective: ClassVar[Objective] = "clean"``), so it is read like an option but not accepted as one."""

    objective: ClassVar[Objective]


@dataclass
class ObjectiveConfig(MethodConfig):
    """Options of a method whose training loss is a choice: the objective and the TRADES trade-off β."""

    objective: Objective = field(default="pgd", metadata={
        "help": "training loss: clean cross-entropy, pgd (Madry AT: cross-entropy on PGD examples) or trades"})
    beta: float = field(default=6.0, metadata={"help": "TRADES β (weight of the KL term)", "ge": 0})


@dataclass
class TradesConfig(ObjectiveConfig):
    """Objective options plus the loss the TRADES training attack maximizes (the TWINS paper's code uses CE)."""

    ce_attack: bool = field(default=False, metadata={
        "help": "objective trades: attack with CE as the TWINS paper's official scripts do (default: the TRADES KL)"})


@dataclass
class RunContext:
    """What a method may use besides the model: the training and validation splits (never test), the run config,
    the source model's weights before any training, where to write its own artifacts, and how to log."""

    train: ArrayDataset
    val: ArrayDataset
    cfg: Any  # robustft.engine.RunConfig (not imported: the engine depends on methods, not the reverse)
    run_dir: Path
    source_state: dict[str, torch.Tensor]
    device: torch.device
    is_main: bool = True
    log: Callable[[str], None] = print


@dataclass
class Stage:
    """One training stage of a multi-stage method: its own method, overrides of the run config, and the config key
    that sets its number of epochs (said in the log, so a user knows which budget each stage gets)."""

    name: str
    method: "Method"
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs_key: str = "train.epochs"


@dataclass(frozen=True)
class EpochDecision:
    """What a method asks the engine to do once an epoch is validated and selected (``Method.epoch_end``): scale
    every learning rate from the next step on (the schedule's base rates too, so a schedule keeps its shape),
    continue from the weights of the kept epoch (``best.pt``; optimizer state kept), and/or end the stage here."""

    lr_scale: float = 1.0
    reload_best: bool = False
    stop: bool = False

    def __post_init__(self) -> None:
        if not self.lr_scale > 0:
            raise ValueError(f"EpochDecision.lr_scale must be > 0, got {self.lr_scale}")

    @property
    def acts(self) -> bool:
        """Whether the decision changes anything."""
        return self.lr_scale != 1.0 or self.reload_best or self.stop


class Method:
    """Base method: full fine-tuning with the configured objective. Subclasses override only what differs."""

    config_cls: type[MethodConfig] = ObjectiveConfig
    # False for a method that keeps the classifier fixed: the engine then refuses a head that would start random
    trains_head: bool = True
    # Why the method needs robustft's model structure (ImageClassifier: a declared classifier, pretrained_cfg); None
    # when any nn.Module mapping [0,1] images to logits will do (check_structure refuses a plain one otherwise)
    needs_structure: str | None = None

    def __init__(self, cfg: MethodConfig, attack: PGD | None = None) -> None:
        self.cfg = cfg
        # the training threat model (None: a method built only for its structure, e.g. to rebuild an export); TRADES
        # maximizes the KL term it trains on, so its attack uses that loss (unless TradesConfig.ce_attack asks for CE)
        kl = cfg.objective == "trades" and not (isinstance(cfg, TradesConfig) and cfg.ce_attack)
        self.attack = replace(attack, loss="kl") if kl and attack is not None else attack

    # -- structure ---------------------------------------------------------------------------------------------
    def setup(self, model: nn.Module, ctx: RunContext) -> None:
        """Data-dependent decisions on the source model before any stage trains (e.g. RiFT's module choice)."""

    def prepare(self, model: nn.Module) -> nn.Module:
        """Freeze/convert/attach what the method needs; the base trains every parameter."""
        model.requires_grad_(True)
        return model

    def trainable_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """Named parameters the optimizer updates."""
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called by the engine at the start of every training epoch (``epoch`` 0-based), before ``train_mode``, on
        the weights that epoch trains (after any reload or resume): refresh per-epoch statistics of the model here
        (AutoLoRa's loss weights). The base does nothing."""

    def train_mode(self, model: nn.Module) -> None:
        """Set module modes for a training epoch (frozen parts may stay in eval); called at the start of every
        epoch, after ``epoch_start``."""
        model.train()

    def state_dict(self) -> dict[str, Any]:
        """What the method decided that a resumed run must not decide again (RiFT's MRC choice), saved in every
        training checkpoint: plain data (str, numbers, None, lists, dicts, tensors; the checkpoint loader runs no
        code). The base has none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what ``state_dict`` returned, from the checkpoint of a resumed run; the base has nothing."""

    def stages(self) -> list[Stage]:
        """Multi-stage methods return several stages; most have one."""
        return [Stage("main", self)]

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """Extra per-epoch numbers for metrics.jsonl (e.g. RiFT's relative weight change); none by default."""
        return {}

    def epoch_end(self, model: nn.Module, history: list[dict[str, Any]]) -> EpochDecision:
        """Called by the engine after each epoch's validation, selection and ``best.pt``, before the checkpoint:
        ``history`` is the stage's per-epoch records so far (the last one this epoch's: ``lr``, ``val_clean_acc``,
        ``val_robust_acc``, ...). The decision must follow from the model and the history alone, which the
        checkpoint restores, so a resumed run decides as an uninterrupted one. The base changes nothing."""
        return EpochDecision()

    def finalize(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Turn the trained model into the exported one (e.g. merge adapters, drop a wing, interpolate)."""
        return model

    def export_architecture(self, model: nn.Module) -> nn.Module:
        """Give a fresh source-architecture model the structure ``finalize`` exports (e.g. unmergeable adapters)."""
        return model

    def results(self) -> dict[str, Any]:
        """Method-specific record merged into results.json (e.g. RiFT's module, α*, α-curve); none by default."""
        return {}

    @property
    def select_rule(self) -> str:
        """What ``eval.select: auto`` maximizes: clean accuracy for clean objectives, robust accuracy otherwise."""
        return "clean_acc" if self.cfg.objective == "clean" else "robust_acc"

    # -- objective ---------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of one batch and detached per-batch statistics to log."""
        return _OBJECTIVES[self.cfg.objective](self, model, x, y, generator)


def _clean(method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy on clean inputs."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}


def _pgd(method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
         generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Madry adversarial training: cross-entropy on PGD examples."""
    x_adv = method.attack.perturb(model, x, y, generator=generator)
    logits = model(x_adv)
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": loss.detach(), "adv_acc": (logits.argmax(1) == y).float().mean()}


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TRADES (Zhang et al. 2019): CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)), batch-mean KL."""
    logits = model(x)
    logits_adv = model(x_adv)
    natural = F.cross_entropy(logits, y)
    robust = F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits.float(), 1), reduction="batchmean")
    loss = natural + beta * robust
    return loss, {"loss": loss.detach(), "acc": (logits.argmax(1) == y).float().mean(),
                  "adv_acc": (logits_adv.argmax(1) == y).float().mean()}


def _trades(method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TRADES with examples from the KL attack."""
    x_adv = method.attack.perturb(model, x, y, generator=generator)
    return trades_loss(model, x, x_adv, y, method.cfg.beta)


_OBJECTIVES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {
    "clean": _clean, "pgd": _pgd, "trades": _trades}


# -- registry --------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, tuple[type[Method], dict[str, Any]]] = {}


def register_method(name: str, method_cls: type[Method], **defaults: Any) -> None:
    """Register ``method_cls`` under ``name``; ``defaults`` preset config fields (e.g. objective)."""
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    known = {f.name for f in fields(method_cls.config_cls)}
    if set(defaults) - known:
        raise ValueError(f"defaults {sorted(set(defaults) - known)} are not fields of {method_cls.config_cls.__name__}")
    _REGISTRY[name] = (method_cls, defaults)


def list_methods() -> list[str]:
    """Registered method names."""
    return sorted(_REGISTRY)


def method_config(name: str, options: dict[str, Any]) -> MethodConfig:
    """The typed, checked config of method ``name``: its registered defaults overridden by ``options``."""
    if name not in _REGISTRY:
        raise UserError(f"unknown method {name!r}: choose from {', '.join(list_methods())}")
    method_cls, defaults = _REGISTRY[name]
    return from_dict(method_cls.config_cls, {**defaults, **options}, "method_args")


def create_method(name: str, attack: PGD | None = None, **options: Any) -> Method:
    """Build method ``name`` with its registered defaults overridden by ``options`` (validated); ``attack`` is the
    training threat model, needed to train (``engine.fit``), not to rebuild an export's structure."""
    cfg = method_config(name, options)
    return _REGISTRY[name][0](cfg, attack)


def check_structure(name: str, model: nn.Module) -> None:
    """Refuse, in one line naming why, a plain ``nn.Module`` for method ``name`` when it needs robustft's model
    structure (``Method.needs_structure``); robustft's own models and structure-free methods pass."""
    need = _REGISTRY[name][0].needs_structure
    if need is None or isinstance(model, ImageClassifier):
        return
    plain = ", ".join(n for n in list_methods() if _REGISTRY[n][0].needs_structure is None)
    raise UserError(f"method {name} needs robustft's model structure ({need}), which a plain {type(model).__name__} "
                    f"lacks: build the model with robustft.create_model or robustft.load_model, or choose a method "
                    f"that needs only its forward and parameters ({plain})")

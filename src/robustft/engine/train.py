"""The one training loop: every method and robust pre-training run through ``fit``.

Choices that matter for speed (adversarial training is dominated by attack passes): data stays on the device as uint8
and is augmented with tensor ops, the model and batches are channels_last, bf16 autocast on CUDA and on CPUs with
native bf16 (training only: validation and test are fp32), one mode switch per attack (inside the attack), training
statistics accumulate on the device and are synchronized once per log interval.
"""

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_save, atomic_write
from ..attacks import PGD
from ..data import ArrayDataset, Augment, View, iterate_batches, num_batches
from ..errors import TrainingDiverged, UserError, warn
from ..eval import evaluate
from ..layout import RunLayout
from ..methods import EpochDecision, Method
from ..progress import duration, track
from .config import RunConfig, to_dict
from .distributed import DistInfo, all_reduce_sum, barrier
from .optim import build_optimizer, build_scheduler
from .precision import autocast_for
from .state import load_best_weights, restore_training_state
from .tracking import Trackers, open_trackers

# A finite epoch counts as exploded when its training loss is this many times the first epoch's or more while its
# validation clean accuracy is at most this many times chance (flagged in the log, metrics.jsonl and the card).
EXPLODED_LOSS_FACTOR, EXPLODED_CHANCE_FACTOR = 10.0, 1.5


@dataclass
class FitResult:
    """Outcome of one training stage: the selected epoch, its validation metrics, the whole history, and the seconds
    of the epochs an earlier (interrupted) invocation completed."""

    best_epoch: int
    best: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_s: float = 0.0


# ---------------------------------------------------------------------------------------------------------------
# Setup helpers
# ---------------------------------------------------------------------------------------------------------------
def augment_for(cfg: RunConfig) -> Augment | View | None:
    """The training augmentation named in the config: a :class:`View` of packed images with data.storage_size."""
    d = cfg.data
    if d.augment == "none":
        return None
    if d.storage_size is not None:
        kind = "center_crop" if d.augment == "flip" else d.augment
        return View(kind, d.image_size, hflip=True, scale=tuple(d.crop_scale), ratio=tuple(d.crop_ratio))
    return Augment(crop_padding=cfg.data.crop_padding if cfg.data.augment == "crop_flip" else 0, hflip=True)


def select_value(metrics: dict[str, float], rule: str) -> float:
    """The validation number the selection rule maximizes (not for ``last``: every epoch replaces the kept one)."""
    if rule == "sum":
        return metrics["val_clean_acc"] + metrics["val_robust_acc"]
    return metrics[f"val_{rule}"]


def _validate(model: nn.Module, val: ArrayDataset, attack: PGD, cfg: RunConfig, info: DistInfo,
              epoch: int) -> dict[str, float]:
    """Clean and PGD accuracy on this rank's validation shard, summed over ranks."""
    # one process: the whole split as it is (no per-epoch copy); N processes: an interleaved share each
    shard = val if info.world_size == 1 else val.subset(torch.arange(info.rank, len(val), info.world_size,
                                                                      device=val.y.device))
    res = evaluate(model, shard, [attack], batch_size=cfg.data.eval_batch_size, seed=cfg.train.seed + epoch,
                   channels_last=cfg.train.channels_last)
    counts = torch.tensor([res.correct["clean"].sum(), res.correct[attack.name].sum(), len(shard)],
                          dtype=torch.float64, device=info.device)
    clean, robust, n = all_reduce_sum(counts, info).tolist()
    return {"val_clean_acc": clean / n, "val_robust_acc": robust / n}


# ---------------------------------------------------------------------------------------------------------------
# Checkpointing: everything needed to continue bit-exactly after a kill at any point
# ---------------------------------------------------------------------------------------------------------------
def _training_state(method: Method, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: Any, generators: dict[str, torch.Generator], epoch: int, history: list[dict],
                    best: dict) -> dict:
    """The resumable state after ``epoch`` epochs (the method's own state under ``method``)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "method": method.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
            "generators": {k: g.get_state() for k, g in generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "epoch": epoch, "history": history, "best": best}


def _restore(state: dict, method: Method, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: Any, generators: dict[str, torch.Generator]) -> None:
    """Load a training state saved by ``_training_state`` (one written before methods had state has none)."""
    method.load_state_dict(state.get("method", {}))
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def _divergence(loss: float, epoch: int, it: int, history: list[dict], run_dir: Path) -> str:
    """The one-line error for a non-finite loss, naming the checkpoint that is actually on disk."""
    saved = (f"epoch {epoch} was not saved; the last saved epoch is {history[-1]['epoch']} (train loss "
             f"{history[-1]['train_loss']:.3g}) in {RunLayout(run_dir).last}" if history else "no epoch was saved")
    return (f"training diverged: loss is {loss} at epoch {epoch}, iteration {it}; lower optim.lr or check the data "
            f"({saved})")


def _write_metrics(layout: RunLayout, history: list[dict]) -> None:
    """Rewrite metrics.jsonl from the history (atomic, so a resumed run never shows epochs twice)."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.writelines(json.dumps(h) + "\n" for h in history)
    atomic_write(layout.metrics, write)


# ---------------------------------------------------------------------------------------------------------------
# The loop: setup once, then per epoch the training pass and the end-of-epoch bookkeeping
# ---------------------------------------------------------------------------------------------------------------
class StepSums:
    """Per-step training statistics summed on the device; read on the host once per log interval / epoch."""

    FIELDS = ("loss", "acc", "batches", "grad_norm", "lr")

    def __init__(self, device: torch.device) -> None:
        self.values = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, acc: torch.Tensor, grad_norm: torch.Tensor, lr: float) -> None:
        """One step: its loss, accuracy-like statistic, conv-gradient norm (diagnostics) and learning rate."""
        one = torch.ones((), dtype=torch.float64, device=loss.device)
        self.values += torch.stack([loss.double(), acc.double(), one, grad_norm.double(),
                                    torch.tensor(lr, dtype=torch.float64, device=loss.device)])

    def mean_loss(self) -> float:
        """The mean loss so far (one host sync)."""
        return (self.values[0] / self.values[2]).item()

    def means(self, info: DistInfo) -> dict[str, float]:
        """Every statistic's mean over the epoch's steps and all ranks."""
        total = dict(zip(self.FIELDS, all_reduce_sum(self.values, info).tolist(), strict=True))
        return {k: v / total["batches"] for k, v in total.items() if k != "batches"}


@dataclass
class _Loop:
    """What one stage's training keeps across epochs besides the model."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    autocast: Callable[[], contextlib.AbstractContextManager]
    train_model: nn.Module  # the model, wrapped for DDP / torch.compile when asked
    generators: dict[str, torch.Generator]
    val_attack: PGD
    augment: Augment | View | None
    rule: str
    conv_weights: list[nn.Parameter]  # diagnostics: the convolution weights the optimizer updates
    iters: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    start_epoch: int = 0
    trackers: Trackers | None = None  # train.report_to (rank 0 only)


def _setup(method: Method, model: nn.Module, train: ArrayDataset, cfg: RunConfig, info: DistInfo) -> _Loop:
    """Optimizer, schedule, AMP, DDP/compile wrapping, generators, validation attack: everything built once."""
    if method.attack is None:
        raise UserError(f"{type(method).__name__} was built without an attack, which training needs (its loss or its "
                        f"validation): create_method(name, PGD(...), ...)")
    batch_size = cfg.data.batch_size
    if batch_size % info.world_size:
        raise UserError(f"data.batch_size {batch_size} must be divisible by the number of processes {info.world_size}")
    iters = num_batches(len(train), batch_size, drop_last=True)
    if iters == 0:
        raise UserError(f"data.batch_size {batch_size} is larger than the training split ({len(train)} images)")
    optimizer = build_optimizer(model, method.trainable_parameters(model), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.epochs, iters)
    autocast, scaled = autocast_for(info.device, cfg.train.amp)
    train_model: nn.Module = model
    if info.launched:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[info.device.index]
                                                          if info.device.type == "cuda" else None)
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    # data order/augmentation is shared by all ranks (same global batches); attack starts differ per rank
    generators = {"data": torch.Generator().manual_seed(cfg.train.seed),  # CPU: same draws on any device
                  "attack": torch.Generator(info.device).manual_seed(cfg.train.seed * 1000 + 1 + info.rank)}
    conv_weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d) and m.weight.requires_grad]
    return _Loop(optimizer=optimizer, scheduler=scheduler,
                 scaler=torch.amp.GradScaler(info.device.type) if scaled else None, autocast=autocast,
                 train_model=train_model, generators=generators,
                 val_attack=PGD(eps=method.attack.eps, norm=method.attack.norm, steps=cfg.eval.val_steps,
                                name="pgd_val"),
                 augment=augment_for(cfg), rule=method.select_rule if cfg.eval.select == "auto" else cfg.eval.select,
                 conv_weights=conv_weights if cfg.train.diagnostics else [], iters=iters)


def _step(loop: _Loop, method: Method, x: torch.Tensor, y: torch.Tensor, sums: StepSums) -> None:
    """One optimizer step on one batch."""
    with loop.autocast():
        loss, stats = method.loss(loop.train_model, x, y, loop.generators["attack"])
    loop.optimizer.zero_grad(set_to_none=True)
    if loop.scaler is not None:
        loop.scaler.scale(loss).backward()
        if loop.conv_weights:
            loop.scaler.unscale_(loop.optimizer)
    else:
        loss.backward()
    grad_norm = (torch.nn.utils.get_total_norm([w.grad for w in loop.conv_weights if w.grad is not None])
                 if loop.conv_weights else torch.zeros((), device=loss.device))
    lr = loop.optimizer.param_groups[0]["lr"]
    if loop.scaler is not None:
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    else:
        loop.optimizer.step()
    loop.scheduler.step()
    sums.add(stats["loss"], stats.get("adv_acc", stats.get("acc", torch.zeros((), device=loss.device))), grad_norm,
             lr)


def _train_epoch(loop: _Loop, method: Method, model: nn.Module, train: ArrayDataset, cfg: RunConfig,
                 info: DistInfo, epoch: int, run_dir: Path) -> dict[str, Any]:
    """One pass over the training split; returns the epoch's training metrics."""
    t0 = time.perf_counter()
    method.epoch_start(model, epoch)
    method.train_mode(model)
    sums = StepSums(info.device)
    batches = iterate_batches(train, cfg.data.batch_size, shuffle=True, generator=loop.generators["data"],
                              augment=loop.augment, drop_last=True, channels_last=cfg.train.channels_last,
                              shard=(info.rank, info.world_size))
    bar = track(batches, total=loop.iters, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
    if loop.trackers is not None:
        loop.trackers.start_epoch()
    for it, (x, y) in enumerate(bar):
        _step(loop, method, x, y, sums)
        if (it + 1) % cfg.train.log_every == 0 or it + 1 == loop.iters:
            mean_loss = sums.mean_loss()
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(_divergence(mean_loss, epoch + 1, it + 1, loop.history, run_dir))
            bar.set_postfix(f"loss {mean_loss:.3f}")
            if loop.trackers is not None:
                loop.trackers.train_step(sums.values.tolist(), epoch * loop.iters + it + 1, it + 1 == loop.iters)
    means = sums.means(info)
    train_s = time.perf_counter() - t0
    metrics = {"epoch": epoch + 1, "lr": loop.scheduler.get_last_lr()[0], "train_loss": means["loss"],
               "train_acc": means["acc"], "train_s": train_s,
               "train_images_per_s": loop.iters * cfg.data.batch_size / train_s}
    if loop.conv_weights:  # grad norm and lr: means over the epoch's steps (and ranks); weight norm: at its end
        weight_norm = torch.nn.utils.get_total_norm([w.detach() for w in loop.conv_weights]).item()
        metrics.update(conv_weight_norm=weight_norm, conv_grad_norm=means["grad_norm"],
                       effective_step=means["lr"] * means["grad_norm"] / weight_norm)
    return metrics


def _exploded(metrics: dict[str, Any], history: list[dict], num_classes: int) -> str | None:
    """Why a finite epoch exploded — training loss ``EXPLODED_LOSS_FACTOR`` times the first epoch's or more, and
    validation at chance — or None."""
    if not history or metrics["val_clean_acc"] > EXPLODED_CHANCE_FACTOR / num_classes:
        return None
    ratio = metrics["train_loss"] / max(history[0]["train_loss"], 1e-12)
    if ratio < EXPLODED_LOSS_FACTOR:
        return None
    return (f"train loss {metrics['train_loss']:.3g}, {ratio:.3g}x the first epoch's; validation clean accuracy "
            f"{metrics['val_clean_acc']:.3f}, chance is {1 / num_classes:.3f}")


def _end_epoch(loop: _Loop, method: Method, model: nn.Module, val: ArrayDataset, cfg: RunConfig, info: DistInfo,
               metrics: dict[str, Any], t0: float, fit_start: float, layout: RunLayout,
               log: Callable[[str], None]) -> None:
    """Validate, select, checkpoint (atomically) and log one finished epoch."""
    epoch, epochs = metrics["epoch"] - 1, cfg.train.epochs
    metrics.update(_validate(model, val, loop.val_attack, cfg, info, epoch))
    metrics.update(method.epoch_metrics(model))
    metrics["epoch_s"] = time.perf_counter() - t0
    # the stage's remaining epochs at this invocation's mean epoch time
    left = (time.perf_counter() - fit_start) / (epoch + 1 - loop.start_epoch) * (epochs - epoch - 1)
    eta = f", ETA {duration(left)}" if epoch + 1 < epochs else ""
    if why := _exploded(metrics, loop.history, val.num_classes):
        metrics["exploded"] = True
        if info.is_main:
            warn(f"epoch {metrics['epoch']} exploded ({why}); lower optim.lr (the model card flags it if it is kept)")
    loop.history.append(metrics)
    improved = (loop.rule == "last" or not loop.best
                or select_value(metrics, loop.rule) > select_value(loop.best, loop.rule))
    if improved:
        loop.best = dict(metrics)
    if info.is_main and improved:
        atomic_save(model.state_dict(), layout.best)
    decision = method.epoch_end(model, loop.history)
    if decision.acts:
        _apply_decision(decision, loop, model, layout, info, metrics)
    if info.is_main:
        if loop.trackers is not None:  # before the checkpoint: a killed run has logged what its last.pt holds
            loop.trackers.end_epoch(metrics, (epoch + 1) * loop.iters)
        atomic_save(_training_state(method, model, loop.optimizer, loop.scheduler, loop.scaler, loop.generators,
                                    epoch + 1, loop.history, loop.best), layout.last)
        _write_metrics(layout, loop.history)
        log(f"epoch {epoch + 1}/{epochs}  loss {metrics['train_loss']:.4f}  val clean "
            f"{metrics['val_clean_acc']:.4f}  val pgd{cfg.eval.val_steps} {metrics['val_robust_acc']:.4f}"
            f"{'  *' if improved else ''}  ({metrics['epoch_s']:.0f} s, {metrics['train_images_per_s']:.0f} img/s"
            f"{eta})")
        if decision.acts:
            log(_describe_decision(method, decision, metrics, loop.optimizer))
    barrier(info)


def _apply_decision(decision: EpochDecision, loop: _Loop, model: nn.Module, layout: RunLayout, info: DistInfo,
                    metrics: dict[str, Any]) -> None:
    """Carry out a method's end-of-epoch decision and record it in the epoch's metrics (so the history, which the
    checkpoint holds, says what was done: a resumed run that finds ``stopped`` trains no further)."""
    if decision.lr_scale != 1.0:
        # LambdaLR sets lr = base_lr × factor(step) at every step: scaling the base rates makes the change last
        loop.scheduler.base_lrs = [lr * decision.lr_scale for lr in loop.scheduler.base_lrs]
        for group in loop.optimizer.param_groups:
            group["lr"] *= decision.lr_scale
            if "initial_lr" in group:
                group["initial_lr"] *= decision.lr_scale
        metrics["lr_scale"] = decision.lr_scale
    if decision.reload_best:
        barrier(info)  # rank 0 has written best.pt
        load_best_weights(model, layout.best, info.device)
        metrics["reloaded_epoch"] = int(loop.best["epoch"])
    if decision.stop:
        metrics["stopped"] = True


def _describe_decision(method: Method, decision: EpochDecision, metrics: dict[str, Any],
                       optimizer: torch.optim.Optimizer) -> str:
    """One log line naming what the method's end-of-epoch decision did."""
    done = []
    if decision.lr_scale != 1.0:
        done.append(f"lr x{decision.lr_scale:g} (now {optimizer.param_groups[0]['lr']:.3g})")
    if decision.reload_best:
        done.append(f"continuing from the weights of epoch {metrics['reloaded_epoch']} (best.pt)")
    if decision.stop:
        done.append("stopping the stage here")
    return f"epoch {metrics['epoch']}: {type(method).__name__} asks: " + ", ".join(done)


def fit(method: Method, model: nn.Module, train: ArrayDataset, val: ArrayDataset, cfg: RunConfig, run_dir: Path,
        info: DistInfo, *, resume: bool = False, log: Callable[[str], None] = print) -> FitResult:
    """Train ``model`` (already prepared by ``method`` and on the device) and keep the epoch ``eval.select`` picks:
    the best validation epoch, or with ``last`` the final one.

    After each epoch the method may scale the learning rate, continue from ``best.pt`` or end the stage
    (``Method.epoch_end``). Writes ``last.pt`` (full training state) every epoch and ``best.pt`` (model weights) on
    improvement, both atomically, and ``metrics.jsonl`` (and with ``train.report_to`` per-step and per-epoch scalars,
    ``engine.tracking``); with ``resume`` it continues from ``last.pt`` and reaches the same result as an
    uninterrupted run.
    """
    layout = RunLayout(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loop = _setup(method, model, train, cfg, info)
    if resume and layout.last.exists():
        state = restore_training_state(layout.last, cfg.train.epochs, info.device, lambda state: _restore(
            state, method, model, loop.optimizer, loop.scheduler, loop.scaler, loop.generators))
        loop.start_epoch, loop.history, loop.best = state["epoch"], state["history"], state["best"]
        log(f"resumed from {layout.last} after epoch {loop.start_epoch}")
    if info.is_main:
        loop.trackers = open_trackers(cfg.train.report_to, run_dir, loop.start_epoch * loop.iters, to_dict(cfg),
                                      grad_norm=cfg.train.diagnostics)
    fit_start = time.perf_counter()
    try:
        for epoch in range(loop.start_epoch, cfg.train.epochs):
            if loop.history and loop.history[-1].get("stopped"):  # the method ended the stage (Method.epoch_end)
                break
            t0 = time.perf_counter()
            metrics = _train_epoch(loop, method, model, train, cfg, info, epoch, run_dir)
            _end_epoch(loop, method, model, val, cfg, info, metrics, t0, fit_start, layout, log)
    finally:
        if loop.trackers is not None:
            loop.trackers.close()
    return FitResult(best_epoch=int(loop.best["epoch"]), best=loop.best, history=loop.history,
                     resumed_s=sum(h["epoch_s"] for h in loop.history[:loop.start_epoch]))

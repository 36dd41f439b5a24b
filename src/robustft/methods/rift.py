"""RiFT (Zhu et al., ICCV 2023): robust critical fine-tuning.

1. ``setup``: module robust criticality (MRC, ``robustft.eval.mrc``) of every Conv2d/Linear weight of the
   adversarially trained model, on PGD-10 examples (L∞ 8/255, step 2/255, random start) of a deterministic subset of
   the *training* split; the module with the lowest MRC is the non-robust-critical one (or ``module`` names it and
   MRC is skipped). Writes ``mrc.json`` and ``mrc.png`` into the run directory.
2. Training (the engine): only that module's weight trains, on clean data (objective ``clean``); BN layers stay in
   eval mode so nothing else changes (``official_bn`` reproduces the official train-mode BN, whose running
   statistics drift). Epoch selection on validation clean accuracy (``eval.select: clean_acc`` in the presets).
3. ``finalize``: θ(α) = α·θ_ft + (1−α)·θ_AT over the α grid; validation clean and PGD accuracy at each α; α* = the
   highest validation clean accuracy among the α whose validation robust accuracy is at least that of α = 0 minus
   ``tolerance``. Writes ``alpha_curve.json`` and ``alpha_curve.png``; the exported model is θ(α*).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from .._io import atomic_write, atomic_write_json
from ..attacks import PGD
from ..errors import UserError
from ..eval import evaluate
from ..eval.mrc import (
    IMPLEMENTATIONS,
    MRC_DEFAULTS,
    WEIGHT_TYPES,
    MRCProfile,
    examples_attack,
    mrc_examples,
    mrc_profile,
)
from .base import Method, MethodConfig, Objective, RunContext, register_method
from .partial import freeze_idle_norm_stats

__all__ = ["Rift", "RiftConfig", "choose_alpha", "interpolate_state", "save_mrc", "save_alpha_curve",
           "DEFAULT_ALPHAS"]

DEFAULT_ALPHAS = [round(0.1 * i, 1) for i in range(11)]
MRC_JSON, MRC_PNG, MRC_TXT = "mrc.json", "mrc.png", "mrc.txt"
ALPHA_JSON, ALPHA_PNG = "alpha_curve.json", "alpha_curve.png"


@dataclass
class RiftConfig(MethodConfig):
    """RiFT options: which module (or how MRC picks it), BN behaviour, and the interpolation rule. The module
    trains on clean data (the paper's objective), so there is no objective or β to set."""

    objective: ClassVar[Objective] = "clean"

    module: str | None = field(default=None, metadata={
        "help": "module to fine-tune, e.g. layer2.1.conv2 (skips MRC); default: the lowest-MRC module"})
    official_bn: bool = field(default=False, metadata={
        "help": "BN in train mode while fine-tuning, as the official code (running statistics drift); default: "
                "every BN layer stays in eval mode so only the chosen weight changes"})
    alphas: list[float] = field(default_factory=lambda: list(DEFAULT_ALPHAS), metadata={
        "help": "interpolation grid in [0, 1] (0 = the source model, 1 = the fine-tuned one; 0 is always added)",
        "ge": 0, "le": 1})
    tolerance: float = field(default=0.001, metadata={
        "help": "allowed drop of validation robust accuracy below α=0's when choosing α* (fraction: 0.001 = 0.1 "
                "points)", "ge": 0})
    mrc_n: int = field(default=MRC_DEFAULTS.n, metadata={"help": "training examples MRC is measured on", "ge": 1})
    mrc_eps: float = field(default=MRC_DEFAULTS.eps, metadata={
        "help": "relative weight-perturbation radius ‖Δw‖ ≤ ε‖w‖", "gt": 0})
    mrc_steps: int = field(default=MRC_DEFAULTS.steps, metadata={
        "help": "gradient-ascent iterations per module", "ge": 1})
    mrc_lr: float = field(default=MRC_DEFAULTS.lr, metadata={
        "help": "gradient-ascent step (the official SGD lr 1)", "gt": 0})
    mrc_minibatch: int | None = field(default=MRC_DEFAULTS.minibatch, metadata={
        "help": "the official regime: each ascent iteration is a shuffled pass of SGD steps over mini-batches of this "
                "many examples (official: 512), then one projection; null: one full-batch step per projection "
                "(identical while mrc_n <= the mini-batch)", "ge": 1})
    mrc_batch_size: int = field(default=MRC_DEFAULTS.batch_size, metadata={
        "help": "examples per MRC forward (memory only)", "ge": 1})
    mrc_impl: Literal[IMPLEMENTATIONS] = field(default=MRC_DEFAULTS.impl, metadata={
        "help": "fast: only the module's downstream subgraph runs; reference: whole-model passes"})
    mrc_attack_eps: float = field(default=MRC_DEFAULTS.attack_eps, metadata={
        "help": "L∞ budget of the MRC examples (a number or a fraction)", "ge": 0})
    mrc_attack_steps: int = field(default=MRC_DEFAULTS.attack_steps, metadata={
        "help": "PGD steps of the MRC examples", "ge": 1})
    mrc_attack_step_size: float = field(default=MRC_DEFAULTS.attack_step_size, metadata={
        "help": "PGD step of the MRC examples (a number or a fraction)", "gt": 0})

    def __post_init__(self) -> None:
        if not self.alphas:
            raise UserError("method_args.alphas must be a non-empty list of values in [0, 1]")
        self.alphas = sorted({0.0, *(float(a) for a in self.alphas)})


# ---------------------------------------------------------------------------------------------------------------
# The interpolation rule (pure functions, tested on hand-made curves)
# ---------------------------------------------------------------------------------------------------------------
def interpolate_state(source: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) = α·θ_ft + (1−α)·θ_AT for floating tensors (exactly θ_AT at α=0 and θ_ft at α=1); other tensors (BN
    batch counters) come from θ_AT at α=0 and from θ_ft otherwise."""
    if source.keys() != finetuned.keys():
        raise ValueError("source and fine-tuned state dicts have different keys")
    out = {}
    for k, ft in finetuned.items():
        at = source[k].to(ft.device)
        if alpha == 0:
            out[k] = at.clone()
        elif alpha == 1 or not ft.is_floating_point() or torch.equal(ft, at):
            out[k] = ft.clone()
        else:
            out[k] = alpha * ft + (1 - alpha) * at
    return out


def choose_alpha(curve: list[dict[str, float]], tolerance: float) -> float:
    """α* from rows ``{"alpha", "val_clean_acc", "val_robust_acc"}``: the highest clean accuracy among the α whose
    robust accuracy is ≥ robust(α=0) − tolerance; ties go to the higher robust accuracy, then the smaller α."""
    base = [r for r in curve if r["alpha"] == 0]
    if not base:
        raise ValueError("the α curve needs α = 0 (the source model) as the robustness baseline")
    floor = base[0]["val_robust_acc"] - tolerance - 1e-12  # 1e-12: accuracies are k/n fractions, not exact decimals
    admissible = [r for r in curve if r["val_robust_acc"] >= floor]
    best = max(admissible, key=lambda r: (r["val_clean_acc"], r["val_robust_acc"], -r["alpha"]))
    return best["alpha"]


# ---------------------------------------------------------------------------------------------------------------
# Artifacts (shared with `robustft mrc`)
# ---------------------------------------------------------------------------------------------------------------
def _try_plot(plot, *args: Any, **kwargs: Any) -> Path | None:
    """A plot when matplotlib is installed (the optional ``plot`` extra), else None."""
    try:
        return plot(*args, **kwargs)
    except UserError:
        return None


def save_mrc(profile: MRCProfile, out_dir: str | Path, chosen: str | None = None,
             extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``mrc.json`` (the whole profile), ``mrc.txt`` (the table) and ``mrc.png`` (bar plot, with matplotlib)."""
    from ..report.plots import plot_mrc

    out_dir = Path(out_dir)
    record = {**profile.to_dict(), "chosen": chosen or profile.lowest(), **(extra or {})}
    paths = {"json": atomic_write_json(record, out_dir / MRC_JSON),
             "txt": atomic_write(out_dir / MRC_TXT, lambda tmp: Path(tmp).write_text(profile.table() + "\n"))}
    png = _try_plot(plot_mrc, record, out_dir / MRC_PNG)
    if png is not None:
        paths["png"] = png
    return paths


def save_alpha_curve(record: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``alpha_curve.json`` and ``alpha_curve.png`` (with matplotlib)."""
    from ..report.plots import plot_alpha_curves

    out_dir = Path(out_dir)
    paths = {"json": atomic_write_json(record, out_dir / ALPHA_JSON)}
    png = _try_plot(plot_alpha_curves, record["curve"], out_dir / ALPHA_PNG, chosen=record["alpha"],
                    tolerance=record["tolerance"])
    if png is not None:
        paths["png"] = png
    return paths


def _broadcast_choice(name: str) -> str:
    """Rank 0's module choice on every rank (MRC is deterministic, but a float tie must not split the ranks)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [name]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return name


# ---------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------
class Rift(Method):
    """Fine-tune the lowest-MRC module's weight on clean data, then interpolate with the source weights."""

    config_cls = RiftConfig
    trains_head = False  # one conv/linear weight trains; the head must already fit the task

    def __init__(self, cfg: RiftConfig, attack: PGD | None = None) -> None:
        super().__init__(cfg, attack)
        self.module: str | None = cfg.module
        self.record: dict[str, Any] = {}
        self._source_weight: torch.Tensor | None = None

    def _weight(self, model: nn.Module) -> nn.Parameter:
        """The chosen module's weight, with a clear error for a name that is not a Conv2d/Linear module."""
        modules = dict(model.named_modules())
        module = modules.get(self.module)
        if not isinstance(module, WEIGHT_TYPES):
            names = [n for n, m in modules.items() if isinstance(m, WEIGHT_TYPES)]
            raise UserError(f"rift module {self.module!r} is not a Conv2d/Linear module of the model (candidates: "
                            f"{', '.join(names[:6])}, ...)")
        return module.weight

    def setup(self, model: nn.Module, ctx: RunContext) -> None:
        """Pick the module: the given one, else the lowest MRC on PGD examples of training data."""
        c = self.cfg
        mrc_record = self.record.get("mrc")  # a resumed run's MRC result, from its checkpoint (load_state_dict)
        if self.module is None:
            ctx.log(f"rift: MRC of every Conv2d/Linear module on {min(c.mrc_n, len(ctx.train))} PGD-"
                    f"{c.mrc_attack_steps} training examples ({c.mrc_impl})")
            x_adv, y = mrc_examples(model, ctx.train, c.mrc_n, eps=c.mrc_attack_eps,
                                    steps=c.mrc_attack_steps, step_size=c.mrc_attack_step_size,
                                    seed=ctx.cfg.train.seed, batch_size=ctx.cfg.data.eval_batch_size)
            profile = mrc_profile(model, x_adv, y, eps=c.mrc_eps, steps=c.mrc_steps, lr=c.mrc_lr,
                                  batch_size=c.mrc_batch_size, impl=c.mrc_impl, minibatch=c.mrc_minibatch,
                                  seed=ctx.cfg.train.seed)
            attack = examples_attack(c.mrc_attack_eps, c.mrc_attack_steps, c.mrc_attack_step_size)
            profile.examples = {"split": "train", "n": len(y), "attack": attack, "seed": ctx.cfg.train.seed}
            self.module = _broadcast_choice(profile.lowest())
            ctx.log(profile.table())
            if ctx.is_main:
                save_mrc(profile, ctx.run_dir, chosen=self.module)
            mrc_record = {"origin_loss": profile.origin_loss, "origin_acc": profile.origin_acc,
                          "scores": profile.scores, "wall_s": profile.wall_s, "n": profile.n}
        self._source_weight = self._weight(model).detach().clone()
        ctx.log(f"rift: fine-tuning {self.module}.weight ({self._source_weight.numel():,} parameters)"
                f"{' (given)' if mrc_record is None else ' (lowest MRC)'}")
        self.record = {"module": self.module, "module_from": "given" if mrc_record is None else "mrc",
                       "mrc": mrc_record}

    def state_dict(self) -> dict[str, Any]:
        """The module choice and its record (MRC's scores), so a resumed run does not measure MRC again."""
        return {"module": self.module, "record": self.record}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back the module choice of the run being resumed."""
        if state:
            self.module, self.record = state["module"], state["record"]

    def prepare(self, model: nn.Module) -> nn.Module:
        """Only the chosen module's weight trains (not its bias: the paper fine-tunes the weight)."""
        if self.module is None:
            raise UserError("rift: no module chosen (setup was not run and method_args.module is not set)")
        weight = self._weight(model)
        model.requires_grad_(False)
        weight.requires_grad_(True)
        return model

    def train_mode(self, model: nn.Module) -> None:
        """Train mode with every BN frozen (eval), unless ``official_bn``."""
        model.train()
        if not self.cfg.official_bn:
            freeze_idle_norm_stats(model)

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """Relative change of the trained weight, ‖w − w_AT‖ / ‖w_AT‖."""
        if self._source_weight is None:
            return {}
        w = self._weight(model).detach()
        return {"rift_rel_change": ((w - self._source_weight.to(w.device)).norm() / self._source_weight.norm()).item()}

    def finalize(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        """Interpolate between θ_AT and θ_ft, choose α* on validation, leave the model at θ(α*)."""
        cfg = ctx.cfg
        finetuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
        changed = [k for k, v in finetuned.items()
                   if v.is_floating_point() and not torch.equal(v, ctx.source_state[k].to(v.device))]
        attack = PGD(eps=self.attack.eps, norm=self.attack.norm, steps=cfg.eval.val_steps, name="pgd_val")
        curve = []
        for alpha in self.cfg.alphas:
            model.load_state_dict(interpolate_state(ctx.source_state, finetuned, alpha))
            res = evaluate(model, ctx.val, [attack], batch_size=cfg.data.eval_batch_size, seed=cfg.train.seed,
                           channels_last=cfg.train.channels_last, progress=False)
            robust = res.robust_acc[attack.name]
            curve.append({"alpha": alpha, "val_clean_acc": res.clean_acc, "val_robust_acc": robust})
            ctx.log(f"rift: α={alpha:.2f}  val clean {res.clean_acc:.4f}  val pgd{cfg.eval.val_steps} {robust:.4f}")
        alpha = choose_alpha(curve, self.cfg.tolerance)
        model.load_state_dict(interpolate_state(ctx.source_state, finetuned, alpha))
        chosen = next(r for r in curve if r["alpha"] == alpha)
        self.record.update(alpha=alpha, tolerance=self.cfg.tolerance, alpha_curve=curve, val_at_alpha=chosen,
                           interpolated=changed, official_bn=self.cfg.official_bn,
                           rule="max val clean s.t. val robust >= robust(alpha=0) - tolerance")
        ctx.log(f"rift: α* = {alpha:.2f} (val clean {chosen['val_clean_acc']:.4f}, robust "
                f"{chosen['val_robust_acc']:.4f}; α=0: {curve[0]['val_clean_acc']:.4f} / "
                f"{curve[0]['val_robust_acc']:.4f})")
        if ctx.is_main:
            save_alpha_curve({"module": self.module, "alpha": alpha, "tolerance": self.cfg.tolerance,
                              "curve": curve, "interpolated": changed, "attack": f"pgd{cfg.eval.val_steps}",
                              "split": "val", "n": len(ctx.val)}, ctx.run_dir)
        return model

    def results(self) -> dict[str, Any]:
        """RiFT's record for results.json: the module (and its MRC summary), α*, the α-curve."""
        return {"rift": self.record}


register_method("rift", Rift)

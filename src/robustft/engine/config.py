"""Run configuration: nested dataclasses, loaded from YAML, overridden by ``key=value``, validated at load."""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._yaml import load_yaml, read_yaml
from ..attacks import ATTACK_NAMES, NORMS, check_budget
from ..data import DataSpec
from ..errors import UserError, shown, warn
from ..methods.base import method_config
from ..models.normalization import resolve_normalization
from ..schema import KeyInfo, describe, from_dict
from ..shortcuts import SHORTCUTS
from .optim import OptimConfig
from .tracking import TRACKERS, check_trackers

__all__ = ["RunConfig", "DataConfig", "ModelConfig", "AttackConfig", "EvalConfig", "TrainConfig",
           "load_config", "apply_overrides", "parse_overrides", "set_keys", "with_keys", "keyword_overrides", "to_dict",
           "from_dict", "describe_config"]


@dataclass
class DataConfig(DataSpec):
    """Downstream data: which dataset (``DataSpec``'s keys), how each split is subset, augmented and batched."""

    train_n: int | None = field(default=None, metadata={"help": "deterministic subset of the train split", "ge": 1})
    val_n: int | None = field(default=None, metadata={"help": "subset of the validation split used per epoch", "ge": 1})
    test_n: int | None = field(default=None, metadata={"help": "subset of the test split evaluated at the end",
                                                       "ge": 1})
    augment: Literal["crop_flip", "flip", "none", "random_resized_crop", "random_crop"] = field(
        default="crop_flip", metadata={
            "help": "training augmentation: random crop (zero-padded) + horizontal flip, flip only, or none; with "
                    "data.storage_size: random_resized_crop (crop_scale, crop_ratio) or random_crop of data.image_size "
                    "+ flip, flip (of the centre crop) or none (evaluation always sees the centre crop)"})
    crop_padding: int = field(default=4, metadata={"help": "zero padding of the random crop", "ge": 0})
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0], metadata={
        "help": "random_resized_crop: range of the crop's area as a fraction of the image's"})
    crop_ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3], metadata={
        "help": "random_resized_crop: range of the crop's aspect ratio (width / height)"})
    batch_size: int = field(default=128, metadata={"help": "training batch size (global, over all ranks)", "ge": 1})
    eval_batch_size: int = field(default=256, metadata={"help": "evaluation batch size", "ge": 1})

    def __post_init__(self) -> None:
        for key in ("crop_scale", "crop_ratio"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] or (key == "crop_scale" and lo_hi[1] > 1):
                raise UserError(f"data.{key} must be [low, high] with 0 < low <= high"
                                f"{' <= 1' if key == 'crop_scale' else ''}, got {lo_hi}")
        if self.storage_size is None and self.augment in ("random_resized_crop", "random_crop"):
            raise UserError(f"data.augment={self.augment} crops images kept at their aspect ratio: set "
                            f"data.storage_size (e.g. 256) and data.image_size (e.g. 224)")
        if self.storage_size is not None and self.augment == "crop_flip":
            raise UserError("data.augment=crop_flip pads and crops same-size images; with data.storage_size use "
                            "random_resized_crop or random_crop")
        super().__post_init__()


@dataclass
class ModelConfig:
    """Source model: architecture, checkpoint, input normalization, and what happens to its head."""

    arch: str = field(default="", metadata={
        "help": "architecture name, optionally with a weight tag (resnet50.madry_linf4_in1k; see robustft models)"})
    checkpoint: str | None = field(default=None, metadata={"help": "source weights (null: random init)"})
    normalization: str | None = field(default=None, metadata={
        "help": "input mean/std: none, cifar10, cifar100, imagenet or m1,m2,m3/s1,s2,s3 (null: the checkpoint's; for "
                "weights that carry none, the architecture's default, said in a warning and recorded in the card)"})
    head: Literal["auto", "new", "keep"] = field(default="auto", metadata={
        "help": "auto: a new head when the class counts differ; new: always a new head; keep: the source head"})
    options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "architecture options passed to its constructor, type-checked, e.g. {width: 4} or {final_bn: false} "
                "(evaluate / mrc: --model-arg KEY=VALUE)"})
    init_head: str | None = field(default=None, metadata={
        "help": "initialize the classifier from a checkpoint file, a finished run (RUN_DIR: its exported model) or "
                "one stage of it (RUN_DIR:STAGE, e.g. a RoLI run's probe RUN_DIR:lp)"})

    def __post_init__(self) -> None:
        if self.normalization is not None:
            try:
                resolve_normalization(self.normalization)
            except UserError as e:
                raise UserError(f"model.normalization: {e}") from None


@dataclass
class AttackConfig:
    """Training threat model (validation uses the same ε/norm)."""

    eps: float = field(default=8 / 255, metadata={
        "help": "budget in [0,1] pixel units: a number or a fraction (8/255), stored as the number", "ge": 0})
    norm: Literal[NORMS] = field(default="linf", metadata={"help": "norm of the perturbation budget"})
    steps: int = field(default=10, metadata={"help": "PGD steps during training", "ge": 1})
    step_size: float | None = field(default=None, metadata={
        "help": "PGD step, a number or a fraction (default max(2.5 eps/steps, eps/4))", "gt": 0})

    def __post_init__(self) -> None:
        try:
            check_budget(self.eps, self.norm)
        except UserError as e:
            raise UserError(f"attack.eps / attack.norm: {e}") from None


@dataclass
class EvalConfig:
    """Per-epoch validation, the selection rule, and the final test evaluation."""

    val_steps: int = field(default=10, metadata={"help": "PGD steps of the per-epoch validation attack", "ge": 1})
    select: Literal["auto", "robust_acc", "clean_acc", "sum", "last"] = field(default="auto", metadata={
        "help": "validation metric of the kept epoch; auto: clean_acc for clean objectives, robust_acc otherwise; "
                "sum: clean + robust; last: the final epoch, as the official TWINS code exports (validation is still "
                "measured and logged)"})
    test_steps: int = field(default=20, metadata={"help": "PGD steps at test time", "ge": 1})
    test_random_start: bool = field(default=True, metadata={
        "help": "the test PGD starts at a random point of the eps-ball (false: at the clean image, as the official "
                "TWINS and AutoLoRa tests)"})
    test_attacks: list[Literal[ATTACK_NAMES]] = field(default_factory=lambda: ["pgd"], metadata={
        "help": "attacks of the final test evaluation (each reported, and the worst case over them)"})
    autoattack_n: int | None = field(default=None, metadata={"help": "test subset for autoattack (class-balanced)",
                                                             "ge": 1})
    corruptions: list[str] = field(default_factory=list, metadata={
        "help": "common corruptions tested at the end: [all] or names (see robustft.eval.corruptions)"})
    corruption_severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5], metadata={
        "help": "corruption severities; the reported mean is over every corruption and severity",
        "ge": 1, "le": 5})
    corruption_n: int | None = field(default=None, metadata={
        "help": "evenly spaced test images corrupted (per severity with corruption_dir); default: the test split",
        "ge": 1})
    corruption_dir: str | None = field(default=None, metadata={
        "help": "published CIFAR-10-C-style directory (<name>.npy + labels.npy) instead of generated corruptions"})
    test_source: bool = field(default=False, metadata={
        "help": "also test the source model (before fine-tuning) with the same attacks/corruptions: before and "
                "after in one results.json (test_source)"})

    def __post_init__(self) -> None:
        if self.corruptions:
            from ..eval.corruption_eval import parse_corruptions, parse_severities

            if self.corruption_dir is None:
                parse_corruptions(self.corruptions)
            parse_severities(self.corruption_severities)


@dataclass
class TrainConfig:
    """Loop settings."""

    epochs: int = field(default=10, metadata={
        "help": "epochs of the main (last) stage; a multi-stage method names its other stages' keys", "ge": 1})
    seed: int = field(default=0, metadata={"help": "seed of init, shuffling, augmentation and attacks", "ge": 0,
                                           "le": 2**32 - 1})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    amp: Literal["auto", "off", "bf16", "fp16"] = field(default="auto", metadata={
        "help": "training autocast precision; auto: bf16 on CUDA and on CPUs with native bf16, else fp32"})
    channels_last: bool = field(default=True, metadata={"help": "channels_last memory format"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    out_dir: str = field(default="runs", metadata={"help": "parent of run directories"})
    name: str | None = field(default=None, metadata={"help": "run directory name (default: method-data-seed)"})
    log_every: int = field(default=50, metadata={"help": "iterations between loss checks (divergence guard)", "ge": 1})
    diagnostics: bool = field(default=False, metadata={
        "help": "log per-epoch conv weight norm, gradient norm and effective step lr*|g|/|w| (TWINS' argument)"})
    report_to: list[Literal[TRACKERS]] = field(default_factory=list, metadata={
        "help": "experiment trackers of per-step (train/loss, train/acc, lr) and per-epoch (val/clean, val/robust, "
                "...) scalars, resume-safe: tensorboard (<run>/tensorboard/; pip install robustft[tensorboard]), "
                "wandb (pip install robustft[wandb]; WANDB_MODE=offline needs no account)"})
    tensorboard: bool = field(default=False, metadata={"help": "deprecated: true adds tensorboard to report_to"})

    def __post_init__(self) -> None:
        name = self.name
        if name is not None and (name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name):
            raise UserError(f"train.name must be one directory name inside train.out_dir (no '/', '.' or '..'), got "
                            f"{shown(name)}; to write a run elsewhere, give --run-dir (or train.out_dir)")
        if self.tensorboard:  # the deprecated key, moved into report_to (saved configs hold only report_to)
            warn("train.tensorboard is deprecated: use train.report_to=[tensorboard]")
            self.report_to, self.tensorboard = [*self.report_to, "tensorboard"], False
        self.report_to = list(dict.fromkeys(self.report_to))
        check_trackers(self.report_to)  # a missing package is one line now, before any data is read or written


@dataclass
class RunConfig:
    """Everything one fine-tuning (or pre-training) run needs."""

    method: str = field(default="pgd_at", metadata={"help": "registered method name"})
    method_args: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "method options, checked against the method's config (robustft config --method NAME lists them)"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        method_config(self.method, self.method_args)  # unknown method, unknown or out-of-range option: fail at load
        if self.data.classes is not None and self.eval.corruption_dir is not None:
            raise UserError("eval.corruption_dir holds the published files' labels of every class, which data.classes "
                            "would mislabel; remove one of them")


def describe_config(method: str | None = None, section: str | None = None) -> list[KeyInfo]:
    """Every RunConfig key and, with ``method``, that method's options (``method_args.*``, its registered defaults);
    ``section`` keeps one section (``data``, ``method_args``, ...)."""
    rows = describe(RunConfig)
    if method is not None:
        rows += describe(method_config(method, {}), "method_args")
    if section is None:
        return rows
    sections = list(dict.fromkeys(r.section for r in rows))
    if section not in sections:
        hint = " (give --method for method_args)" if section == "method_args" else ""
        raise UserError(f"unknown config section {section!r}: choose from {', '.join(sections)}{hint}")
    return [r for r in rows if r.section == section]


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-ready) of a config."""
    return dataclasses.asdict(cfg)


def set_keys(data: dict[str, Any], values: dict[str, Any], source: str = "override") -> dict[str, Any]:
    """Set dotted keys (``{"optim.lr": 0.01}``) in a nested dict, creating sections; returns the updated dict."""
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"{source} {key!r}: {p!r} is not a section")
        node[leaf] = value
    return data


def with_keys(cfg: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """``cfg`` with dotted keys set to Python values (``{"optim.lr": 0.01}``), validated again."""
    return from_dict(RunConfig, set_keys(to_dict(cfg), dict(values)))


def keyword_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys from keyword arguments: a shortcut (``epochs=1``, the CLI's flags), a section given a mapping of its
    keys (``optim={"lr": 0.01}``, merged key by key) or a dotted key (``**{"optim.lr": 0.01}``); paths become str."""
    def plain(value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    sections = {f.name for f in dataclasses.fields(RunConfig) if f.name != "method"}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in sections and isinstance(value, Mapping):
            out.update({f"{key}.{k}": plain(v) for k, v in value.items()})
        else:
            out[SHORTCUTS.get(key, key)] = plain(value)
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``a.b=value`` strings (``--set``'s) as dotted keys with their values parsed as YAML (``null`` is None)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=") if isinstance(item, str) else ("", "", "")
        if not sep or not key:
            raise UserError(f"override {shown(item)} must look like section.key=value (e.g. optim.lr=0.01)")
        out[key] = load_yaml(raw, f"cannot parse the value of override {shown(item)}") if raw else None
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML) to a nested dict; returns the updated dict."""
    for item in overrides:  # one at a time: a later key may set inside an earlier one's value
        set_keys(data, parse_overrides([item]))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (optional; ``extends:`` lays it over another), apply ``overrides``, validate: a RunConfig."""
    data = _read_config_file(Path(path)) if path is not None else {}
    return from_dict(RunConfig, apply_overrides(data, overrides or []))


def _merged(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``data`` laid over it, mapping by mapping: other values replace, null removes the base's key."""
    out = dict(base)
    for key, value in data.items():
        if value is None and key in base:
            del out[key]
        else:
            out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_config_file(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping; ``extends: FILE`` (relative to the file) lays it over that file's, recursively."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise UserError(f"config file {path} extends itself through {' -> '.join(map(str, chain))}; remove the cycle")
    data = read_yaml(path, f"config file {path}") or {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise UserError(f"config file {path}: extends must be a file name (got {shown(base)})")
    return _merged(_read_config_file(path.parent / base, (*chain, path.resolve())), data)
